"""The one training engine shared by the four methods.

Seeding, device selection, DDP (torchrun), tqdm progress, metrics to ``metrics.jsonl`` and
``summary.json``, atomic checkpoints with config and git commit, and exact resumption.

Run folder: ``<artifacts>/runs/<run.name>/`` with ``checkpoint.pt`` (latest state,
written every ``train.ckpt_every`` steps and at each epoch end), ``metrics.jsonl``,
``summary.json``, ``config.yaml`` and ``progress.json`` (:mod:`training.progress`: phase,
epoch, step, measured step time and time left, for the app's build queue).

After each evaluation the method's headline held-out metric is compared with chance
(:mod:`training.verdict`); ``summary.json`` and the checkpoint record it (``learned``) and
``at_chance`` marks a model not clearly above chance.

Stopping: SIGINT (Ctrl-C) or SIGTERM during training saves a resumable checkpoint after the
current step and ends the run as interrupted (exit status 130 from ``python -m training``);
``--resume`` continues it exactly. A second signal stops at once. ``--resume`` of a run
without a checkpoint is refused, naming the runs that have one.

One writer per run: the main process holds ``<run>/lock`` while it trains
(:func:`runtime.artifacts.hold_run_lock`; ``python -m export`` takes it too), so a second
training or an export of the run is refused with the holder named.

Exact resume: the batch order is a function of (seed, epoch) (see
:mod:`training.sampler`), the DataLoader gets its own generator, and the checkpoint holds
the model, optimiser, scheduler (and gradient scaler), RNG states and the position (epoch,
batch). With ``num_workers: 0`` (the default here) a resumed run is identical to an
uninterrupted one; with workers too, as items are seeded per index (:mod:`training.loader`).

Real-scale options (section ``train``; all off or neutral in the CPU defaults):
``amp`` (autocast dtype, :mod:`training.precision`), ``channels_last``, ``accum_steps``
(gradient accumulation: ``batch_size`` stays the batch of one optimiser step, split into
``accum_steps`` micro-batches per process; with batch norm, statistics are per
micro-batch, and a contrastive loss sees only the micro-batch's negatives),
``num_workers`` and ``pin_memory`` (:mod:`training.loader`). Section ``pretrained`` starts
a submodule from a local weights file (:mod:`training.pretrained`), from ImageNet weights
that a package ships (``imagenet``, :mod:`training.imagenet`; ``null``: the method's
default, ImageNet for a user's folder) or from scratch (``none``).
"""
from __future__ import annotations

import contextlib
import json
import math
import random
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import yaml
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm.auto import tqdm

from runtime.artifacts import artifacts_dir, atomic_path, hold_run_lock, write_json_atomic
from training import distributed as dist_utils
from training.checkpoint import (git_commit, load_checkpoint, rng_state, save_checkpoint,
                                 set_rng_state)
from training.config import default_config_path, load_config, validate_config
from training.loader import train_loader
from training.methods.base import Method
from training.imagenet import load_imagenet
from training.precision import TrainForward, autocast_dtype, make_scaler
from training.pretrained import load_pretrained
from training.progress import Progress
from training.sampler import ResumableSampler
from training.verdict import verdict

CHECKPOINT_NAME = "checkpoint.pt"


def _numbers(metrics: dict[str, Any]) -> dict[str, float]:
    """The scalar metrics of an evaluation, rounded (for progress.json)."""
    return {k: round(float(v), 4) for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _mean_logs(micro: list[tuple[torch.Tensor, dict[str, Any]]]
               ) -> tuple[torch.Tensor, dict[str, Any]]:
    """The mean loss and the mean of each numeric log over a step's micro-batches."""
    loss = torch.stack([m[0].float() for m in micro]).mean()
    logs: dict[str, Any] = dict(micro[-1][1])
    for k, v in logs.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            logs[k] = float(np.mean([m[1].get(k, v) for m in micro]))
    return loss, logs


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def select_device(name: str = "auto") -> torch.device:
    """"auto" -> CUDA when present (per local rank under DDP), else CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            _, local_rank, _ = dist_utils.env_world()
            return torch.device("cuda", local_rank)
        return torch.device("cpu")
    return torch.device(name)


def build_optimizer(params: list[nn.Parameter], cfg: dict[str, Any]) -> torch.optim.Optimizer:
    name = cfg["name"].lower()
    lr, wd = float(cfg["lr"]), float(cfg["weight_decay"])
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=wd,
                               momentum=float(cfg["momentum"]),
                               nesterov=bool(cfg["nesterov"]))
    raise ValueError(f"unknown optimizer {name!r} (adam, adamw, sgd)")


def build_scheduler(opt: torch.optim.Optimizer, cfg: dict[str, Any], total_steps: int
                    ) -> torch.optim.lr_scheduler.LambdaLR:
    kind = cfg["schedule"]
    warmup = int(cfg["warmup_steps"])

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if kind == "cosine":
            t = (step - warmup) / max(1, total_steps - warmup)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, t)))
        if kind == "none":
            return 1.0
        raise ValueError(f"unknown schedule {kind!r} (none, cosine)")

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


@dataclass
class _Run:
    """The state of one :meth:`Trainer.fit`: what :meth:`Trainer._build` makes once, the
    loop settings, and the position that :meth:`Trainer._restore` and
    :meth:`Trainer._train_epoch` advance."""

    model: nn.Module
    train_model: nn.Module          # ``model``, wrapped in DDP under torchrun
    params: list[nn.Parameter]
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    dataset: Any
    sampler: ResumableSampler
    epochs: int
    steps_per_epoch: int
    total_steps: int
    ckpt_every: int
    log_every: int
    grad_clip: Any
    eval_every: int
    accum_steps: int = 1            # micro-batches per optimiser step
    amp_dtype: torch.dtype | None = None
    scaler: torch.amp.GradScaler | None = None
    channels_last: bool = False
    start_epoch: int = 0
    start_batch: int = 0
    step: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)
    done: bool = False


class Trainer:
    """Train a :class:`Method` from a config.

    Args:
        method_name: the registered method name (stored in the checkpoint).
        method: the method plug-in.
        cfg: the whole run config (sections ``run``, ``train``, ``optim`` + the method's own).
        artifacts: artifacts folder override (``--artifacts``).
        progress: show tqdm bars (main process only).
    """

    def __init__(self, method_name: str, method: Method, cfg: dict[str, Any],
                 artifacts: str | Path | None = None, progress: bool = True) -> None:
        cfg = validate_config(method_name, cfg)  # the schema: every key present and typed
        self.method_name, self.method, self.cfg = method_name, method, cfg
        run, self.train_cfg, self.optim_cfg = cfg["run"], cfg["train"], cfg["optim"]
        self.seed = run["seed"]
        self.run_dir = artifacts_dir(artifacts) / "runs" / run["name"]
        self.ckpt_path = self.run_dir / CHECKPOINT_NAME
        self.device = select_device(run["device"])
        self.progress = progress
        self._stop_signal: int | None = None
        self._scaler: torch.amp.GradScaler | None = None
        self._precision = "float32"  # the training forward's dtype (train.amp resolved)
        self._learned: dict[str, Any] | None = None  # the last evaluation against chance
        self._pretrained = "none (random initialisation)"  # the starting weights, in words
        self._plan: dict[str, Any] | None = None  # training.budget's plan for a user's folder
        self.tracker = Progress(self.run_dir, enabled=dist_utils.is_main())
        if self.train_cfg["threads"]:
            torch.set_num_threads(self.train_cfg["threads"])

    # ------------------------------------------------------------------------------------
    def _log(self, record: dict[str, Any]) -> None:
        if not dist_utils.is_main():
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.run_dir / "metrics.jsonl", "a") as fh:
            fh.write(json.dumps(record) + "\n")

    def _payload(self, model: nn.Module, opt, sched, epoch: int, batch: int, step: int,
                 metrics: dict[str, float], finished: bool) -> dict[str, Any]:
        return {
            "method": self.method_name,
            "model_spec": self.method.model_spec(),
            "model": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "scaler": self._scaler.state_dict() if self._scaler is not None else None,
            "epoch": epoch, "batch": batch, "global_step": step,
            "rng": rng_state(),
            "config": self.cfg,
            "git_commit": git_commit(),
            "metrics": metrics,
            "learned": self._learned,  # training.verdict: the held-out metric against chance
            "pretrained": self._pretrained,  # the starting weights, in words
            "plan": self._plan,  # training.budget's plan (a user's folder)
            "extra": self.method.extra_state(),
            "finished": finished,
            "torch_version": str(torch.__version__),
        }

    def _save(self, *args: Any, **kwargs: Any) -> None:
        if dist_utils.is_main():
            save_checkpoint(self.ckpt_path, self._payload(*args, **kwargs))
        if dist_utils.is_distributed():
            torch.distributed.barrier()

    # ------------------------------------------------------------------------------------
    def fit(self, resume: bool = False, stop_after_steps: int | None = None) -> dict[str, Any]:
        """Train; return the summary. ``stop_after_steps`` saves and stops early (resumable).

        Builds the run (:meth:`_build`), restores it from the checkpoint with ``resume``
        (:meth:`_restore`), then per epoch trains (:meth:`_train_epoch`), evaluates on the
        main process (:meth:`_evaluate`) and saves the checkpoint; ``summary.json`` last.
        """
        if resume:
            self._check_resumable()
        # one writer per run: the main process holds the run's lock while it trains
        lock = hold_run_lock(self.run_dir) if dist_utils.env_world()[0] == 0 else None
        restore = self._catch_stop_signals()
        try:
            return self._fit(resume, stop_after_steps)
        finally:
            restore()
            if lock is not None:
                lock.close()

    def _check_resumable(self) -> None:
        """Refuse ``--resume`` of a run that has no checkpoint, naming the runs that have one.

        Raises:
            FileNotFoundError: ``checkpoint.pt`` of this run does not exist.
        """
        if self.ckpt_path.is_file():
            return
        root = self.run_dir.parent
        runs = sorted(p.parent.name for p in root.glob(f"*/{CHECKPOINT_NAME}"))
        have = (f"the runs in {root}: {', '.join(runs)} (resume one with --set run.name=NAME)"
                if runs else f"{root} holds no run yet")
        raise FileNotFoundError(
            f"--resume: run {self.run_dir.name!r} does not exist (no {self.ckpt_path}); "
            f"{have}; or drop --resume to start {self.run_dir.name!r} afresh")

    def _catch_stop_signals(self):
        """SIGINT/SIGTERM: stop after the current step with a resumable checkpoint (a
        second signal: at once). Returns the function that restores the old handlers."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None

        def on_signal(signum: int, frame: Any) -> None:
            if self._stop_signal is not None or self.tracker.state["phase"] == "preparing":
                raise KeyboardInterrupt  # a second signal, or nothing to save yet
            self._stop_signal = signum
            if dist_utils.is_main():
                print(f"\n[train] {signal.Signals(signum).name}: stopping after this step with a "
                      f"resumable checkpoint (again: stop at once)", flush=True)

        old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        return lambda: [signal.signal(s, h) for s, h in old.items()]

    def _fit(self, resume: bool, stop_after_steps: int | None) -> dict[str, Any]:
        ddp = dist_utils.init_distributed(self.device)
        self.tracker.update(force=True, phase="preparing")
        self._apply_budget(resume)
        run = self._build()
        if resume and self.ckpt_path.exists():
            if self._restore(run):
                self.tracker.update(force=True, phase="finished", step=run.step,
                                    total_steps=run.total_steps, epochs=run.epochs,
                                    epoch=run.epochs, last=run.metrics)
                return self._summary(run.metrics, run.step, 0.0)
        elif dist_utils.is_main() and self.ckpt_path.exists():
            print(f"[train] overwriting previous run in {self.run_dir} (use --resume to continue)")
            (self.run_dir / "metrics.jsonl").unlink(missing_ok=True)

        if dist_utils.is_main():
            self.run_dir.mkdir(parents=True, exist_ok=True)
            with atomic_path(self.run_dir / "config.yaml") as tmp:
                tmp.write_text(yaml.safe_dump(self.cfg, sort_keys=False))

        run.train_model = run.model
        if ddp:
            run.train_model = DDP(run.model, device_ids=[self.device.index]
                                  if self.device.type == "cuda" else None)
        if run.amp_dtype is not None or run.channels_last:
            run.train_model = TrainForward(run.train_model, run.model, self.device,
                                           run.amp_dtype, run.channels_last)
        t0 = time.time()
        run.done = run.step >= run.total_steps
        for epoch in range(run.start_epoch, run.epochs):
            if run.done:
                break
            if self._stop_signal is not None or not self._train_epoch(run, epoch, stop_after_steps):
                self.tracker.update(force=True, phase="interrupted")
                return self._summary(run.metrics, run.step, time.time() - t0, interrupted=True)
            if dist_utils.is_main() and run.eval_every and (
                    (epoch + 1) % run.eval_every == 0 or run.done or epoch + 1 == run.epochs):
                self.tracker.update(force=True, phase="evaluating")
                t_eval = time.time()
                run.metrics = self._evaluate(run, epoch)
                self.tracker.eval_time(time.time() - t_eval)
                self.tracker.update(force=True, phase="training", last=dict(
                    self.tracker.state.get("last", {}), metrics=_numbers(run.metrics)))
            finished = run.done or epoch + 1 == run.epochs
            self._save(run.model, run.opt, run.sched, epoch + 1, 0, run.step, run.metrics,
                       finished)
        summary = self._summary(run.metrics, run.step, time.time() - t0)
        if dist_utils.is_main():
            write_json_atomic(self.run_dir / "summary.json", summary)
        self.tracker.update(force=True, phase="finished", evals_left=0)
        self.model = run.model
        return summary

    def _build(self) -> _Run:
        """Seed, then build the model, optimiser, data set, sampler and scheduler of a fresh
        run (position: epoch 0, batch 0, step 0), in this order (the order fixes the RNG
        draws, so a resumed run builds the same things before :meth:`_restore`)."""
        rank, world = dist_utils.rank(), dist_utils.world_size()
        seed_everything(self.seed)
        model = self.method.build_model()
        self._pretrained = self._load_start(model)  # reads a file; draws no random numbers
        model = model.to(self.device)
        channels_last = bool(self.train_cfg["channels_last"])
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        params = self.method.parameters_to_train(model)
        opt = build_optimizer(params, self.optim_cfg)
        amp_dtype = autocast_dtype(str(self.train_cfg["amp"]), self.device)
        self._precision = self.method.train_precision(
            str(amp_dtype).removeprefix("torch.") if amp_dtype else "float32")
        self._scaler = make_scaler(amp_dtype, self.device)

        dataset = self.method.train_dataset()
        global_batch = int(self.train_cfg["batch_size"])
        accum = int(self.train_cfg["accum_steps"])
        if global_batch % (world * accum):
            raise ValueError(f"train.batch_size {global_batch} must be divisible by "
                             f"{world} process(es) x train.accum_steps {accum}")
        sampler = ResumableSampler(len(dataset), global_batch, seed=self.seed,
                                   shuffle=bool(self.train_cfg["shuffle"]),
                                   rank=rank, world=world)
        epochs = int(self.train_cfg["epochs"])
        steps_per_epoch = sampler.batches_per_epoch
        max_steps = self.train_cfg["max_steps"]
        total_steps = epochs * steps_per_epoch
        if max_steps:
            total_steps = min(total_steps, int(max_steps))
        sched = build_scheduler(opt, self.optim_cfg, total_steps)
        return _Run(model=model, train_model=model, params=params, opt=opt, sched=sched,
                    dataset=dataset, sampler=sampler, epochs=epochs,
                    steps_per_epoch=steps_per_epoch, total_steps=total_steps,
                    ckpt_every=int(self.train_cfg["ckpt_every"]),
                    log_every=int(self.train_cfg["log_every"]),
                    grad_clip=self.train_cfg["grad_clip"],
                    eval_every=int(self.train_cfg["eval_every"]),
                    accum_steps=accum, amp_dtype=amp_dtype, scaler=self._scaler,
                    channels_last=channels_last)

    def _apply_budget(self, resume: bool) -> None:
        """Size the run to a user's folder (:mod:`training.budget`): measure a step here,
        write the plan into the config where the user left the defaults and print it; a
        resumed run takes the plan stored in its checkpoint's config."""
        from training import budget

        b = self.cfg.get("budget")
        if not b or not b["enabled"] or not self.method.user_folder():
            return
        if resume and self.ckpt_path.is_file():
            ckpt = load_checkpoint(self.ckpt_path)
            stored = ckpt.get("config", {})
            for section, key in budget.KEYS:
                self.cfg[section][key] = stored.get(section, {}).get(key, self.cfg[section][key])
            self._plan = ckpt.get("plan")
            return
        dataset = self.method.train_dataset()
        amp = autocast_dtype(str(self.train_cfg["amp"]), self.device)
        busy = budget.busy_threads(self.train_cfg)  # one thread on a machine busier than its cores
        step_s = budget.step_seconds(self.method, dataset, int(b["batch_size"]), self.device, amp)
        p = budget.plan(b, len(dataset), step_s)
        p["threads"] = torch.get_num_threads()
        if busy:
            p["threads_reason"] = busy
        p["set"] = budget.apply(self.cfg, load_config(default_config_path(self.method_name)), p)
        self._plan = p
        if dist_utils.is_main():
            pre = self.cfg["pretrained"]["weights"] or self.method.default_pretrained()
            start = {"imagenet": "ImageNet weights", None: "random init",
                     "none": "random init"}.get(pre, str(pre))
            spec = self.method.model_spec().get("kwargs", {})
            net = spec.get("backbone") or spec.get("encoder") or self.method.model_spec()["name"]
            size = getattr(getattr(self.method, "spec", None), "size", "?")
            parts = self.method.trained_parts()
            if parts:
                p["trained"] = parts
            print(budget.describe(p, f"{net}, {start}" + (f" ({parts})" if parts else ""), size,
                                  self.cfg), flush=True)

    def _load_start(self, model: nn.Module) -> str:
        """Load the starting weights that ``pretrained.weights`` names (null: the method's
        default, :meth:`Method.default_pretrained`; ``imagenet``: the bundled ImageNet
        weights, :mod:`training.imagenet`; ``none``: random init); returns one line naming
        them (summary and model card)."""
        pre = self.cfg["pretrained"]
        weights = pre["weights"] if pre["weights"] is not None else \
            self.method.default_pretrained()
        if not weights or weights == "none":
            return "none (random initialisation)"
        if weights == "imagenet":
            where = pre["module"] or "the whole model"
            text = f"{where} <- {load_imagenet(model, str(pre['module']))}"
        else:
            text = load_pretrained(model, weights, str(pre["module"])).summary()
        if dist_utils.is_main():
            print(f"[train] pretrained: {text}", flush=True)
        return text

    def _restore(self, run: _Run) -> bool:
        """Load ``checkpoint.pt`` into ``run`` (for ``--resume``): model, optimiser and
        scheduler states, the position (epoch, batch, step), the last metrics and the RNG
        states, so the run continues with the same batch order and random draws.

        Returns:
            True if the checkpoint is of a finished run (nothing is left to train).

        Raises:
            ValueError: the checkpoint holds another method's run.
        """
        ckpt = load_checkpoint(self.ckpt_path)
        if ckpt.get("method") != self.method_name:
            raise ValueError(f"{self.ckpt_path} holds a {ckpt.get('method')!r} run, "
                             f"not {self.method_name!r}")
        run.model.load_state_dict(ckpt["model"])
        run.opt.load_state_dict(ckpt["optimizer"])
        run.sched.load_state_dict(ckpt["scheduler"])
        if run.scaler is not None and ckpt.get("scaler"):
            run.scaler.load_state_dict(ckpt["scaler"])
        run.start_epoch, run.start_batch, run.step = (ckpt["epoch"], ckpt["batch"],
                                                      ckpt["global_step"])
        run.metrics = ckpt.get("metrics", {})
        self._learned = ckpt.get("learned")
        set_rng_state(ckpt["rng"])
        if ckpt.get("finished"):
            if dist_utils.is_main():
                print(f"[train] {self.ckpt_path} is already finished; nothing to resume")
            return True
        if run.start_batch >= run.steps_per_epoch:
            run.start_epoch, run.start_batch = run.start_epoch + 1, 0
        if dist_utils.is_main():
            print(f"[train] resuming from epoch {run.start_epoch}, batch {run.start_batch} "
                  f"(step {run.step})")
        return False

    def _train_epoch(self, run: _Run, epoch: int, stop_after_steps: int | None) -> bool:
        """Train one epoch (from ``run.start_batch`` in the epoch a resumed run starts in),
        logging to ``metrics.jsonl`` every ``log_every`` steps and checkpointing every
        ``ckpt_every``; sets ``run.done`` when ``total_steps`` is reached. A step is one
        optimiser step: ``run.accum_steps`` micro-batches (:meth:`_micro_step`).

        Returns:
            False if it stopped at ``stop_after_steps`` (after saving a resumable
            checkpoint at that batch), else True.

        Raises:
            FloatingPointError: the loss is not finite.
        """
        model, sampler = run.model, run.sampler
        sampler.set_epoch(epoch, run.start_batch if epoch == run.start_epoch else 0)
        loader = train_loader(run.dataset, sampler, sampler.local_batch // run.accum_steps,
                              collate_fn=self.method.collate_fn(),
                              num_workers=int(self.train_cfg["num_workers"]),
                              pin_memory=bool(self.train_cfg["pin_memory"])
                              and self.device.type == "cuda",
                              seed=self.seed, epoch=epoch)
        self.method.on_epoch_start(model, epoch)
        model.train()
        bar = tqdm(loader, desc=f"{self.method_name} epoch {epoch + 1}/{run.epochs}",
                   disable=not (self.progress and dist_utils.is_main()), leave=False,
                   dynamic_ncols=True)
        batch_idx = sampler.start_batch if epoch == run.start_epoch else 0
        evals_left = (len([e for e in range(epoch, run.epochs) if run.eval_every and (
            (e + 1) % run.eval_every == 0 or e + 1 == run.epochs)]) if dist_utils.is_main() else 0)
        self.tracker.update(force=True, phase="training", epoch=epoch + 1, epochs=run.epochs,
                            step=run.step, total_steps=run.total_steps, evals_left=evals_left)
        run.opt.zero_grad(set_to_none=True)
        micro: list[tuple[torch.Tensor, dict[str, Any]]] = []
        for batch in bar:
            micro.append(self._micro_step(run, batch, last=len(micro) + 1 == run.accum_steps))
            if len(micro) < run.accum_steps:
                continue
            loss, logs = micro[0] if len(micro) == 1 else _mean_logs(micro)
            micro = []
            scaler = run.scaler
            if run.grad_clip:
                if scaler is not None:
                    scaler.unscale_(run.opt)
                torch.nn.utils.clip_grad_norm_(run.params, float(run.grad_clip))
            if scaler is not None:
                scaler.step(run.opt)
                scaler.update()
            else:
                run.opt.step()
            run.opt.zero_grad(set_to_none=True)
            run.sched.step()
            run.step += 1
            batch_idx += 1
            if run.step % run.log_every == 0 or run.step == 1:
                rec = {"step": run.step, "epoch": epoch, "loss": float(loss.item()),
                       "lr": run.opt.param_groups[0]["lr"], **logs}
                self._log(rec)
                bar.set_postfix(loss=f"{rec['loss']:.4f}")
                self.tracker.state["last"] = dict(self.tracker.state.get("last", {}),
                                                  loss=round(rec["loss"], 5))
            self.tracker.update(step=run.step)
            if run.step >= run.total_steps:
                run.done = True
            if run.ckpt_every and run.step % run.ckpt_every == 0 and not run.done:
                self._save(model, run.opt, run.sched, epoch, batch_idx, run.step, run.metrics,
                           False)
            stop_now = self._stop_signal is not None or (
                stop_after_steps is not None and run.step >= stop_after_steps)
            if stop_now and not run.done:
                self._save(model, run.opt, run.sched, epoch, batch_idx, run.step, run.metrics,
                           False)
                return False
            if run.done:
                break
        bar.close()
        return True

    def _micro_step(self, run: _Run, batch: Any, last: bool
                    ) -> tuple[torch.Tensor, dict[str, Any]]:
        """Loss and backward pass of one micro-batch (the whole batch without accumulation);
        gradients add up until the optimiser step. Under DDP, gradients are all-reduced on
        the ``last`` micro-batch of a step only.

        Raises:
            FloatingPointError: the loss is not finite.
        """
        net = run.train_model.net if isinstance(run.train_model, TrainForward) \
            else run.train_model
        with net.no_sync() if isinstance(net, DDP) and not last else contextlib.nullcontext():
            loss, logs = self.method.loss(run.train_model, batch, self.device)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss became {loss.item()} at step {run.step}")
            scaled = loss / run.accum_steps if run.accum_steps > 1 else loss
            if run.scaler is not None:
                scaled = run.scaler.scale(scaled)
            scaled.backward()
        return loss.detach(), logs

    def _evaluate(self, run: _Run, epoch: int) -> dict[str, Any]:
        """Evaluate the model (eval mode) with the method's metrics, log them to
        ``metrics.jsonl`` and print them (with ``progress``); returns the metrics."""
        run.model.eval()
        metrics = self.method.evaluate(run.model, self.device)
        self._learned = verdict(metrics, self.method.chance()) if metrics else None
        self._log({"step": run.step, "epoch": epoch, "eval": metrics})
        if metrics and self.progress:
            print(f"[{self.method_name}] epoch {epoch + 1}: " +
                  ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()
                            if isinstance(v, (int, float))))
        return metrics

    def _summary(self, metrics: dict[str, Any], step: int, seconds: float,
                 interrupted: bool = False) -> dict[str, Any]:
        return {"method": self.method_name, "run_dir": str(self.run_dir),
                "checkpoint": str(self.ckpt_path), "steps": step,
                "train_seconds": round(seconds, 2), "metrics": metrics,
                "interrupted": interrupted, "seed": self.seed, "device": str(self.device),
                "world_size": dist_utils.world_size(), "git_commit": git_commit(),
                "precision": self._precision,  # the forward's autocast dtype
                "pretrained": self._pretrained,  # the starting weights
                "plan": self._plan,  # the budget sized to a user's folder (training.budget)
                "learned": self._learned,  # the held-out metric against chance
                "at_chance": bool(self._learned and self._learned["at_chance"])}
