"""One harness for the experiment scripts in ``training/experiments/``.

Every report script builds its run configs, trains, reuses earlier runs, records where and
how it ran, and summarises seeds through this module, so the five reports agree on what a
cached run is, what "±" means and what the provenance says.

Configs
    :func:`resolve_config` = the method's default YAML (``training/configs/<method>.yaml``,
    or another file) + ``key.sub=value`` overrides. Run configs are never written by hand,
    so a schema check in :mod:`training.config` applies to them as to ``python -m training``.

Cache (which run is reused)
    :func:`config_key` is the sha256 of the canonical JSON (sorted keys, no spaces) of
    ``{"method", "config", "device", "extra"}``: the whole resolved config minus
    :data:`NON_RESULT_KEYS` (names, logging, progress bars, artifact paths), the device type
    the run trains on (``run.device: auto`` resolved: ``cpu`` or ``cuda``) and ``extra``, the
    script's own result-relevant settings (e.g. the DCL sweep's linear-probe epochs).
    :func:`lookup` is the one place that decides reuse: a stored record under
    ``<root>/cache/<key>.json`` whose key, recomputed from its own config, matches, that
    finished, and (when the caller needs the model) whose checkpoint is still there.
    :func:`train_run` trains through :class:`training.engine.Trainer` into
    ``<root>/runs/<run.name>.<key[:12]>/`` (two configs never share a folder) and stores the
    record after the run and the script's measurement finished.

Provenance
    :func:`provenance`: command (``shlex.join`` of ``python -m <module>`` + the arguments),
    git commit and dirty flag, the device actually used (read from torch), torch /
    onnxruntime / numpy versions, torch threads, platform, CPU. No host name.

Spread over seeds
    :func:`spread` is the sample standard deviation (``ddof=1``); :func:`seed_stats`,
    :func:`fmt_mean_sd` and :data:`SPREAD_LEGEND` print it the same way in every report:
    ``0.940 ± 0.008 (mean ± sample std, 2 seeds)``.
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from runtime.artifacts import atomic_path, write_json_atomic
from runtime.machine import cpu_name
from training.config import apply_overrides, default_config_path, load_config

NON_RESULT_KEYS: tuple[str, ...] = ("run.name", "run.artifacts", "train.log_every",
                                    "train.progress")
"""Dotted config keys left out of the cache key: they name, log or place a run but do not
change its numbers. Everything else (including eval settings, threads, checkpoint period)
is part of the key."""
NEUTRAL_KEYS: dict[str, Any] = {"train.pin_memory": True, "train.amp": "auto",
                                "train.channels_last": False, "train.accum_steps": 1,
                                "eval.slot_decode": "slots"}
"""Keys added after the caches were made, left out of the key while they hold the value
that reproduces the runs made before them (``train.amp: auto`` only on the CPU, where it
is off), so those caches stay valid; likewise the ``pretrained`` section while it is the
method's default (no weights file)."""
CACHE_DIR = "cache"
RUNS_DIR = "runs"
RECORD_VERSION = 1

SPREAD_NAME = "mean ± sample std"
SPREAD_LEGEND = ("± is the sample standard deviation over seeds (ddof=1, i.e. divided by "
                 "n - 1): every \"a ± b\" is mean ± sample std over the n seeds stated.")
"""The one legend line each report prints once."""


# --- configs -------------------------------------------------------------------------------
def resolve_config(method: str, overrides: Iterable[str] = (),
                   config: str | Path | None = None) -> dict[str, Any]:
    """The method's default config with ``config`` (a YAML file) and ``key.sub=value``
    overrides applied; validated by :func:`training.config.resolve_config` where the config
    module provides it (the typed schema), else loaded and overridden without a schema."""
    from training import config as config_module

    resolve = getattr(config_module, "resolve_config", None)
    if resolve is not None:
        same = config is None or Path(config).resolve() == default_config_path(method).resolve()
        return resolve(method, None if same else config, list(overrides))
    return apply_overrides(load_config(config or default_config_path(method)), list(overrides))


def section_overrides(sections: dict[str, Any]) -> list[str]:
    """``{section: {key: value}}`` as ``section.key=value`` overrides (values in YAML flow
    style, so a mapping such as ``model.kwargs`` replaces the default one whole)."""
    import yaml

    out = []
    for sec, body in sections.items():
        items = body.items() if isinstance(body, dict) else [(None, body)]
        for k, v in items:
            key = sec if k is None else f"{sec}.{k}"
            text = yaml.safe_dump(v, default_flow_style=True, width=10**6).strip()
            if text.endswith("\n..."):
                text = text[:-4].strip()
            if text.endswith("..."):
                text = text[:-3].strip()
            out.append(f"{key}={text}")
    return out


def _drop(cfg: dict[str, Any], dotted: str) -> None:
    *parents, leaf = dotted.split(".")
    node: Any = cfg
    for p in parents:
        node = node.get(p) if isinstance(node, dict) else None
        if node is None:
            return
    if isinstance(node, dict):
        node.pop(leaf, None)


def _get(cfg: dict[str, Any], dotted: str) -> Any:
    node: Any = cfg
    for p in dotted.split("."):
        if not isinstance(node, dict) or p not in node:
            return KeyError
        node = node[p]
    return node


def _default_pretrained(method: str) -> Any:
    """The ``pretrained`` section of the method's YAML if it loads no file, else None."""
    try:
        section = load_config(default_config_path(method)).get("pretrained")
    except (KeyError, FileNotFoundError, ValueError):
        return None
    return section if isinstance(section, dict) and not section.get("weights") else None


def result_config(cfg: dict[str, Any], device: str | None = None,
                  method: str | None = None) -> dict[str, Any]:
    """``cfg`` without :data:`NON_RESULT_KEYS`, and without the :data:`NEUTRAL_KEYS` that
    hold their neutral value (``train.amp: auto`` counts as neutral on ``device`` cpu) and
    without ``pretrained`` while it equals ``method``'s default section."""
    out = copy.deepcopy(cfg)
    for k in NON_RESULT_KEYS:
        _drop(out, k)
    kind = device or device_kind(cfg)
    for k, neutral in NEUTRAL_KEYS.items():
        if _get(out, k) == neutral and (k != "train.amp" or kind == "cpu"):
            _drop(out, k)
    default = _default_pretrained(method) if method and "pretrained" in out else None
    if default is not None and out["pretrained"] == default:
        del out["pretrained"]
    return out


def canonical_json(obj: Any) -> str:
    """Sorted keys, no whitespace, ASCII; tuples as lists."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      default=str, allow_nan=True)


def device_kind(cfg: dict[str, Any]) -> str:
    """The device type a run with ``cfg`` trains on here: ``run.device`` with ``auto``
    resolved the way the engine does (``cuda`` when torch sees one, else ``cpu``)."""
    name = str((cfg.get("run") or {}).get("device", "auto"))
    if name == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return name.split(":")[0]


def config_key(cfg: dict[str, Any], *, method: str, extra: dict[str, Any] | None = None,
               device: str | None = None) -> str:
    """sha256 of the canonical JSON of the result-relevant config (see the module doc)."""
    kind = device or device_kind(cfg)
    payload = {"method": method, "config": result_config(cfg, kind, method),
               "device": kind, "extra": extra or {}}
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()


def content_key(obj: Any) -> str:
    """sha256 of the canonical JSON of any JSON-able object (for non-training caches)."""
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --- the cache -----------------------------------------------------------------------------
def record_path(root: str | Path, key: str) -> Path:
    return Path(root) / CACHE_DIR / f"{key}.json"


def lookup(root: str | Path, key: str, *, need_checkpoint: bool = False
           ) -> dict[str, Any] | None:
    """The stored record of a finished run with this key, or None (then train it).

    The one reuse decision of every experiment script. A record counts only when its key,
    recomputed from the config stored in it, equals ``key`` (a record written under other
    rules or edited by hand is not reused), it finished, and, with ``need_checkpoint``, its
    checkpoint file still exists.
    """
    path = record_path(root, key)
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(rec, dict) or rec.get("key") != key or not rec.get("finished"):
        return None
    if "config" in rec and "method" in rec:  # a training run: re-derive the key
        if config_key(rec["config"], method=rec["method"], extra=rec.get("extra"),
                      device=rec.get("device_kind")) != key:
            return None
    elif rec.get("content") is not None and content_key(rec["content"]) != key:
        return None
    if need_checkpoint and not (rec.get("checkpoint") and Path(rec["checkpoint"]).is_file()):
        return None
    return rec


def store(root: str | Path, key: str, record: dict[str, Any]) -> Path:
    """Write ``record`` (JSON-able) as the cache entry of ``key``."""
    path = record_path(root, key)
    write_json_atomic(path, {**record, "key": key, "finished": True,
                             "record_version": RECORD_VERSION})
    return path


def json_indent(text: str) -> int:
    """The indent of a stored JSON file (so a re-rendered file keeps its layout)."""
    for line in text.splitlines()[1:2]:
        return max(1, len(line) - len(line.lstrip(" ")))
    return 2


def write_json(path: str | Path, obj: Any, indent: int = 2) -> None:
    """Atomic JSON write with a chosen indent (:func:`write_json_atomic` uses 2)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=indent, default=str) + "\n")


def forget(root: str | Path, key: str) -> None:
    record_path(root, key).unlink(missing_ok=True)


def cached_value(root: str | Path, content: dict[str, Any], compute: Callable[[], Any],
                 *, reuse: bool = True) -> tuple[Any, bool]:
    """A cached computation that is not a training run (e.g. evaluating a checkpoint):
    keyed by :func:`content_key` of ``content``; returns ``(value, reused)``."""
    key = content_key(content)
    rec = lookup(root, key) if reuse else None
    if rec is not None:
        return rec["value"], True
    forget(root, key)
    value = compute()
    store(root, key, {"content": content, "value": value, "provenance": provenance()})
    return value, False


@dataclass
class Run:
    """One training run, trained now or reused from the cache."""

    name: str                     # the run.name asked for (without the key suffix)
    method: str
    key: str
    config: dict[str, Any]        # the config it trained with (run.name = folder name)
    run_dir: Path
    checkpoint: Path
    summary: dict[str, Any]       # the Trainer's summary
    result: Any                   # what the script's measure() returned
    provenance: dict[str, Any]    # of the process that trained it
    wall_seconds: float           # training + measurement, when it was trained
    reused: bool
    model: Any = field(default=None, repr=False)      # the trained model (this process only)
    method_obj: Any = field(default=None, repr=False)

    def load_model(self):
        """The trained model: the in-memory one, else built from the checkpoint (eval mode)."""
        if self.model is None:
            from training.checkpoint import load_checkpoint
            from training.methods import build_method

            ckpt = load_checkpoint(self.checkpoint)
            method = self.method_obj or build_method(self.method, copy.deepcopy(self.config))
            model = method.build_model()
            model.load_state_dict(ckpt["model"])
            self.model = model
        return self.model.eval()

    def record(self) -> dict[str, Any]:
        return {"name": self.name, "method": self.method, "config": self.config,
                "device_kind": device_kind(self.config), "run_dir": str(self.run_dir),
                "checkpoint": str(self.checkpoint), "summary": self.summary,
                "result": self.result, "provenance": self.provenance,
                "wall_seconds": self.wall_seconds}


def cached_run(method: str, cfg: dict[str, Any], root: str | Path, *,
               extra: dict[str, Any] | None = None, need_checkpoint: bool = False
               ) -> Run | None:
    """The finished run of ``cfg`` from the cache (decided by :func:`lookup`), or None."""
    key = config_key(cfg, method=method, extra=extra)
    rec = lookup(root, key, need_checkpoint=need_checkpoint)
    if rec is None:
        return None
    return Run(name=str((cfg.get("run") or {}).get("name", method)), method=method, key=key,
               config=rec["config"], run_dir=Path(rec["run_dir"]),
               checkpoint=Path(rec["checkpoint"]), summary=rec["summary"],
               result=rec.get("result"), provenance=rec.get("provenance", {}),
               wall_seconds=float(rec.get("wall_seconds", float("nan"))), reused=True)


def train_run(method: str, cfg: dict[str, Any], root: str | Path, *,
              measure: Callable[[Any, Any], Any] | None = None,
              extra: dict[str, Any] | None = None, reuse: bool = True,
              need_checkpoint: bool = False, build: Callable[[dict[str, Any]], Any] | None = None,
              progress: bool = False, log: Callable[[str], None] | None = print) -> Run:
    """Train ``cfg`` with the engine, or reuse the finished run with the same key.

    Args:
        method: registered method name (``training.methods``).
        cfg: the resolved run config (see :func:`resolve_config`); not modified.
        root: the experiment's folder (cache records and run folders go under it).
        measure: ``measure(trainer, method_obj) -> JSON-able`` run after training; stored
            with the run and handed back as ``Run.result`` when the run is reused.
        extra: the script's result-relevant settings outside the config (part of the key).
        reuse: False retrains (and replaces the record).
        need_checkpoint: reuse only when the checkpoint still exists (callers that load the
            model with :meth:`Run.load_model`).
        build: ``build(cfg) -> Method`` (default :func:`training.methods.build_method`).
    """
    from training.engine import Trainer

    root = Path(root)
    key = config_key(cfg, method=method, extra=extra)
    name = str((cfg.get("run") or {}).get("name", method))
    cached = cached_run(method, cfg, root, extra=extra,
                        need_checkpoint=need_checkpoint) if reuse else None
    if cached is not None:
        if log:
            log(f"[harness] reusing {name} (cached run {key[:12]}, same config)")
        return cached
    forget(root, key)  # a half-finished retrain must not leave the old record pointing here
    run_cfg = copy.deepcopy(cfg)
    run_cfg.setdefault("run", {})["name"] = f"{name}.{key[:12]}"
    if build is None:
        from training.methods import build_method

        method_obj = build_method(method, run_cfg)
    else:
        method_obj = build(run_cfg)
    t0 = time.time()
    trainer = Trainer(method, method_obj, run_cfg, artifacts=root, progress=progress)
    summary = trainer.fit()
    result = measure(trainer, method_obj) if measure is not None else None
    run = Run(name=name, method=method, key=key, config=run_cfg, run_dir=trainer.run_dir,
              checkpoint=trainer.ckpt_path, summary=summary, result=result,
              provenance=provenance(trainer.device), wall_seconds=round(time.time() - t0, 1),
              reused=False, model=getattr(trainer, "model", None), method_obj=method_obj)
    store(root, key, {**run.record(), "extra": extra or {}})
    return run


# --- provenance ----------------------------------------------------------------------------
def command_line(module: str, args: Sequence[str] | None = None) -> str:
    """``shlex.join(["python", "-m", module, *args])``; ``args`` default ``sys.argv[1:]``."""
    return shlex.join(["python", "-m", module, *(sys.argv[1:] if args is None else args)])


def _git(*cmd: str) -> str | None:
    try:
        out = subprocess.run(["git", *cmd], capture_output=True, text=True, timeout=10,
                             cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def git_state() -> dict[str, Any]:
    """``{"git_commit": sha or "unknown", "git_dirty": bool or None}`` (tracked and
    untracked-but-not-ignored files count as dirty)."""
    sha = (_git("rev-parse", "HEAD") or "").strip() or "unknown"
    status = _git("status", "--porcelain")
    return {"git_commit": sha, "git_dirty": None if status is None else bool(status.strip())}


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def device_description(device: Any = None) -> dict[str, str]:
    """``{"device": "cpu" | "cuda:0", "device_name": "cpu" | GPU name}`` from torch; with no
    ``device``, the one the engine would pick (``auto``)."""
    import torch

    if device is None:
        from training.engine import select_device

        device = select_device("auto")
    device = torch.device(device)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return {"device": f"cuda:{index}", "device_name": torch.cuda.get_device_name(index)}
    return {"device": device.type, "device_name": device.type}


def provenance(device: Any = None, *, module: str | None = None,
               args: Sequence[str] | None = None) -> dict[str, Any]:
    """Where and how this process runs. ``command`` only when ``module`` is given."""
    import torch

    out: dict[str, Any] = {}
    if module is not None:
        out["command"] = command_line(module, args)
    out.update(git_state())
    out.update(device_description(device))
    out.update({
        "cuda_available": bool(torch.cuda.is_available()),
        "torch": str(torch.__version__), "numpy": np.__version__,
        "onnxruntime": _version("onnxruntime") or _version("onnxruntime-gpu"),
        "torch_threads": int(torch.get_num_threads()),
        "python": platform.python_version(), "platform": platform.platform(),
        "machine": platform.machine(), "cpu": cpu_name(), "cpu_count": os.cpu_count(),
        "started_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
    })
    return out


def devices_used(provs: Iterable[dict[str, Any]]) -> dict[str, int]:
    """How many runs trained on each device (from their provenance)."""
    out: dict[str, int] = {}
    for p in provs:
        if not p:
            label = "not recorded"
        else:
            label = p.get("device_name", "not recorded")
            if p.get("device", "").startswith("cuda"):
                label = f"{p['device']} {label}"
        out[label] = out.get(label, 0) + 1
    return out


def provenance_lines(prov: dict[str, Any], runs: dict[str, int] | None = None) -> list[str]:
    """Markdown lines (each ending in two spaces) for a report's header."""
    dirty = {True: " (working tree dirty)", False: "", None: " (dirty state unknown)"}
    lines = [f"Command: `{prov['command']}`  "] if prov.get("command") else []
    lines += [
        f"Git commit: `{prov.get('git_commit', 'unknown')}`{dirty[prov.get('git_dirty')]}  ",
        f"Device (this process, from torch): {prov.get('device_name', '?')}"
        + (f" ({prov['device']})" if str(prov.get("device", "")).startswith("cuda") else "")
        + f"; torch {prov.get('torch')}, {prov.get('torch_threads')} torch thread(s); numpy "
          f"{prov.get('numpy')}; onnxruntime {prov.get('onnxruntime') or 'not installed'}  ",
        f"Platform: {prov.get('platform')}; CPU: {prov.get('cpu')} ({prov.get('cpu_count')} "
        f"logical cores); Python {prov.get('python')}; started {prov.get('started_utc')} UTC  ",
    ]
    if runs:
        lines.append("Training runs by device (as each run recorded it, cached runs "
                     "included): " + ", ".join(f"{k}: {v}" for k, v in runs.items()) + "  ")
    return lines


RERENDER_NOTE = ("This report was produced before the experiment harness "
               "(training/experiments/harness.py): its numbers come from an earlier version of "
               "the script, and the machine line above is that script's text as recorded then. "
               "The tables below were re-rendered from {source}, without retraining.")


def rerendered_header(res: dict[str, Any], render_prov: dict[str, Any],
                  source: str = "the stored per-seed results") -> list[str]:
    """Header lines for a report re-rendered from stored per-seed results (a JSON without the harness's provenance)."""
    return [f"Command (original run): `{res.get('command', 'not recorded')}`  ",
            f"Machine (as recorded by the original run): {res.get('machine', 'not recorded')}  ",
            f"Git commit (original run): `{res.get('git_commit', 'not recorded')}`  ",
            f"Re-rendered by: `{render_prov.get('command', '?')}` at commit "
            f"`{render_prov.get('git_commit', 'unknown')}`  ", "",
            RERENDER_NOTE.format(source=source)]


# --- spread over seeds ---------------------------------------------------------------------
def spread(values: Sequence[float]) -> float:
    """Sample standard deviation over seeds (``ddof=1``); NaN for fewer than two values."""
    a = np.asarray(list(values), dtype=float)
    return float(a.std(ddof=1)) if a.size > 1 else float("nan")


def seed_stats(values: Sequence[float]) -> dict[str, Any]:
    """``{"mean", "sd", "n"}`` with ``sd`` = :func:`spread` (None for one seed)."""
    a = [float(v) for v in values]
    sd = spread(a)
    return {"mean": float(np.mean(a)) if a else float("nan"),
            "sd": None if math.isnan(sd) else sd, "n": len(a)}


def fmt_mean_sd(stats_or_values: dict[str, Any] | Sequence[float], digits: int = 3,
                scale: float = 1.0, label: bool = True) -> str:
    """``0.940 ± 0.008 (mean ± sample std, 2 seeds)``. ``label=False`` leaves the
    parenthesis out (table cells, with :data:`SPREAD_LEGEND` printed once)."""
    st = stats_or_values if isinstance(stats_or_values, dict) else seed_stats(stats_or_values)
    n = int(st["n"])
    mean = f"{scale * st['mean']:.{digits}f}"
    if st.get("sd") is None or n < 2:
        return f"{mean} (1 seed, no spread)" if label else f"{mean} (1 seed)"
    text = f"{mean} ± {scale * st['sd']:.{digits}f}"
    return f"{text} ({SPREAD_NAME}, {n} seeds)" if label else text


def legend(n_seeds: int | Sequence[int] | None = None) -> str:
    """:data:`SPREAD_LEGEND`, with the number of seeds when it is the same everywhere."""
    if n_seeds is None:
        return SPREAD_LEGEND
    ns = sorted({int(n_seeds)} if isinstance(n_seeds, int) else {int(x) for x in n_seeds})
    if len(ns) == 1:
        return SPREAD_LEGEND + f" Here n = {ns[0]} seed{'s' if ns[0] != 1 else ''}."
    return SPREAD_LEGEND + f" Here n = {' or '.join(map(str, ns))} seeds (see each row)."
