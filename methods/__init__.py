"""The method registry: one line per method, each described once in ``methods/<name>/``.

``export/``, ``app/`` and the training CLI iterate over :func:`all_methods`; adding a
method (or a variant) touches its own folder and, for a method, one line of ``_BUILTIN``.
Import-light: descriptors need neither torch nor gradio.

>>> from methods import get_method
>>> get_method("qmil").config_file
'qmil.yaml'
"""
from __future__ import annotations

import importlib
import os

from methods.base import BuildRun, ExportIO, MethodDescriptor, Variant, resolve

__all__ = ["BuildRun", "ExportIO", "MethodDescriptor", "Variant", "all_methods", "get_method",
           "register", "resolve", "SMOKE_COMMON", "served_runs"]

_BUILTIN = (
    "methods.seqfake",
    "methods.qmil",
    "methods.dcl",
    "methods.abcnorm",
    "methods.toy",
)
_REGISTRY: dict[str, MethodDescriptor] = {}
# Tiny budgets shared by every method's smoke build (pipeline checks, not useful models).
SMOKE_COMMON = ("train.epochs=1", "train.max_steps=3", "train.log_every=1")


def register(desc: MethodDescriptor) -> MethodDescriptor:
    """Add a descriptor (the built-in ones register on first lookup)."""
    if desc.name in _REGISTRY and _REGISTRY[desc.name] is not desc:
        raise ValueError(f"method {desc.name!r} registered twice")
    _REGISTRY[desc.name] = desc
    return desc


def unregister(name: str) -> None:
    """Remove a method (tests that register a temporary one)."""
    _REGISTRY.pop(name, None)


def _load_builtin() -> None:
    """Register the built-in methods and those named in ``$REPLENS_METHODS`` (comma-separated
    modules with a ``DESCRIPTOR``, or ``module:NAME`` for another attribute: a method of your
    own, without editing this file)."""
    extra = [m.strip() for m in os.environ.get("REPLENS_METHODS", "").split(",") if m.strip()]
    for spec in (*_BUILTIN, *extra):
        mod, _, attr = spec.partition(":")
        desc = getattr(importlib.import_module(mod), attr or "DESCRIPTOR")
        _REGISTRY.setdefault(desc.name, desc)


def all_methods() -> list[MethodDescriptor]:
    """Every registered method, in registry order."""
    _load_builtin()
    return list(_REGISTRY.values())


def get_method(name: str) -> MethodDescriptor:
    """The descriptor of ``name``; KeyError lists the registered methods."""
    _load_builtin()
    if name not in _REGISTRY:
        raise KeyError(f"unknown method {name!r}; choose from {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def served_runs() -> list[tuple[MethodDescriptor, BuildRun]]:
    """The default runs the app builds and serves, in registry order."""
    return [(d, r) for d in all_methods() for r in d.default_runs]
