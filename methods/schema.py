"""Typed run configurations: dataclass schemas and a strict validator.

Every method declares its config as nested dataclasses (see ``methods/<name>.py``). The
method's YAML file (``training/configs/<name>.yaml``) holds every default, exactly once:
schema fields carry types and documentation but **no defaults**, so a value can only come
from the YAML, a user's ``--config`` file merged over it, or a ``--set`` override.

:func:`validate` checks a config dict against a schema with the schema's pydantic model
(:func:`_model`, made from the dataclasses): unknown keys are refused with the list of valid
ones and the closest match (a typo such as ``train.epohcs`` cannot pass silently), missing
keys are named, and values are checked and converted to the declared types
(``train.epochs=0.5`` or ``train.epochs=one`` are refused with the key in the message). Of
pydantic's errors the first in reading order is told, in one line. torch-free.
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
from typing import Annotated, Any, Literal, Mapping, Union

from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, Strict, ValidationError,
                      create_model)
from pydantic_core import PydanticCustomError


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


def _field_type(tp: Any, meta: Any) -> Any:
    """The pydantic type of a schema field's type ``tp``: sections become models, fixed
    tuples take YAML's lists, and the field's range (``min``/``max`` metadata) applies to
    its non-null values."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType):
        return Union[tuple(a if a is type(None) else _field_type(a, meta) for a in args)]
    if dataclasses.is_dataclass(tp):
        return _model(tp)
    if origin is tuple or tp is tuple:
        inner = tuple(_field_type(a, {}) for a in args) if args else (Any, ...)
        return Annotated[tuple[inner], Strict(False)]  # YAML gives a list
    if origin is list:
        return list[_field_type(args[0], {})] if args else list
    if origin is dict:
        return dict[args[0], _field_type(args[1], {})] if args else dict
    lo, hi = meta.get("min"), meta.get("max")
    constraints = [Field(ge=lo, le=hi)] if lo is not None or hi is not None else []
    if meta.get("path"):
        names = tuple(meta.get("names", ()))
        constraints.append(AfterValidator(functools.partial(_existing, names=names)))
    return Annotated[tp, *constraints] if constraints else tp


def _existing(value: Any, names: tuple[str, ...]) -> Any:
    """A path field's value: one of ``names`` or an existing path."""
    if value in names or Path(value).expanduser().exists():
        return value
    raise PydanticCustomError("path_missing", "does not exist")


@functools.cache
def _model(schema: type) -> type[BaseModel]:
    """The pydantic model of a dataclass ``schema``: strict types (``1`` is no ``true``,
    ``0.5`` no integer; an integer is a number), every key required, no other key."""
    hints = typing.get_type_hints(schema)
    fields = {f.name: (_field_type(hints[f.name], f.metadata), ...)
              for f in dataclasses.fields(schema)}
    return create_model(f"{schema.__name__}Model",
                        __config__=ConfigDict(extra="forbid", strict=True), **fields)


@dataclass
class _Place:
    """Where one of pydantic's errors lies in a schema (see :func:`_place`)."""
    key: str                  # dotted key ("train.epochs", "aug.crop_scale[1]")
    tp: Any                   # the type declared there
    section: type | None      # the dataclass holding the key
    ranks: list[int]          # field order / item index of each step, for reading order
    steps: int                # how many elements of the error's loc lead there
    union: bool               # stopped at a union: the error is the union's as a whole


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (Union, types.UnionType)


def _place(schema: type, loc: tuple[Any, ...]) -> _Place:
    """Where an error of pydantic's ``loc`` lies in ``schema``. The walk stops at a union
    (``int | None``, a section or null): as the value of a union is checked as a whole, an
    error inside it is the union's."""
    key, tp, section, ranks = "", schema, None, []
    for i, part in enumerate(loc):
        if dataclasses.is_dataclass(tp) and isinstance(part, str):
            names = [f.name for f in dataclasses.fields(tp)]
            if part not in names:  # an unknown key
                return _Place(_join(key, part), None, tp, ranks, i + 1, False)
            section, key = tp, _join(key, part)
            ranks.append(names.index(part))
            tp = typing.get_type_hints(tp)[part]
        elif isinstance(part, int):
            key, ranks = f"{key}[{part}]", ranks + [part]
            args = typing.get_args(tp)
            tp = (args[part] if typing.get_origin(tp) is tuple and part < len(args)
                  else args[0] if args else Any)
        elif typing.get_origin(tp) is dict:
            key, ranks = f"{key}.{part}", ranks + [0]
            tp = typing.get_args(tp)[1] if typing.get_args(tp) else Any
        else:
            return _Place(key, tp, section, ranks, i, False)
        if _is_union(tp):
            return _Place(key, tp, section, ranks, i + 1, True)
    return _Place(key, tp, section, ranks, len(loc), False)


def _message(schema: type, err: Mapping[str, Any], data: Any, prefix: str) -> str:
    """Today's one-line message for one of pydantic's errors."""
    loc = tuple(err["loc"])
    at = _place(schema, loc)
    key, tp, kind = _join(prefix, at.key), at.tp, err["type"]
    value = _dig(data, loc[:at.steps]) if at.steps < len(loc) or at.union else err["input"]
    where = key.rsplit(".", 1)[0] if "." in key else ""
    valid = ", ".join(sorted(f.name for f in dataclasses.fields(at.section or schema)))
    if kind in ("greater_than_equal", "less_than_equal") and at.steps == len(loc):
        meta = _metadata(at.section, key)
        bound = meta.get("min" if kind == "greater_than_equal" else "max",
                         err["ctx"]["ge" if kind == "greater_than_equal" else "le"])
        shown = float(value) if _base(tp) is float else value
        op = ">=" if kind == "greater_than_equal" else "<="
        return f"{key} must be {op} {bound}, got {shown!r}"
    if kind == "path_missing" and at.steps == len(loc):
        return f"{key}: {value} does not exist"
    if at.union and (at.steps < len(loc) or kind != "missing"):
        return f"{key} must be {_type_name(tp)}, got {value!r}"
    if kind == "extra_forbidden":
        name = key.rsplit(".", 1)[-1]
        close = difflib.get_close_matches(name, valid.split(", "), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return (f"unknown config key {key!r}{hint}; valid keys"
                f"{f' in {where}' if where else ''}: {valid}")
    if kind == "missing" and loc and isinstance(loc[-1], int):  # a tuple with too few items
        outer = _place(schema, loc[:-1])
        return (f"{_join(prefix, outer.key)} must have {len(typing.get_args(outer.tp))} items, "
                f"got {_dig(data, loc[:-1])!r}")
    if kind == "missing":
        return (f"config key {key!r} is missing (every key of the method's YAML must be "
                f"present; keys{f' in {where}' if where else ''}: {valid})")
    if kind in ("too_short", "too_long") and typing.get_origin(tp) is tuple:
        return f"{key} must have {len(typing.get_args(tp))} items, got {value!r}"
    if dataclasses.is_dataclass(tp):
        return f"{key} must be a section (a mapping), got {value!r}"
    return f"{key} must be {_type_name(tp)}, got {value!r}"


def _metadata(section: type | None, key: str) -> Mapping[str, Any]:
    """The metadata (``min``, ``max``, ...) of the field ``key`` of ``section``."""
    name = key.rsplit(".", 1)[-1]
    fields = {f.name: f for f in dataclasses.fields(section)} if section else {}
    return fields[name].metadata if name in fields else {}


def _base(tp: Any) -> Any:
    """``tp`` without ``None`` (``int | None`` -> ``int``)."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if _is_union(tp) and len(args) == 1:
        return args[0]
    return tp


def _first(schema: type, errors: list[Mapping[str, Any]], data: Any) -> Mapping[str, Any]:
    """The error a reader meets first: per section, an unknown key (in the data's order)
    before a missing key (in the schema's order) before the fields' own errors (in order)."""
    def order(err: Mapping[str, Any]) -> tuple[Any, ...]:
        loc = tuple(err["loc"])
        at = _place(schema, loc)
        inside = [(2, r) for r in at.ranks]
        if at.steps < len(loc) or (at.union and err["type"] != "missing") \
                or isinstance(loc[-1] if loc else None, int):
            return tuple(inside)
        if err["type"] == "extra_forbidden":
            parent = _dig(data, loc[:-1])
            keys = list(parent) if isinstance(parent, dict) else []
            return (*inside, (0, keys.index(loc[-1]) if loc[-1] in keys else 0))
        if err["type"] == "missing":
            return (*inside[:-1], (1, at.ranks[-1] if at.ranks else 0))
        return tuple(inside)
    return min(errors, key=order)


def _dig(data: Any, loc: tuple[Any, ...]) -> Any:
    """The value at pydantic's ``loc`` in ``data`` (None where there is none)."""
    for part in loc:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def _plain(value: Any) -> Any:
    """A validated value as plain data (tuples as lists, as YAML has them)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def validate(schema: type, data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``data`` checked against the dataclass ``schema`` (through its pydantic model);
    returns the converted dict.

    Raises:
        ConfigError: an unknown key (with the valid keys and the closest match), a missing
            key, or a value of the wrong type or out of range; the first of them in reading
            order, in one line that names the key.
    """
    try:
        model = _model(schema).model_validate(data)
    except ValidationError as exc:
        first = _first(schema, exc.errors(), data)
        raise ConfigError(_message(schema, first, data, prefix)) from None
    return _plain(model.model_dump())


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
