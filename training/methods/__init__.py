"""Method plug-ins for the training engine, looked up in the method registry.

A method's descriptor (:mod:`methods`) names its plug-in factory ``build(cfg) -> Method``
(see :class:`training.methods.base.Method`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from methods import get_method, resolve
from training.config import default_config_path, load_config, merge, validate_config
from training.methods.base import Method


def build_method(name: str, cfg: dict[str, Any]) -> Method:
    """Instantiate the plug-in of method ``name`` with its config, validated first."""
    return resolve(get_method(name).plugin)(validate_config(name, cfg))


def plugin_for_run(method: str, config: dict[str, Any], artifacts: str | Path) -> Method:
    """The plug-in of a finished run, rebuilt from its stored config (checkpoint or manifest
    entry) to read that run's data again (export, domain check, calibration, reports).

    The method's current defaults (its YAML) fill the keys the stored config lacks, so a
    run trained before a key existed (e.g. ``data.format``) still loads; every key the run
    stored keeps its value. ``run.artifacts`` points at ``artifacts``. Not validated: a run
    keeps the values it was trained with, even where today's schema is stricter.
    """
    cfg = merge(load_config(default_config_path(method)), config)
    cfg["run"] = {**cfg["run"], "artifacts": str(artifacts)}
    return resolve(get_method(method).plugin)(cfg)
