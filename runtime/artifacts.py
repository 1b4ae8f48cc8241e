"""Where artifacts live, and atomic writes for everything written there.

Artifacts (checkpoints, ONNX files, indexes, manifests) go to one folder:
``--artifacts`` flag > ``REPLENS_ARTIFACTS`` environment variable > ``./artifacts``.
Nothing here imports torch.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import filelock
import psutil

ENV_VAR = "REPLENS_ARTIFACTS"
DEFAULT_DIR = "artifacts"


class ArtifactWriteError(OSError):
    """Raised when an artifact cannot be written (read-only folder, disk full, ...)."""

    user_error = True  # disk full, read-only folder: runtime.cli says so in one line


class Locked(RuntimeError):
    """Another live process holds a lock of the artifacts folder (the message names it)."""

    user_error = True  # runtime.cli: one line, exit 2


def _command_line() -> str:
    """This process's command line, on one line."""
    try:
        line = " ".join(psutil.Process().cmdline())
    except psutil.Error:
        line = " ".join([sys.executable, *sys.argv])
    return " ".join(line.split())[:300]  # one line, whatever the arguments hold


def _holder(text: str) -> str:
    """Who holds a lock, in words, from what :func:`hold_lock` wrote into its file."""
    try:
        info = json.loads(text)
        return (f"pid {info['pid']} on {info['host']}, `{info['command']}`, since "
                f"{info['since']}")
    except (ValueError, TypeError, KeyError):
        return f"pid {text.strip() or '?'}"


class HeldLock:
    """A lock of the artifacts folder that this process holds, until :meth:`close` or the
    end of the process (a ``with`` block closes it too)."""

    def __init__(self, lock: filelock.BaseFileLock) -> None:
        self._lock = lock

    @property
    def closed(self) -> bool:
        return not self._lock.is_locked

    def close(self) -> None:
        """Release the lock (the file stays, saying who held it last)."""
        self._lock.release(force=True)

    def __enter__(self) -> "HeldLock":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def hold_lock(path: str | os.PathLike[str], what: str, advice: str) -> HeldLock:
    """Hold the exclusive lock ``path`` (:class:`filelock.FileLock`, an ``flock`` on Unix)
    until the returned lock is closed or this process ends; the file records the holder
    (pid, host, command, since when).

    The kernel drops the lock of a process that died, so a lock left behind by a killed
    process is taken over; its file only says who held it last. A second hold of a held
    lock is refused in the same process too.

    Args:
        what: what the lock guards, for the message ("run 'qmil' (/art/runs/qmil)").
        advice: what to do when it is held ("wait for it to finish or stop it").

    Raises:
        Locked: a live process holds it; the message names that process.
    """
    path = Path(path)
    lock = filelock.FileLock(path, timeout=0)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock.acquire()
    except filelock.Timeout:
        try:
            holder = _holder(path.read_text())
        except OSError:
            holder = "pid ?"
        raise Locked(f"{what} is in use by another process ({holder}); {advice}") from None
    except OSError as exc:
        raise ArtifactWriteError(f"cannot create the lock {path}: {exc.strerror or exc}. Check "
                                 f"that the folder is writable.") from exc
    with open(path, "r+") as fh:  # the lock is the flock; the file's text says who holds it
        fh.truncate()
        fh.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                             "command": _command_line(),
                             "since": time.strftime("%Y-%m-%d %H:%M:%S %Z")}) + "\n")
    return HeldLock(lock)


RUN_LOCK = "lock"


def hold_run_lock(run_dir: str | os.PathLike[str]) -> HeldLock:
    """The lock of one training run (``<run_dir>/lock``): one process at a time trains or
    exports a run (:func:`hold_lock`).

    Raises:
        Locked: another live process trains or exports it (named in the message).
    """
    run_dir = Path(run_dir)
    return hold_lock(run_dir / RUN_LOCK, f"run {run_dir.name!r} ({run_dir})",
                     "one process at a time trains or exports a run: wait for that one to end "
                     "(or stop it), or train under another name with --set run.name=NAME")


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
def atomic_path(target: str | os.PathLike[str], mode: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success rename it over ``target``, with
    permissions ``mode`` (default: 0644 less the umask). The temporary file is 0600 while
    it is written.

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
        os.chmod(tmp_path, 0o644 & ~umask if mode is None else mode)
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


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes,
                       mode: int | None = None) -> None:
    """Write ``data`` to ``path`` atomically (``mode``: as :func:`atomic_path`)."""
    with atomic_path(path, mode) as tmp:
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
