"""Model registry in the style of timm: ``@register_model`` factories + ``create_model``.

Checkpoints store the registered name and keyword arguments, so export and evaluation
rebuild the exact network with ``create_model(name, **kwargs)``.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable

import torch.nn as nn

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
# Modules whose import registers models; imported on first lookup.
_MODULES = (
    "models.toy",
    "models.seqfake",
    "models.seqfakeformer",
    "models.seqfakeformer_published",
    "models.sbi",
    "models.qmil",
    "models.gated_mil",
    "models.dcl",
    "models.classifier",
)


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register a factory function under its own name."""
    if fn.__name__ in _REGISTRY and _REGISTRY[fn.__name__] is not fn:
        raise ValueError(f"model {fn.__name__!r} registered twice")
    _REGISTRY[fn.__name__] = fn
    return fn


def _import_all() -> None:
    for mod in _MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name != mod:
                raise


def list_models() -> list[str]:
    """Names of all registered models."""
    _import_all()
    return sorted(_REGISTRY)


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model by name."""
    if name not in _REGISTRY:
        _import_all()
    if name not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(list_models())}")
    return _REGISTRY[name](**kwargs)
