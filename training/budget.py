"""A training budget sized to a user's folder (section ``budget`` of a method's YAML).

For a user's images (the method's :meth:`~training.methods.base.Method.default_pretrained`
or ``user_data`` says so), the values of ``train.batch_size``, ``train.epochs``,
``train.max_steps``, ``optim.lr``, ``optim.warmup_steps`` and ``train.channels_last`` that
are still at their YAML defaults are replaced by a plan (channels-last convolutions): the batch and learning rate of ``budget``, then
``budget.epochs`` passes over the training items (images, or bags for qMIL), at least
``budget.min_steps`` steps (the floor that lets a small folder learn; it wins over the
ceiling) and at most what fits in ``budget.max_seconds`` at the step time measured here on
this machine (the median of a few forward/backward passes of a throw-away copy of the
network after a warm-up one, so one slow step of a busy machine does not size the run;
random numbers untouched). A
value set with ``--set`` or ``--config`` is kept. The plan is printed before training
(:func:`describe`) and recorded in ``summary.json`` (``plan``); ``--resume`` reuses the
plan stored in the checkpoint's config.
"""
from __future__ import annotations

import math
import os
import random
import time
from typing import Any

import numpy as np
import torch

KEYS = (("train", "batch_size"), ("train", "epochs"), ("train", "max_steps"),
        ("optim", "lr"), ("optim", "warmup_steps"), ("train", "channels_last"))
# the smallest batch a plan gives: a contrastive loss needs a negative and batch norm two
# values per channel, so a folder with fewer items is refused as smaller than one batch
MIN_BATCH = 2


def busy_threads(train: dict[str, Any], load: float | None = None,
                 cores: int | None = None) -> str | None:
    """One torch thread when this machine is busier than its cores (the 1-minute load
    average ``load`` at least ``cores``) and ``train.threads`` is not set: threads of one
    step then wait on each other (measured on a 2-core machine under a load of 18: a
    MobileNetV2 step at 96 px took 5 s on one thread, 14-38 s on two). Returns what was
    done, in words, or None when the thread count is left alone."""
    cores = cores or os.cpu_count() or 1
    load = os.getloadavg()[0] if load is None else load
    if train.get("threads") or cores < 2 or load < cores:
        return None
    torch.set_num_threads(1)
    return f"1 thread: load average {load:.1f} >= {cores} cores"


def step_seconds(method: Any, dataset: Any, batch_size: int, device: torch.device,
                 amp: torch.dtype | None = None, repeats: int = 3,
                 channels_last: bool = True) -> float:
    """Seconds of one training step (forward + backward, under autocast ``amp`` and in the
    channels-last layout the plan trains in, :func:`apply`) at ``batch_size``: the median of
    ``repeats`` steps after a warm-up one, measured on a fresh copy of the method's network
    with every random state restored afterwards."""
    from training.precision import TrainForward

    py, npy = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        model = method.build_model().to(device).train()
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        fwd = TrainForward(model, model, device, amp, channels_last)
        collate = method.collate_fn() or torch.utils.data.default_collate
        n = min(batch_size, len(dataset))
        batch = collate([dataset[i] for i in range(n)])
        times = []
        for _ in range(repeats + 1):
            t0 = time.perf_counter()
            loss, _ = method.loss(fwd, batch, device)
            loss.float().backward()
            times.append(time.perf_counter() - t0)
        del model
    random.setstate(py)
    np.random.set_state(npy)
    per_item = float(np.median(times[1:])) / max(1, n)
    return per_item * batch_size * 1.15  # the optimiser step and the data on top


def plan(budget: dict[str, Any], n_items: int, step_s: float) -> dict[str, Any]:
    """Batch, steps and epochs for ``n_items`` training items at ``step_s`` seconds a step."""
    batch = max(MIN_BATCH, min(int(budget["batch_size"]), n_items))
    per_epoch = max(1, n_items // batch)
    wanted = int(budget["epochs"]) * per_epoch
    floor = int(budget["min_steps"])
    ceiling = max(1, int(float(budget["max_seconds"]) / max(step_s, 1e-6)))
    steps = max(floor, min(wanted, ceiling))
    return {"items": n_items, "batch_size": batch, "steps_per_epoch": per_epoch,
            "steps": steps, "epochs": math.ceil(steps / per_epoch),
            "step_seconds": round(step_s, 3), "estimated_seconds": round(steps * step_s),
            "limited_by": "step floor" if steps == floor and floor > min(wanted, ceiling)
            else "time ceiling" if steps == ceiling and ceiling < wanted else "epochs",
            "lr": float(budget["lr"]), "warmup_steps": int(budget["warmup_steps"]),
            # channels-last convolutions: a MobileNetV2 step at 96 px on one CPU thread took
            # 2.6-3.5 s instead of 7.6 s in the default layout
            "channels_last": True}


def at_default(cfg: dict[str, Any], defaults: dict[str, Any], section: str, key: str) -> bool:
    """True when ``cfg[section][key]`` still holds the YAML default (not set by the user)."""
    return cfg[section][key] == defaults.get(section, {}).get(key)


def apply(cfg: dict[str, Any], defaults: dict[str, Any], p: dict[str, Any]) -> list[str]:
    """Write the plan into ``cfg`` where the user left the default; returns the keys set."""
    values = {("train", "batch_size"): p["batch_size"], ("train", "epochs"): p["epochs"],
              ("train", "max_steps"): p["steps"], ("optim", "lr"): p["lr"],
              ("optim", "warmup_steps"): p["warmup_steps"],
              ("train", "channels_last"): p["channels_last"]}
    if not (at_default(cfg, defaults, "train", "epochs")
            and at_default(cfg, defaults, "train", "batch_size")):
        values.pop(("train", "max_steps"))  # the user's epochs or batch decide the steps
    changed = []
    for (section, key), value in values.items():
        if key in cfg[section] and at_default(cfg, defaults, section, key):
            cfg[section][key] = value
            changed.append(f"{section}.{key}")
    return changed


def describe(p: dict[str, Any], start: str, size: Any, cfg: dict[str, Any]) -> str:
    """The plan line printed before training."""
    t = cfg["train"]
    mins = p["estimated_seconds"] / 60
    busy = p.get("threads_reason")
    return (f"[plan] {p['items']} training items; start: {start}; input {size}; "
            f"{t['max_steps'] or t['epochs'] * p['steps_per_epoch']} steps of batch "
            f"{t['batch_size']} ({t['epochs']} epoch(s)), lr {cfg['optim']['lr']:g}; about "
            f"{mins:.1f} min at {p['step_seconds']:.2f} s/step measured here "
            f"({p['limited_by']}){'; ' + busy if busy else ''}; change with --set "
            f"train.max_steps=N, train.epochs=N, "
            f"train.batch_size=N, optim.lr=X, train.threads=N or budget.enabled=false")
