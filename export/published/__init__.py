"""Import a checkpoint that a paper's authors published into a run of this project.

``python -m export.published KIND FILE [options]`` reads the file the user downloaded from
the authors' page (nothing is downloaded here), checks every key and shape of its state
dict against this project's re-implementation of the authors' network, and writes
``<artifacts>/runs/<name>/`` as training does (``checkpoint.pt``, ``config.yaml``,
``summary.json``) plus ``published.json``: the file's name and sha256, what the authors
trained it on and the metrics the authors report, labelled as theirs (nothing is measured
here). ``python -m export``, the app and every command then treat the run like any other.

Each kind is one :class:`Importer`, named in :data:`IMPORTERS` (``kind -> "module:attr"``,
imported only when used). An importer adds its own options and turns the parsed arguments
into an :class:`ImportedRun`; this module does the rest (safe loading, the strict state-dict
check, the atomic writes under the run's lock).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from runtime.cli import UserError

# kind -> the Importer that reads it ("module:attribute")
IMPORTERS: dict[str, str] = {
    "seqfakeformer": "export.published.seqfakeformer:IMPORTER",
    "sbi": "export.published.sbi:IMPORTER",
}

PUBLISHED_JSON = "published.json"  # beside the run's checkpoint: where the weights came from


class PublishedFileError(UserError):
    """The file is not the published checkpoint it should be (the message names the file
    and what is wrong); the command exits 2 with it."""


@dataclass(frozen=True)
class ImportedRun:
    """What an importer makes of a published file; :func:`write_run` writes it.

    Attributes:
        method: the method whose run this becomes ("seqfake").
        model_spec: ``{"name": registered model, "kwargs": {...}}`` (:mod:`models.registry`).
        state_dict: the weights in the re-implementation's key layout (already checked).
        config: the run's config (the method's schema), as training would store it.
        extra: the method's extra state (``preprocess`` with its ``alignment``, ``labels``,
            ``arch``, ...) that selects the export variant.
        trained_on: what the authors trained the weights on, in words.
        reported: the metrics the authors report for these weights (name -> value), with
            ``source``: where they report them.
        source: where the file comes from (page, paper, terms), in words.
        default_name: the run's name when ``--name`` is not given.
        details: anything else worth recording (the state read, the authors' config).
    """
    method: str
    model_spec: dict[str, Any]
    state_dict: dict[str, Any]
    config: dict[str, Any]
    extra: dict[str, Any]
    trained_on: str
    reported: dict[str, Any]
    source: str
    default_name: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Importer:
    """One kind of published file.

    Attributes:
        kind: the command's first argument ("seqfakeformer").
        help: one line for ``--help``.
        file_help: what FILE is (the name the authors give it).
        add_arguments: adds the kind's own options to its sub-parser.
        read: ``read(path, args) -> ImportedRun``; raises :class:`PublishedFileError` for
            a file that is not what it should be.
    """
    kind: str
    help: str
    file_help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    read: Callable[[Path, argparse.Namespace], ImportedRun]


def importer(kind: str) -> Importer:
    """The importer registered for ``kind``."""
    from methods.base import resolve

    if kind not in IMPORTERS:
        raise UserError(f"unknown kind {kind!r}; kinds: {', '.join(sorted(IMPORTERS))}")
    return resolve(IMPORTERS[kind])


def load_published(path: Path) -> dict[str, Any]:
    """The published file as a dict, loaded safely (``weights_only=True``: tensors and
    plain containers only, nothing executed).

    Raises:
        PublishedFileError: missing, a folder, unreadable, or not a dict.
    """
    import torch

    path = Path(path)
    if path.is_dir():
        raise PublishedFileError(f"{path} is a folder; name the checkpoint file itself")
    if not path.is_file():
        raise PublishedFileError(f"{path} does not exist; download it from the authors' page "
                                 f"first (docs/published.md says where)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, not a torch file, a pickle that runs code
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise PublishedFileError(f"{path} cannot be read as a PyTorch checkpoint (is the "
                                 f"download complete?): {first}") from exc
    if not isinstance(obj, dict):
        raise PublishedFileError(f"{path} holds a {type(obj).__name__}, not a checkpoint dict")
    return obj


def pick_state(obj: Mapping[str, Any], path: Path, key: str) -> dict[str, Any]:
    """``obj[key]``, the state dict stored under ``key`` (prefixes ``module.`` left by
    DistributedDataParallel removed).

    Raises:
        PublishedFileError: the key is missing (the message lists those present).
    """
    state = obj.get(key)
    if not isinstance(state, Mapping):
        present = ", ".join(sorted(k for k in obj if isinstance(k, str))) or "none"
        raise PublishedFileError(f"{path} has no state dict under {key!r} (keys: {present})")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}


def check_state_dict(model: Any, state: Mapping[str, Any], path: Path) -> None:
    """Every key of ``model`` present in ``state`` with the same shape, and no key more.

    Raises:
        PublishedFileError: naming the first missing, unexpected or misshapen key (and how
            many there are).
    """
    import torch

    want = model.state_dict()
    missing = [k for k in want if k not in state]
    extra = [k for k in state if k not in want]
    bad = [k for k in want if k in state and (not isinstance(state[k], torch.Tensor)
                                              or tuple(state[k].shape) != tuple(want[k].shape))]
    if missing:
        raise PublishedFileError(f"{path}: key {missing[0]!r} is missing ({len(missing)} "
                                 f"missing); this is not the file this kind expects")
    if extra:
        raise PublishedFileError(f"{path}: unexpected key {extra[0]!r} ({len(extra)} "
                                 f"unexpected); this is not the file this kind expects")
    if bad:
        k = bad[0]
        got = tuple(state[k].shape) if isinstance(state[k], torch.Tensor) else type(state[k]).__name__
        raise PublishedFileError(f"{path}: key {k!r} has shape {got}, expected "
                                 f"{tuple(want[k].shape)} ({len(bad)} misshapen)")


def write_run(artifacts: Path, name: str, run: ImportedRun, path: Path, sha256: str) -> Path:
    """Write ``<artifacts>/runs/<name>/`` for an imported file, each file atomically and
    under the run's lock (a training or export of that run meanwhile is refused).

    ``checkpoint.pt`` has the layout training writes (``method``, ``model_spec``,
    ``model``, ``config``, ``extra``, ``finished``), so :func:`training.checkpoint.load_trained`
    and ``python -m export`` read it as any run; ``metrics`` is empty (nothing was
    measured here) and ``published`` holds :func:`published_record`.
    """
    import torch
    import yaml

    from runtime.artifacts import atomic_path, hold_run_lock, write_json_atomic
    from training.checkpoint import git_commit, save_checkpoint

    run_dir = Path(artifacts) / "runs" / name
    record = published_record(run, path, sha256)
    lock = hold_run_lock(run_dir)
    try:
        payload = {
            "method": run.method, "model_spec": run.model_spec,
            "model": {k: v.detach().cpu().contiguous() for k, v in run.state_dict.items()},
            "epoch": 0, "batch": 0, "global_step": 0, "config": run.config,
            "git_commit": git_commit(), "metrics": {}, "learned": None,
            "pretrained": f"the authors' published weights ({path.name}, sha256 {sha256[:12]})",
            "extra": {**run.extra, "published": record}, "finished": True,
            "torch_version": str(torch.__version__), "published": record,
        }
        save_checkpoint(run_dir / "checkpoint.pt", payload)
        with atomic_path(run_dir / "config.yaml") as tmp:
            tmp.write_text(yaml.safe_dump(run.config, sort_keys=False))
        write_json_atomic(run_dir / PUBLISHED_JSON, record)
        write_json_atomic(run_dir / "summary.json", {
            "method": run.method, "run_dir": str(run_dir),
            "checkpoint": str(run_dir / "checkpoint.pt"), "steps": 0, "train_seconds": 0.0,
            "metrics": {}, "interrupted": False, "git_commit": payload["git_commit"],
            "pretrained": payload["pretrained"], "learned": None, "at_chance": False,
            "published": record})
    finally:
        lock.close()
    return run_dir


def published_record(run: ImportedRun, path: Path, sha256: str) -> dict[str, Any]:
    """What the run records of the published file: its name and sha256, what the authors
    trained it on, and the authors' metrics under ``reported_by_authors`` (never measured
    here; ``measured_here`` says so)."""
    return {"file": path.name, "sha256": sha256, "source": run.source,
            "trained_on": run.trained_on,
            "reported_by_authors": dict(run.reported),
            "measured_here": "nothing: these are the authors' numbers on their test split",
            "imported_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            **run.details}


def read_record(run_dir: Path) -> dict[str, Any] | None:
    """The run's ``published.json`` (None for a run trained here)."""
    p = Path(run_dir) / PUBLISHED_JSON
    return json.loads(p.read_text()) if p.is_file() else None


def main(argv: list[str] | None = None) -> int:
    """``python -m export.published`` (:mod:`export.published.__main__`)."""
    from export.published.__main__ import main as command

    return command(argv)
