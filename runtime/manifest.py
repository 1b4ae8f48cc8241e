"""The artifacts manifest: what ``export`` wrote and what the app may serve.

``<artifacts>/manifest.json`` holds one entry per exported model (labels, preprocessing,
input/output names and shapes, training data and config, test metrics, sha256, opset).
An entry may also hold an INT8 file (``int8``: file, sha256, speeds, metrics, reason) and
``precision``, which of the two files the app serves (:func:`served_file`).
numpy-free and torch-free: export writes it, the app reads it.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from runtime.artifacts import write_json_atomic

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
MODEL_NAMES = ("seqfake", "qmil", "dcl", "abcnorm")


class ManifestError(RuntimeError):
    """The manifest is missing, malformed, from another version, or disagrees with a file."""

    user_error = True  # runtime.cli: a one-line message, exit 2


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


PRECISIONS = ("fp32", "int8")


def inside(folder: str | Path, rel: Any, key: str, where: str | Path | None = None,
           fix: str = "re-export with `python -m export --all`") -> Path:
    """``folder / rel`` for a path read from the manifest (or another record of the
    artifacts), refused unless it stays inside ``folder``: relative, without ``..``;
    ``where`` names the record (default: the manifest), ``fix`` says what to do.

    Raises:
        ManifestError: one line naming ``key`` (e.g. ``models.dcl.sidecars..head.npz.file``).
    """
    text = str(rel)
    parts = PurePosixPath(text.replace("\\", "/")).parts
    if (not text or PurePosixPath(text).is_absolute() or PureWindowsPath(text).is_absolute()
            or PureWindowsPath(text).drive or ".." in parts):
        raise ManifestError(
            f"{key} = {text!r} in {where or manifest_path(folder)} points outside the folder "
            f"{folder}: paths there must be relative to it, without '..'; {fix}")
    return Path(folder) / text


def entry_paths(name: str, entry: dict[str, Any]) -> dict[str, Any]:
    """Every path of a manifest entry by its key: ``file``, ``int8.file``, each sidecar's
    ``file`` and ``gallery.dir``."""
    key = f"models.{name}"
    out: dict[str, Any] = {}
    if "file" in entry:
        out[f"{key}.file"] = entry["file"]
    if isinstance(entry.get("int8"), dict) and "file" in entry["int8"]:
        out[f"{key}.int8.file"] = entry["int8"]["file"]
    for suffix, side in (entry.get("sidecars") or {}).items():
        if isinstance(side, dict) and "file" in side:
            out[f"{key}.sidecars.{suffix}.file"] = side["file"]
    if isinstance(entry.get("gallery"), dict) and entry["gallery"].get("dir"):
        out[f"{key}.gallery.dir"] = entry["gallery"]["dir"]
    return out


def check_entry_paths(artifacts: str | Path, name: str, entry: dict[str, Any]) -> None:
    """Refuse an entry any of whose paths leaves the artifacts folder (:func:`inside`)."""
    for key, rel in entry_paths(name, entry).items():
        inside(artifacts, rel, key)


def served_file(entry: dict[str, Any], precision: str | None = None) -> tuple[str, str, str]:
    """(file, sha256, precision) of the ONNX file to load for ``entry``.

    ``precision`` None: the one the manifest says the app serves (``entry["precision"]``;
    fp32 when absent, as in manifests written before INT8 export). "fp32": the exported
    float file (``file``, ``sha256``). "int8": the quantised file (``int8.file``,
    ``int8.sha256``); a KeyError when the entry has none.
    """
    want = precision or str(entry.get("precision", "fp32"))
    if want not in PRECISIONS:
        raise ValueError(f"precision {want!r}: expected one of {', '.join(PRECISIONS)}")
    if want == "fp32":
        return str(entry["file"]), str(entry.get("sha256")), "fp32"
    q = entry.get("int8") or {}
    if "file" not in q:
        raise KeyError("the manifest names int8 as served but lists no int8 file; "
                       "re-export with `python -m export --all`")
    return str(q["file"]), str(q.get("sha256")), "int8"


def trained_on(entry: dict[str, Any] | None) -> str | None:
    """What a manifest entry's model was trained on, in words (its domain check's record,
    else the data description its training plug-in gave); None when neither is recorded."""
    entry = entry or {}
    extra = entry.get("extra", {})
    return ((entry.get("domain") or {}).get("trained_on") or extra.get("dataset")
            or extra.get("data") or None)


def manifest_path(artifacts: str | Path) -> Path:
    return Path(artifacts) / MANIFEST_NAME


def read_manifest(artifacts: str | Path) -> dict[str, Any]:
    """Read and validate ``<artifacts>/manifest.json``.

    Raises:
        ManifestError: missing file, invalid JSON, or another format version.
    """
    path = manifest_path(artifacts)
    if not path.is_file():
        raise ManifestError(f"no manifest at {path}: build the default models with `python -m "
                            f"app --build-only --artifacts {Path(artifacts)}` (runs you trained "
                            f"yourself: `python -m export --all`)")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ManifestError(f"manifest {path} is not valid JSON at line {exc.lineno}, column "
                            f"{exc.colno} ({exc.msg}): fix the file, or delete it and rebuild "
                            f"with `python -m app --build-only --artifacts {Path(artifacts)}`"
                            ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"manifest {path} cannot be read ({exc}): check the file") from exc
    version = data.get("format_version") if isinstance(data, dict) else None
    if version != FORMAT_VERSION:
        raise ManifestError(
            f"manifest {path} has format version {version!r}; this version of the app reads "
            f"version {FORMAT_VERSION}. Re-export with `python -m export --all`.")
    if not isinstance(data.get("models"), dict):
        raise ManifestError(f"manifest {path} has no 'models' section")
    return data


def update_manifest(artifacts: str | Path, name: str, entry: dict[str, Any]) -> dict[str, Any]:
    """Add or replace one model's entry, writing the manifest atomically (one rename).

    Processes that update the manifest at once (exports of two runs) take turns on
    ``<artifacts>/.manifest.lock``, so neither loses the other's entry.
    """
    import fcntl

    path = manifest_path(artifacts)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(".manifest.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        try:
            data = read_manifest(artifacts)
        except ManifestError:
            data = {"format_version": FORMAT_VERSION, "models": {}}
        data["models"][name] = entry
        write_json_atomic(path, data)
    return data
