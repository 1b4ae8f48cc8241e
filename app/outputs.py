"""Files that answers refer to: written once, atomically, under a folder unique to the answer.

Gradio serves an answer's images and downloads from its cache. Left to itself it stores a
returned numpy image under a path made of the image's *content* hash and writes it in
place, so two concurrent requests with byte-identical pictures rewrite one file while the
first one is being streamed (a client sees "peer closed connection", a browser a broken
image). Here every picture and JSON download of an answer is written

* under ``<root>/<answer id>/`` (a new folder per answer: nothing is ever rewritten), with
* a temp file renamed into place (a reader sees the whole file or none), and the root lives
  inside Gradio's cache folder, so Gradio serves the file where it is instead of copying it.

Each answer folder's name ends with a keyed hash of the login token of the request that made
it (:func:`owner_tag`; ``public`` when the server has no login), which :mod:`app.guard`
checks before a file is served: another login cannot fetch it, even with its URL; the rest
of the name holds 122 random bits. Folders are created readable by their owner only (0700).

The store is bounded: when an answer is created, answers older than ``max_age_s`` and the
oldest beyond ``max_answers`` are deleted (defaults in ``app/serve.yaml``:
``answer_cache_answers``, ``answer_cache_age_s``). A full disk (ENOSPC) or any other write
failure gives :class:`OutputError` with a clear message and leaves no half-written file.
"""
from __future__ import annotations

import errno
import hashlib
import hmac
import itertools
import json
import os
import secrets
import shutil
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

PUBLIC = "public"  # the owner of answers made without a login
_OWNER_KEY = secrets.token_bytes(32)  # per process: a login token lives as long as its server


def owner_tag(token: str | None) -> str:
    """The owner part of an answer folder's name: a keyed hash of a login token."""
    if not token:
        return PUBLIC
    return hmac.new(_OWNER_KEY, token.encode(), hashlib.sha256).hexdigest()[:32]


def owner_of(folder_name: str) -> str:
    """The owner part of an answer folder's name (see :meth:`OutputStore.new`)."""
    return folder_name.rsplit("-", 1)[-1]


def login_token(cookies: Any, cookie_id: str | None) -> str | None:
    """The Gradio login token among a request's cookies (None without a login)."""
    if not cookie_id:
        return None
    return cookies.get(f"access-token-{cookie_id}") or \
        cookies.get(f"access-token-unsecure-{cookie_id}")


def current_owner() -> str:
    """The owner tag of the Gradio request being answered; ``public`` outside a request or
    without a login."""
    context = sys.modules.get("gradio.context")  # no Gradio loaded: no request to answer
    if context is None:
        return PUBLIC
    request = getattr(context.LocalContext.request.get(None), "request", None)
    if request is None:
        return PUBLIC
    app = request.scope.get("app") if hasattr(request, "scope") else None
    return owner_tag(login_token(getattr(request, "cookies", {}), getattr(app, "cookie_id", None)))


class OutputError(RuntimeError):
    """An answer's file could not be written (disk full, read-only, ...); the message is for
    the user and the server log alike."""

    user_error = True  # runtime.cli: one line, exit 2


def default_root() -> Path:
    """``<Gradio's cache>/replens-answers`` (``GRADIO_TEMP_DIR`` or the system temp folder)."""
    import tempfile

    base = os.environ.get("GRADIO_TEMP_DIR") or str(Path(tempfile.gettempdir()) / "gradio")
    return Path(base) / "replens-answers"


def _describe(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "the server's disk is full (no space left on device)"
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return "the server may not write its answer files (read-only or permission denied)"
    return f"the server could not write its answer files ({exc.strerror or exc})"


class Answer:
    """The files of one answer, in their own folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._n = itertools.count(1)

    def _write(self, name: str, write: Any) -> str:
        """``write(tmp_path)`` then rename to ``folder/name``; returns the final path."""
        final = self.folder / f"{next(self._n):02d}-{name}"
        tmp = self.folder / f".{final.name}.tmp"
        try:
            write(tmp)
            os.replace(tmp, final)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise OutputError(f"{_describe(exc)}; the answer could not be saved. The app is "
                              f"still running: try again once space is freed.") from exc
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return str(final)

    def image(self, image: np.ndarray | None, name: str) -> str | None:
        """A picture (H, W, 3|4 uint8 or H, W uint8) as ``<name>.png``; None stays None."""
        if image is None:
            return None
        from PIL import Image

        arr = np.ascontiguousarray(image)
        if arr.dtype != np.uint8:
            arr = np.clip(arr, 0, 255).astype(np.uint8)
        return self._write(f"{name}.png", lambda p: Image.fromarray(arr).save(p, format="PNG"))

    def json(self, report: dict[str, Any], name: str) -> str:
        """A JSON download ``<name>.json`` (indented; non-JSON values as strings)."""
        text = json.dumps(report, indent=2, default=str)
        return self._write(f"{name}.json", lambda p: Path(p).write_text(text))

    def text(self, text: str, name: str) -> str:
        """A text download ``<name>`` (CSV, HTML: the name carries the extension)."""
        return self._write(name, lambda p: Path(p).write_text(text, encoding="utf-8"))

    def gallery(self, tiles: list[tuple[np.ndarray, str]], name: str) -> list[tuple[str, str]]:
        """Gallery tiles (image, caption) with each image written as a file."""
        return [(self.image(img, f"{name}-{i:02d}"), cap) for i, (img, cap) in enumerate(tiles, 1)]


class OutputStore:
    """A bounded folder of answers.

    Args:
        root: the folder (created); keep it inside Gradio's cache so files are served in place.
        max_answers: answers kept; the oldest beyond are deleted.
        max_age_s: answers older than this are deleted.
    """

    def __init__(self, root: Path, max_answers: int, max_age_s: float) -> None:
        self.root = Path(root)
        self.max_answers, self.max_age_s = max_answers, max_age_s
        self._lock = threading.Lock()
        self.after_prune: Any = None  # called after each prune (the server bounds uploads)

    def new(self, endpoint: str) -> Answer:
        """A new answer folder ``<time>-<endpoint>-<random>-<owner>`` (0700); prunes the
        store first."""
        self.prune()
        folder = self.root / f"{time.time_ns()}-{endpoint}-{uuid.uuid4().hex}-{current_owner()}"
        try:
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            folder.mkdir(mode=0o700)
        except OSError as exc:
            raise OutputError(f"{_describe(exc)}; the answer could not be saved. The app is "
                              f"still running.") from exc
        return Answer(folder)

    def answers(self) -> list[Path]:
        """Answer folders, oldest first."""
        if not self.root.is_dir():
            return []
        return sorted((p for p in self.root.iterdir() if p.is_dir()), key=lambda p: p.name)

    def prune(self) -> int:
        """Delete answers beyond the bound; returns how many were deleted."""
        with self._lock:
            folders = self.answers()
            now_ns = time.time_ns()
            old = []
            for p in folders:
                try:
                    born = int(p.name.split("-", 1)[0])
                except ValueError:
                    continue
                if (now_ns - born) / 1e9 > self.max_age_s:
                    old.append(p)
            gone = set(old)
            keep = [p for p in folders if p not in gone]
            surplus = keep[:max(0, len(keep) - self.max_answers + 1)]  # room for the new one
            for p in old + surplus:
                shutil.rmtree(p, ignore_errors=True)
        if self.after_prune is not None:
            self.after_prune()
        return len(old) + len(surplus)
