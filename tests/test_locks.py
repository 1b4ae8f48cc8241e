"""The artifacts folder's locks (runtime.artifacts.hold_lock, on filelock) and the build's
worker supervision (app.build reads whether its builder lives, with psutil)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from runtime.artifacts import Locked, hold_lock


def test_a_held_lock_is_refused_naming_its_holder_and_free_once_closed(tmp_path):
    path = tmp_path / "build" / "lock"
    held = hold_lock(path, "the build lock", "wait for it")
    with pytest.raises(Locked, match=rf"the build lock is in use by another process "
                                     rf"\(pid {os.getpid()} on .*`.*`, since .*\); wait for it"):
        hold_lock(path, "the build lock", "wait for it")
    assert json.loads(path.read_text())["pid"] == os.getpid()   # the refusal kept the record
    held.close()
    assert held.closed
    with hold_lock(path, "the build lock", "wait for it") as again:
        assert not again.closed
    assert again.closed


def test_a_builder_that_died_unreaped_is_no_longer_building(tmp_path):
    """A zombie (killed, not yet reaped by the server that started it) counts as gone: its
    runs read ``interrupted`` and the build as not running."""
    from app.build import Status, read_status

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        status = Status(tmp_path, [], smoke=True)
        status.data["pid"] = child.pid
        status.data["runs"] = [{"run": "toy", "method": "toy", "state": "training",
                                "seconds_estimate": 5.0, "started": time.time(),
                                "ended": None, "error": None}]
        status.write()
        assert read_status(tmp_path)["running"] is True
        child.kill()
        time.sleep(0.5)                          # dead, not reaped: a zombie of this process
        now = read_status(tmp_path)
        assert now["running"] is False and now["runs"][0]["state"] == "interrupted"
    finally:
        child.kill()
        child.wait()
