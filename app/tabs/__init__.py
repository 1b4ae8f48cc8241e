"""One module per tab, named by its method's descriptor (``MethodDescriptor.tab``).

A tab module defines ``TITLE``, ``build(ctx)`` (its Gradio components and events, inside
the app's Blocks; gradio is imported there, so the CLI does not pay for it),
``add_cli(subparsers)`` / ``run_cli(args, engine)`` (its ``python -m app.cli`` commands)
and ``load_requests(lc)`` (what the load test and the soak send: :mod:`app.loadmix`).
"""
from __future__ import annotations

import importlib
from types import ModuleType

from methods import MethodDescriptor, all_methods


def tabs() -> list[tuple[MethodDescriptor, ModuleType]]:
    """(descriptor, tab module) of every registered method that has a tab, in order."""
    return [(d, importlib.import_module(d.tab)) for d in all_methods() if d.tab]
