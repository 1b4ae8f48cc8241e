"""The machine a measurement ran on, as reports record it (read from the run, never typed)."""
from __future__ import annotations

import platform
from pathlib import Path


def cpu_name() -> str:
    """The CPU's model name as /proc/cpuinfo gives it, else what :mod:`platform` knows."""
    try:
        return next(line.split(":", 1)[1].strip() for line in
                    Path("/proc/cpuinfo").read_text().splitlines()
                    if line.lower().startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()
