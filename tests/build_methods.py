"""Two methods for the first-run tests, registered with ``REPLENS_METHODS``: ``slowline``
(the toy line model, each training step slowed down so a test can stop it mid-run) and
``brokenline`` (its data cannot be read: its build fails). Neither has a tab.

    REPLENS_METHODS=tests.build_methods:SLOW,tests.build_methods:BROKEN  (see methods/__init__)
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any

from methods.base import BuildRun
from tests import toy_method


def _slow_plugin(cfg: dict[str, Any]):
    method = toy_method.build_plugin(cfg)
    loss = method.loss

    def slow_loss(model, batch, device):
        time.sleep(0.25)
        return loss(model, batch, device)

    method.loss = slow_loss
    method.name = "slowline"
    return method


def _broken_plugin(cfg: dict[str, Any]):
    method = toy_method.build_plugin(cfg)

    def no_data():
        raise FileNotFoundError("brokenline: its data folder /nonexistent/line-data does not exist")

    method.train_dataset = no_data
    method.name = "brokenline"
    return method


SLOW = dataclasses.replace(
    toy_method.DESCRIPTOR, name="slowline", title="Slow line", tab=None,
    plugin=f"{__name__}:_slow_plugin", default_runs=(BuildRun("slowline", seconds=20),),
    smoke=("line.n=32", "train.epochs=20", "train.max_steps=40", "train.ckpt_every=2"))
BROKEN = dataclasses.replace(
    toy_method.DESCRIPTOR, name="brokenline", title="Broken line", tab=None,
    plugin=f"{__name__}:_broken_plugin", default_runs=(BuildRun("brokenline", seconds=5),))
