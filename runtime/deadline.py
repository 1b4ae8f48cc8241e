"""Per-request time limits that really stop the work.

A request runs under a :class:`Deadline` (``with using(deadline): ...``, set by the app's
request guard). Long steps call :func:`check` between stages, and :meth:`runtime.engine.
OnnxModel.run` hands onnxruntime a ``RunOptions`` that :meth:`Deadline.cancel` terminates,
so a request stopped at its limit does not keep a core busy after its answer was given.
Without a deadline (the CLI, training, tests) nothing is limited. torch-free.
"""
from __future__ import annotations

import contextlib
import contextvars
import threading
import time
from typing import Any, Iterator


class RequestTimeout(RuntimeError):
    """A request ran past its time limit and was stopped; the message is for the user."""

    user_error = True


class Deadline:
    """The end of one request's time.

    Args:
        seconds: how long the request may run from now.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = float(seconds)
        self.expires = time.monotonic() + self.seconds
        self.cancelled = False
        self._runs: set[Any] = set()
        self._lock = threading.Lock()

    def remaining(self) -> float:
        return self.expires - time.monotonic()

    def expired(self) -> bool:
        return self.cancelled or self.remaining() <= 0

    def check(self) -> None:
        """Raise :class:`RequestTimeout` once the time is over or the request was stopped."""
        if self.expired():
            raise RequestTimeout(f"the request was stopped at its time limit of "
                                 f"{self.seconds:g} s")

    def cancel(self) -> None:
        """Stop the request: running onnxruntime calls are terminated, later checks raise."""
        with self._lock:
            self.cancelled = True
            for opts in self._runs:
                opts.terminate = True

    @contextlib.contextmanager
    def watch(self, run_options: Any) -> Iterator[None]:
        """Register an onnxruntime ``RunOptions`` for the duration of one ``session.run``;
        a terminated run raises :class:`RequestTimeout`."""
        with self._lock:
            if self.cancelled:
                run_options.terminate = True
            self._runs.add(run_options)
        try:
            yield
        except Exception:
            if self.cancelled:
                raise RequestTimeout("the request was stopped at its time limit") from None
            raise
        finally:
            with self._lock:
                self._runs.discard(run_options)


_CURRENT: contextvars.ContextVar[Deadline | None] = contextvars.ContextVar(
    "replens_deadline", default=None)


def current() -> Deadline | None:
    """The deadline of the request being served, or None."""
    return _CURRENT.get()


@contextlib.contextmanager
def using(deadline: Deadline) -> Iterator[Deadline]:
    """Run the block under ``deadline``."""
    token = _CURRENT.set(deadline)
    try:
        yield deadline
    finally:
        _CURRENT.reset(token)


def check() -> None:
    """:meth:`Deadline.check` of the current request (nothing without one)."""
    d = _CURRENT.get()
    if d is not None:
        d.check()
