"""Method plug-ins for the training engine, looked up in the method registry.

A method's descriptor (:mod:`methods`) names its plug-in factory ``build(cfg) -> Method``
(see :class:`training.methods.base.Method`).
"""
from __future__ import annotations

from typing import Any

from training.methods.base import Method


def build_method(name: str, cfg: dict[str, Any]) -> Method:
    """Instantiate the plug-in of method ``name`` with its config, validated first."""
    from methods import get_method, resolve
    from training.config import validate_config

    return resolve(get_method(name).plugin)(validate_config(name, cfg))
