"""How an export becomes visible: every file under a fresh name, then one manifest switch.

An export never writes over a file the manifest names. Each of a model's files (the ONNX
file, its INT8 version, its sidecars, its retrieval gallery) is written under a name that
does not exist yet (:func:`fresh_name`: ``onnx/<run>.onnx``, else ``onnx/<run>.2.onnx``,
``onnx/<run>.3.onnx``, ...; the INT8 file and the sidecars take the ONNX file's stem), and
the model's new manifest entry names them all. :func:`commit_entry` then replaces the
manifest in one atomic rename, and only after that removes the files of the previous
entry that the new one no longer names. An export interrupted at any point before that
rename leaves the previous model served, with matching sha256, and :func:`discard`
removes what it had written; interrupted after it, the new model is served.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Iterable

from runtime.manifest import ManifestError, entry_paths, read_manifest, update_manifest


def fresh_name(artifacts: Path, base: str, suffix: str = "") -> str:
    """``base + suffix``, else ``base.2 + suffix``, ``base.3 + suffix``, ...: the first that
    does not exist in ``artifacts`` (relative to it)."""
    n = 1
    while True:
        rel = f"{base}{'' if n == 1 else f'.{n}'}{suffix}"
        if not (artifacts / rel).exists():
            return rel
        n += 1


def entry_files(entry: dict[str, Any]) -> set[str]:
    """The files and folders a manifest entry names (:func:`runtime.manifest.entry_paths`)."""
    return {str(rel) for rel in entry_paths(str(entry.get("name", "")), entry).values()}


def _inside(artifacts: Path, rel: str) -> Path | None:
    """``artifacts / rel`` when it lies inside ``artifacts``, links resolved (else None:
    never removed)."""
    root = artifacts.resolve()
    path = (artifacts / rel).resolve()
    return path if path != root and path.is_relative_to(root) else None


def _remove(artifacts: Path, rels: Iterable[str]) -> None:
    """Remove these files or folders of ``artifacts`` (missing ones are fine)."""
    for rel in rels:
        path = _inside(artifacts, rel)
        if path is None:
            continue
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _named(artifacts: Path) -> set[str]:
    """Every file or folder the current manifest names (none when there is no manifest)."""
    try:
        models = read_manifest(artifacts)["models"]
    except ManifestError:  # no readable manifest: it names nothing
        return set()
    return {f for e in models.values() for f in entry_files(e)}


def commit_entry(artifacts: Path, name: str, entry: dict[str, Any]) -> None:
    """Make ``entry`` the manifest's entry ``name`` (one atomic rename of the manifest),
    then remove the previous entry's files that no entry names any more."""
    artifacts = Path(artifacts)
    try:
        old = read_manifest(artifacts)["models"].get(name) or {}
    except ManifestError:  # no readable manifest yet: nothing to replace
        old = {}
    update_manifest(artifacts, name, entry)
    _remove(artifacts, entry_files(old) - _named(artifacts))


def discard(artifacts: Path, rels: Iterable[str]) -> None:
    """Remove the files an export wrote before it stopped, except any the manifest names."""
    artifacts = Path(artifacts)
    _remove(artifacts, set(rels) - _named(artifacts))
