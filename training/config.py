"""YAML run configuration: the method's defaults, a user's file, ``--set`` overrides, checked.

:func:`resolve_config` is the one way to make a run config: the method's YAML
(``training/configs/<method>.yaml``, where every default is written once), a user's
``--config`` file deep-merged over it (so it may hold only what it changes), then
``key.sub=value`` overrides, validated against the method's typed schema
(:mod:`methods.schema`): unknown keys, missing keys and wrong types are refused with the key
in the message.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from methods import get_method
from methods.schema import ConfigError, load_yaml, validate

CONFIG_DIR = Path(__file__).parent / "configs"


def default_config_path(method: str) -> Path:
    """The default config of a method: its descriptor's ``config_file``, relative to
    ``training/configs/`` (or an absolute path, for methods that live elsewhere)."""
    return CONFIG_DIR / get_method(method).config_file


def validate_config(method: str, cfg: dict[str, Any]) -> dict[str, Any]:
    """``cfg`` checked against the method's schema; returns the converted copy.

    Raises:
        methods.schema.ConfigError (a ValueError) naming the offending key.
    """
    return validate(get_method(method).schema, cfg)


def resolve_config(method: str, config: str | Path | dict[str, Any] | None = None,
                   overrides: list[str] | None = None) -> dict[str, Any]:
    """The validated run config: defaults <- ``config`` (a file or a dict) <- overrides."""
    cfg = load_config(default_config_path(method))
    given: list[list[str]] = [k.strip().split(".") for k in
                              (o.split("=", 1)[0] for o in overrides or []) if k.strip()]
    if config is not None:
        user = config if isinstance(config, dict) else load_config(config)
        given += _leaf_keys(user)
        cfg = merge(cfg, user)
    return validate_config(method, pin_user_data(apply_overrides(cfg, overrides), given))


def _leaf_keys(tree: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[list[str]]:
    """The dotted paths (as lists) of every non-mapping value of a nested mapping."""
    out: list[list[str]] = []
    for key, value in tree.items():
        path = (*prefix, str(key))
        out += _leaf_keys(value, path) if isinstance(value, dict) else [list(path)]
    return out


def pin_user_data(cfg: dict[str, Any], given: list[list[str]]) -> dict[str, Any]:
    """Copy each value the user gave (``--set`` or ``--config``) over the ``user_data`` entry
    of the same name in its section, so a user's folder keeps it: ``--set
    model.backbone=resnet18`` means ResNet-18 on a folder too, even though it equals the YAML
    default that a folder's ``user_data`` replaces
    (:func:`training.data.sources.with_user_defaults`). Returns ``cfg``, changed in place."""
    for path in given:
        if "user_data" in path:
            continue
        node: Any = cfg
        for part in path[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and isinstance(node.get("user_data"), dict) \
                and path[-1] in node["user_data"]:
            node["user_data"][path[-1]] = copy.deepcopy(node[path[-1]])
    return cfg


def load_config(path: str | Path) -> dict[str, Any]:
    """Read a YAML config; a missing or malformed file raises a clear error."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"config {path} is a folder: name a YAML file (--config FILE)")
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    cfg = load_yaml(path.read_text(), f"config {path}")
    if not isinstance(cfg, dict):
        raise ValueError(f"config {path} must be a mapping at the top level (key: value "
                         f"lines), not {type(cfg).__name__}")
    return cfg


def apply_overrides(cfg: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """Return a copy of ``cfg`` with ``a.b=value`` overrides applied (values parsed as YAML)."""
    cfg = copy.deepcopy(cfg)
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"--set {item}: an override must look like key.sub=value "
                              f"(e.g. --set train.epochs=2)")
        key, raw = item.split("=", 1)
        node = cfg
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item}: {p} is not a section")
        try:
            node[parts[-1]] = load_yaml(raw, f"--set {item}")
        except ConfigError as exc:
            raise ConfigError(f"{exc} (write a list as [a, b] and quote text with :, [ or # "
                              f"in it: --set \"{key}='...'\")") from None
    return cfg


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``extra`` into a copy of ``base``."""
    out = copy.deepcopy(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out
