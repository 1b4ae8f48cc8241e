"""Typed run configurations: dataclass schemas and a strict validator.

Every method declares its config as nested dataclasses (see ``methods/<name>.py``). The
method's YAML file (``training/configs/<name>.yaml``) holds every default, exactly once:
schema fields carry types and documentation but **no defaults**, so a value can only come
from the YAML, a user's ``--config`` file merged over it, or a ``--set`` override.

:func:`validate` checks a config dict against a schema: unknown keys are refused with the
list of valid ones (a typo such as ``train.epohcs`` cannot pass silently), missing keys are
named, and values are checked and converted to the declared types (``train.epochs=0.5`` or
``train.epochs=one`` are refused with the key in the message). torch-free.
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
import re
import types
import typing
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Literal, Union


class ConfigError(ValueError):
    """A config that does not match its schema; the message names the key."""


# YAML 1.2's float syntax: ``1e-3`` and ``5E4`` are numbers (YAML 1.1, PyYAML's default,
# reads them as strings because they lack a dot).
_FLOAT_12 = re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$"
                       r"|^[-+]?\.(inf|Inf|INF)$|^\.(nan|NaN|NAN)$")


@functools.cache
def _loader() -> type:
    """A safe YAML loader that also reads YAML 1.2 floats such as ``1e-3`` as numbers."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.yaml_implicit_resolvers = {k: list(v) for k, v in
                                      yaml.SafeLoader.yaml_implicit_resolvers.items()}
    Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_12,
                                 list("-+0123456789."))
    return Loader


def load_yaml(text: str, source: str) -> Any:
    """``text`` parsed as YAML (``1e-3`` is a number); ``source`` names it in the error.

    Raises:
        ConfigError: a syntax error, with its line and column in ``source``
            ("config run.yaml: not valid YAML at line 3, column 7: ...").
    """
    import yaml

    try:
        return yaml.load(text, Loader=_loader())  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML{_where(exc)}: {_problem(exc)}") from None


def _where(exc: Any) -> str:
    """`` at line L, column C`` of a YAML error (1-based), or ""."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    return f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""


def _problem(exc: Any) -> str:
    """A YAML error's cause in words, without the quoted source that PyYAML appends."""
    parts = [getattr(exc, "context", None), getattr(exc, "problem", None)]
    text = ", ".join(p for p in parts if p) or str(exc).splitlines()[0]
    return " ".join(text.split())


def positive(**meta: Any) -> Any:
    """A field whose value must be >= 1 (counts: epochs, batch sizes)."""
    return field(metadata={"min": 1, **meta})


def non_negative(**meta: Any) -> Any:
    """A field whose value must be >= 0."""
    return field(metadata={"min": 0, **meta})


def probability(**meta: Any) -> Any:
    """A field whose value must lie in [0, 1]."""
    return field(metadata={"min": 0, "max": 1, **meta})


def existing_path(**meta: Any) -> Any:
    """A path that must exist when it is set (null: the method's built-in default); the
    words in ``names`` (metadata) are allowed as they are."""
    return field(metadata={"path": True, **meta})


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if origin in (list, tuple):
        return "a list"
    if origin is dict or tp is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a section"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false",
            Any: "any value"}.get(tp, getattr(tp, "__name__", str(tp)))


def _convert(value: Any, tp: Any, key: str) -> Any:
    """``value`` checked against and converted to ``tp``; ConfigError names ``key``."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(value, a, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{key} must be {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"{key} must be {_type_name(tp)}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a section (a mapping), got {value!r}")
        return validate(tp, value, key)
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{key} must have {len(args)} items, got {value!r}")
            return [_convert(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args))]
        inner = args[0] if args else Any
        return [_convert(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping, got {value!r}")
        args = typing.get_args(tp)
        inner = args[1] if args else Any
        return {k: _convert(v, inner, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {value!r}")
        return value
    raise TypeError(f"schema type {tp!r} of {key} is not supported")


def validate(schema: type, data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``data`` checked against the dataclass ``schema``; returns the converted dict.

    Raises:
        ConfigError: an unknown key (with the valid keys and the closest match), a missing
            key, or a value of the wrong type or out of range.
    """
    hints = typing.get_type_hints(schema)
    fields = {f.name: f for f in dataclasses.fields(schema)}
    where = f" in {prefix}" if prefix else ""
    unknown = [k for k in data if k not in fields]
    if unknown:
        k = unknown[0]
        close = difflib.get_close_matches(str(k), list(fields), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"unknown config key {_join(prefix, k)!r}{hint}; valid keys{where}: "
                          + ", ".join(sorted(fields)))
    missing = [k for k in fields if k not in data]
    if missing:
        raise ConfigError(f"config key {_join(prefix, missing[0])!r} is missing (every key of "
                          f"the method's YAML must be present; keys{where}: "
                          + ", ".join(sorted(fields)) + ")")
    out: dict[str, Any] = {}
    for name, f in fields.items():
        key = _join(prefix, name)
        value = _convert(data[name], hints[name], key)
        lo, hi = f.metadata.get("min"), f.metadata.get("max")
        if lo is not None and value is not None and value < lo:
            raise ConfigError(f"{key} must be >= {lo}, got {value!r}")
        if hi is not None and value is not None and value > hi:
            raise ConfigError(f"{key} must be <= {hi}, got {value!r}")
        if f.metadata.get("path") and value is not None and value not in \
                f.metadata.get("names", ()) and not Path(value).expanduser().exists():
            raise ConfigError(f"{key}: {value} does not exist")
        out[name] = value
    return out


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else str(key)


def keys_with_defaults(schema: type, prefix: str = "") -> list[str]:
    """Schema fields that define a default in code (the test asserts there are none)."""
    found = []
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        key = _join(prefix, f.name)
        if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING:
            found.append(key)
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            found += keys_with_defaults(tp, key)
    return found


# --- sections shared by every method -------------------------------------------------------
@dataclass
class RunConfig:
    """``run``: name (folder under ``<artifacts>/runs``), seed, device ("auto", "cpu",
    "cuda", "cuda:1"), and ``artifacts`` (set from ``--artifacts``; null = default)."""
    name: str
    seed: int
    device: str
    artifacts: str | None


@dataclass
class TrainConfig:
    """``train``: the engine's loop (see :mod:`training.engine`)."""
    epochs: int = positive()
    max_steps: int | None = positive()        # stop after this many optimiser steps
    batch_size: int = positive()              # global batch (split over DDP processes)
    shuffle: bool
    log_every: int = positive()
    ckpt_every: int = non_negative()          # 0: checkpoint at epoch ends only
    eval_every: int = non_negative()          # epochs between evaluations; 0: at the end only
    num_workers: int = non_negative()         # DataLoader workers (0: in the training process)
    grad_clip: float | None
    threads: int | None = positive()          # torch threads (null: torch's default)
    pin_memory: bool                          # page-locked batches (CUDA only)
    amp: Literal["fp32", "auto", "native", "bf16", "fp16"]  # autocast (training/precision.py)
    channels_last: bool                       # NHWC weights and image inputs
    accum_steps: int = positive()             # micro-batches per optimiser step


@dataclass
class OptimConfig:
    """``optim``: optimiser and learning-rate schedule."""
    name: Literal["sgd", "adam", "adamw"]
    lr: float
    weight_decay: float
    momentum: float                           # sgd only
    nesterov: bool                            # sgd only
    schedule: Literal["none", "cosine"]
    warmup_steps: int = non_negative()


@dataclass
class PretrainedConfig:
    """``pretrained``: start a submodule from a local weights file (a state dict, a timm
    checkpoint, a RepLens checkpoint or .safetensors; see :mod:`training.pretrained`), from
    the ImageNet weights a package ships (``imagenet``, :mod:`training.imagenet`), or from
    scratch (``none``)."""
    weights: str | None = existing_path(names=("imagenet", "none"))  # null: the method's default
    module: str                               # dotted submodule name; "" = the whole model


@dataclass
class BudgetConfig:
    """``budget``: the training budget of a user's folder (:mod:`training.budget`)."""
    enabled: bool
    batch_size: int = positive()
    epochs: int = positive()                  # passes over the training items wanted
    min_steps: int = positive()               # floor: steps a small folder gets at least
    max_seconds: float = positive()           # ceiling: estimated training seconds here
    lr: float
    warmup_steps: int = non_negative()


@dataclass
class EngineConfig:
    """The sections every method's config starts with; a method's schema subclasses it and
    adds its own sections."""
    run: RunConfig
    train: TrainConfig
    optim: OptimConfig
    pretrained: PretrainedConfig
