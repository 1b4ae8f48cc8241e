"""The one training engine shared by the four methods.

Seeding, device selection, DDP (torchrun), tqdm progress, metrics to ``metrics.jsonl`` and
``summary.json``, atomic checkpoints with config and git commit, and exact resumption.

Run folder: ``<artifacts>/runs/<run.name>/`` with ``checkpoint.pt`` (latest state,
written every ``train.ckpt_every`` steps and at each epoch end), ``metrics.jsonl``,
``summary.json`` and ``config.yaml``.

Exact resume: the batch order is a function of (seed, epoch) (see
:mod:`training.sampler`), the DataLoader gets its own generator, and the checkpoint holds
the model, optimiser, scheduler, RNG states and the position (epoch, batch). With
``num_workers: 0`` (the default here) a resumed run is identical to an uninterrupted one.
"""
from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import yaml
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from models.artifacts import artifacts_dir, atomic_path, write_json_atomic
from training import distributed as dist_utils
from training.checkpoint import (git_commit, load_checkpoint, rng_state, save_checkpoint,
                                 set_rng_state)
from training.methods.base import Method
from training.sampler import ResumableSampler

CHECKPOINT_NAME = "checkpoint.pt"


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
    name = cfg.get("name", "adam").lower()
    lr, wd = float(cfg.get("lr", 1e-3)), float(cfg.get("weight_decay", 0.0))
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=wd,
                               momentum=float(cfg.get("momentum", 0.9)),
                               nesterov=bool(cfg.get("nesterov", False)))
    raise ValueError(f"unknown optimizer {name!r} (adam, adamw, sgd)")


def build_scheduler(opt: torch.optim.Optimizer, cfg: dict[str, Any], total_steps: int
                    ) -> torch.optim.lr_scheduler.LambdaLR:
    kind = cfg.get("schedule", "none")
    warmup = int(cfg.get("warmup_steps", 0))

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
        self.method_name, self.method, self.cfg = method_name, method, cfg
        run = cfg.setdefault("run", {})
        self.train_cfg = cfg.setdefault("train", {})
        self.optim_cfg = cfg.setdefault("optim", {})
        self.seed = int(run.get("seed", 0))
        self.run_dir = artifacts_dir(artifacts) / "runs" / str(run.get("name", method_name))
        self.ckpt_path = self.run_dir / CHECKPOINT_NAME
        self.device = select_device(str(run.get("device", "auto")))
        self.progress = progress

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
            "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "epoch": epoch, "batch": batch, "global_step": step,
            "rng": rng_state(),
            "config": self.cfg,
            "git_commit": git_commit(),
            "metrics": metrics,
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
        """Train; return the summary. ``stop_after_steps`` saves and stops early (resumable)."""
        ddp = dist_utils.init_distributed(self.device)
        rank, world = dist_utils.rank(), dist_utils.world_size()
        seed_everything(self.seed)
        model = self.method.build_model().to(self.device)
        params = self.method.parameters_to_train(model)
        opt = build_optimizer(params, self.optim_cfg)

        dataset = self.method.train_dataset()
        global_batch = int(self.train_cfg.get("batch_size", 64))
        sampler = ResumableSampler(len(dataset), global_batch, seed=self.seed,
                                   shuffle=bool(self.train_cfg.get("shuffle", True)),
                                   rank=rank, world=world)
        epochs = int(self.train_cfg.get("epochs", 1))
        steps_per_epoch = sampler.batches_per_epoch
        max_steps = self.train_cfg.get("max_steps")
        total_steps = epochs * steps_per_epoch
        if max_steps:
            total_steps = min(total_steps, int(max_steps))
        sched = build_scheduler(opt, self.optim_cfg, total_steps)

        start_epoch, start_batch, step, metrics = 0, 0, 0, {}
        if resume and self.ckpt_path.exists():
            ckpt = load_checkpoint(self.ckpt_path)
            if ckpt.get("method") != self.method_name:
                raise ValueError(f"{self.ckpt_path} holds a {ckpt.get('method')!r} run, "
                                 f"not {self.method_name!r}")
            model.load_state_dict(ckpt["model"])
            opt.load_state_dict(ckpt["optimizer"])
            sched.load_state_dict(ckpt["scheduler"])
            start_epoch, start_batch, step = ckpt["epoch"], ckpt["batch"], ckpt["global_step"]
            metrics = ckpt.get("metrics", {})
            set_rng_state(ckpt["rng"])
            if ckpt.get("finished"):
                if dist_utils.is_main():
                    print(f"[train] {self.ckpt_path} is already finished; nothing to resume")
                return self._summary(metrics, step, 0.0)
            if start_batch >= steps_per_epoch:
                start_epoch, start_batch = start_epoch + 1, 0
            if dist_utils.is_main():
                print(f"[train] resuming from epoch {start_epoch}, batch {start_batch} "
                      f"(step {step})")
        elif dist_utils.is_main() and self.ckpt_path.exists():
            print(f"[train] overwriting previous run in {self.run_dir} (use --resume to continue)")
            (self.run_dir / "metrics.jsonl").unlink(missing_ok=True)

        if dist_utils.is_main():
            self.run_dir.mkdir(parents=True, exist_ok=True)
            with atomic_path(self.run_dir / "config.yaml") as tmp:
                tmp.write_text(yaml.safe_dump(self.cfg, sort_keys=False))

        train_model: nn.Module = model
        if ddp:
            train_model = DDP(model, device_ids=[self.device.index] if self.device.type == "cuda"
                              else None)
        ckpt_every = int(self.train_cfg.get("ckpt_every", 0) or 0)
        log_every = int(self.train_cfg.get("log_every", 20))
        grad_clip = self.train_cfg.get("grad_clip")
        eval_every = int(self.train_cfg.get("eval_every", 1) or 0)
        t0 = time.time()
        done = step >= total_steps
        for epoch in range(start_epoch, epochs):
            if done:
                break
            sampler.set_epoch(epoch, start_batch if epoch == start_epoch else 0)
            loader = DataLoader(dataset, batch_size=sampler.local_batch, sampler=sampler,
                                drop_last=True, collate_fn=self.method.collate_fn(),
                                num_workers=int(self.train_cfg.get("num_workers", 0)),
                                generator=torch.Generator().manual_seed(self.seed + epoch))
            self.method.on_epoch_start(model, epoch)
            model.train()
            bar = tqdm(loader, desc=f"{self.method_name} epoch {epoch + 1}/{epochs}",
                       disable=not (self.progress and dist_utils.is_main()), leave=False,
                       dynamic_ncols=True)
            batch_idx = sampler.start_batch if epoch == start_epoch else 0
            for batch in bar:
                loss, logs = self.method.loss(train_model, batch, self.device)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"loss became {loss.item()} at step {step}")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if grad_clip:
                    torch.nn.utils.clip_grad_norm_(params, float(grad_clip))
                opt.step()
                sched.step()
                step += 1
                batch_idx += 1
                if step % log_every == 0 or step == 1:
                    rec = {"step": step, "epoch": epoch, "loss": float(loss.item()),
                           "lr": opt.param_groups[0]["lr"], **logs}
                    self._log(rec)
                    bar.set_postfix(loss=f"{rec['loss']:.4f}")
                if step >= total_steps:
                    done = True
                if ckpt_every and step % ckpt_every == 0 and not done:
                    self._save(model, opt, sched, epoch, batch_idx, step, metrics, False)
                if stop_after_steps is not None and step >= stop_after_steps and not done:
                    self._save(model, opt, sched, epoch, batch_idx, step, metrics, False)
                    return self._summary(metrics, step, time.time() - t0, interrupted=True)
                if done:
                    break
            bar.close()
            if dist_utils.is_main() and eval_every and ((epoch + 1) % eval_every == 0 or done
                                                        or epoch + 1 == epochs):
                model.eval()
                metrics = self.method.evaluate(model, self.device)
                self._log({"step": step, "epoch": epoch, "eval": metrics})
                if metrics and self.progress:
                    print(f"[{self.method_name}] epoch {epoch + 1}: " +
                          ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()
                                    if isinstance(v, (int, float))))
            finished = done or epoch + 1 == epochs
            self._save(model, opt, sched, epoch + 1, 0, step, metrics, finished)
        summary = self._summary(metrics, step, time.time() - t0)
        if dist_utils.is_main():
            write_json_atomic(self.run_dir / "summary.json", summary)
        self.model = model
        return summary

    def _summary(self, metrics: dict[str, Any], step: int, seconds: float,
                 interrupted: bool = False) -> dict[str, Any]:
        return {"method": self.method_name, "run_dir": str(self.run_dir),
                "checkpoint": str(self.ckpt_path), "steps": step,
                "train_seconds": round(seconds, 2), "metrics": metrics,
                "interrupted": interrupted, "seed": self.seed, "device": str(self.device),
                "world_size": dist_utils.world_size(), "git_commit": git_commit()}
