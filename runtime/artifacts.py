"""Where artifacts live, and atomic writes for everything written there.

Artifacts (checkpoints, ONNX files, indexes, manifests) go to one folder:
``--artifacts`` flag > ``REPLENS_ARTIFACTS`` environment variable > ``./artifacts``.
Nothing here imports torch.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

ENV_VAR = "REPLENS_ARTIFACTS"
DEFAULT_DIR = "artifacts"


class ArtifactWriteError(OSError):
    """Raised when an artifact cannot be written (read-only folder, disk full, ...)."""

    user_error = True  # disk full, read-only folder: runtime.cli says so in one line


def artifacts_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """Return the artifacts folder (not created).

    Args:
        override: explicit folder (from a ``--artifacts`` flag); wins over the
            ``REPLENS_ARTIFACTS`` environment variable and the default ``./artifacts``.
    """
    if override:
        return Path(override).expanduser()
    env = os.environ.get(ENV_VAR)
    return Path(env).expanduser() if env else Path(DEFAULT_DIR)


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success rename it over ``target``.

    If the body raises (or the process dies) the old ``target`` is left untouched and the
    temporary file is removed. Errors from the file system are re-raised as
    :class:`ArtifactWriteError` with a message that names the folder.
    """
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
    except OSError as exc:
        raise ArtifactWriteError(
            f"cannot write to {target.parent}: {exc.strerror or exc}. "
            f"Check that the folder is writable and the disk has space, or choose another "
            f"folder with --artifacts or {ENV_VAR}."
        ) from exc
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o644 & ~umask)
        os.replace(tmp_path, target)
    except OSError as exc:
        tmp_path.unlink(missing_ok=True)
        raise ArtifactWriteError(
            f"writing {target} failed: {exc.strerror or exc}. The previous file, if any, "
            f"is unchanged."
        ) from exc
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_report(out: str | os.PathLike[str], result: Any, markdown: str,
                 echo: bool = True) -> None:
    """A measurement's report: ``<out>.json`` (the result) and ``<out>.md`` (its rendering),
    each written atomically; the Markdown is printed too unless ``echo`` is False."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out.with_suffix(".json"), result)
    write_bytes_atomic(out.with_suffix(".md"), markdown.encode())
    if echo:
        print(markdown, flush=True)
