"""scripts/run.sh on a machine without the training stack: the page comes up after the serving
set is installed, and the build worker waits for the install running behind it."""
from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

from app import build

ROOT = Path(__file__).resolve().parents[1]


def test_the_build_waits_for_the_install_and_shows_it(tmp_path, monkeypatch):
    install = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1.5)"])
    monkeypatch.setenv(build.INSTALL_PID_VAR, str(install.pid))
    seen: list[str] = []

    def watch() -> None:  # what the page reads while the install runs
        for _ in range(40):
            st = build.read_status(tmp_path)
            if st:
                seen.extend(build.describe_run(r) for r in st["runs"])
                return
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    t0 = time.time()
    reaper = threading.Thread(target=install.wait)  # the install ends (reaped as run.sh's is)
    reaper.start()
    assert build.wait_for_install(tmp_path, smoke=True, poll_s=0.05) is True
    waited = time.time() - t0
    watcher.join()
    reaper.join()
    assert waited >= 1.0, "the build started before the install ended"
    assert seen and all("waiting for the training stack (torch) to finish installing" in line
                        for line in seen), seen


def test_no_install_running_means_no_wait(tmp_path, monkeypatch):
    monkeypatch.setenv(build.INSTALL_PID_VAR, "999999999")  # no such process
    assert build.installing() is None
    t0 = time.time()
    assert build.wait_for_install(tmp_path, smoke=True) is True  # torch is installed here
    assert time.time() - t0 < 1.0 and build.read_status(tmp_path) is None


def test_run_sh_installs_the_serving_set_first_and_the_rest_behind():
    text = (ROOT / "scripts" / "run.sh").read_text()
    serve = text.index("setup.sh --serve")
    behind = text.index("bash scripts/setup.sh > .venv/install.log 2>&1 &")
    start = text.index("exec .venv/bin/python -m app")
    assert serve < behind < start and build.INSTALL_PID_VAR in text
    assert subprocess.run(["bash", "-n", str(ROOT / "scripts" / "run.sh")]).returncode == 0
    assert subprocess.run(["bash", "-n", str(ROOT / "scripts" / "setup.sh")]).returncode == 0
