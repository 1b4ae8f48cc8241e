"""Method plug-ins for the training engine, by name.

A method module defines ``build(cfg) -> Method`` (see :class:`training.methods.base.Method`).
"""
from __future__ import annotations

import importlib

from training.methods.base import Method

METHODS: dict[str, str] = {
    "seqfake": "training.methods.seqfake",
    "qmil": "training.methods.qmil",
    "dcl": "training.methods.dcl",
    "abcnorm": "training.methods.abcnorm",
    "toy": "training.methods.toy",
}
DESCRIPTIONS: dict[str, str] = {
    "seqfake": "sequential deepfake detection (Chapter 5)",
    "qmil": "query-based multiple instance learning (Chapter 2)",
    "dcl": "decoupled contrastive learning pre-training (Chapter 3)",
    "abcnorm": "long-tailed classification with ABC-Norm and baselines (Chapter 4)",
    "toy": "tiny regression used by the engine's tests",
}


def build_method(name: str, cfg: dict) -> Method:
    """Instantiate the method plug-in ``name`` with its config."""
    if name not in METHODS:
        raise KeyError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
    return importlib.import_module(METHODS[name]).build(cfg)
