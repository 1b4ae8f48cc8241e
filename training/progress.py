"""A training run's progress, for whoever watches it from another process (the app's
build queue): ``<run dir>/progress.json``, rewritten atomically at most once a second and
at every change of phase.

Fields: ``phase`` (preparing, training, evaluating, finished, interrupted), ``epoch`` (1-based)
and ``epochs``, ``step`` and ``total_steps``, ``seconds_per_step`` (measured in this process),
``eval_seconds`` (mean of the evaluations so far), ``elapsed_s`` (since the process started
the run), ``eta_s`` (remaining steps times the measured step time, plus the remaining
evaluations), ``last`` (the last loss, and the last evaluation's metrics), ``updated``.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from runtime.artifacts import write_json_atomic

PROGRESS_NAME = "progress.json"


class Progress:
    """Writes ``progress.json`` of one run (main process only; ``enabled=False``: nothing)."""

    def __init__(self, run_dir: Path, enabled: bool = True, every_s: float = 1.0) -> None:
        self.path = Path(run_dir) / PROGRESS_NAME
        self.enabled, self.every_s = enabled, every_s
        self.t0 = time.time()
        self._last_write = 0.0
        self._first_step: tuple[int, float] | None = None  # (step, time) of the first step here
        self._evals: list[float] = []
        self.state: dict[str, Any] = {"phase": "preparing", "epoch": 0, "epochs": 0, "step": 0,
                                      "total_steps": 0, "last": {}}

    def eval_time(self, seconds: float) -> None:
        self._evals.append(seconds)

    def update(self, force: bool = False, **fields: Any) -> None:
        """Merge ``fields`` and write when a second has passed (or ``force``)."""
        now = time.time()
        if "step" in fields and self._first_step is None:
            self._first_step = (int(fields["step"]), now)
        self.state.update(fields)
        if not self.enabled:
            return
        if not force and now - self._last_write < self.every_s:
            return
        self._last_write = now
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.path, self._render(now))

    def _render(self, now: float) -> dict[str, Any]:
        s = dict(self.state)
        sps = None
        if self._first_step is not None and s["step"] > self._first_step[0]:
            sps = (now - self._first_step[1]) / (s["step"] - self._first_step[0])
        eval_s = sum(self._evals) / len(self._evals) if self._evals else None
        eta = None
        if sps is not None and s["phase"] in ("training", "evaluating"):
            left_steps = max(0, s["total_steps"] - s["step"])
            eta = left_steps * sps + int(s.get("evals_left", 0)) * (eval_s or 0.0)
        elif s["phase"] == "finished":
            eta = 0.0
        s.update(seconds_per_step=None if sps is None else round(sps, 4),
                 eval_seconds=None if eval_s is None else round(eval_s, 2),
                 elapsed_s=round(now - self.t0, 1), eta_s=None if eta is None else round(eta, 1),
                 updated=now)
        return s
