"""The first run, end to end (`python -m app` on a fresh artifacts folder, smoke budgets):
the page answers while the worker still builds, with the queue on the page; a tab answers
once its model lands, without a restart; a failing build leaves the others working; a
killed worker is resumed on the next start; Ctrl-C (SIGTERM) stops server and worker
cleanly and the interrupted training resumes; a second builder on the same folder is
refused by the lock."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

METHODS = "tests.build_methods:BROKEN,tests.build_methods:SLOW"
ONLY = "abcnorm,brokenline,slowline"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    return {**os.environ, "REPLENS_METHODS": METHODS, "GRADIO_ANALYTICS_ENABLED": "False",
            "PYTHONUNBUFFERED": "1"}


def _start(art: Path, port: int, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "app", "--smoke", "--artifacts", str(art),
                             "--port", str(port), "--only", ONLY],
                            stdout=open(log, "ab"), stderr=subprocess.STDOUT, env=_env())


def _wait(cond, timeout: float, what: str, step: float = 0.5):
    t0 = time.time()
    while time.time() - t0 < timeout:
        got = cond()
        if got:
            return got
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _client(port: int, proc: subprocess.Popen, log: Path, timeout: float = 90):
    from gradio_client import Client

    def up():
        if proc.poll() is not None:
            raise AssertionError(f"app exited {proc.returncode}: {log.read_text()[-3000:]}")
        try:
            return Client(f"http://127.0.0.1:{port}/", verbose=False)
        except Exception:  # noqa: BLE001 - not up yet
            return None
    return _wait(up, timeout, "the page")


def _run_state(status: dict, run: str) -> dict:
    return next(r for r in status["build"]["runs"] if r["run"] == run)


def _classify(client, art):
    from gradio_client import handle_file
    from PIL import Image

    img = art.parent / "query.png"
    if not img.exists():
        Image.new("L", (28, 28), 90).save(img)
    return client.predict(handle_file(str(img)), "", api_name="/classify")


def _stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 120) -> int:
    proc.send_signal(sig)
    return proc.wait(timeout=timeout)


def test_first_run_serves_at_once_builds_behind_and_resumes(tmp_path):
    from gradio_client.exceptions import AppError

    art, log = tmp_path / "art", tmp_path / "app.log"
    port = _port()
    t0 = time.time()
    app = _start(art, port, log)
    try:
        client = _client(port, app, log)
        up_s = time.time() - t0
        st = client.predict(api_name="/status")
        assert st["build"]["running"], st["build"]
        assert {r["run"] for r in st["build"]["runs"]} == set(ONLY.split(","))
        # the classifier's tab says what is happening until its model lands
        if _run_state(st, "abcnorm")["state"] != "ready":
            with pytest.raises(AppError, match="is being built|waiting to be built|training abcnorm"):
                _classify(client, art)
        _screenshot_shows_the_queue(port, tmp_path / "first_run.png")

        # a second builder on the same folder is refused by the lock
        other = subprocess.run([sys.executable, "-m", "app.build", "--smoke", "--artifacts",
                                str(art), "--only", "abcnorm"], capture_output=True, text=True,
                               env=_env(), timeout=120)
        assert other.returncode == 3, other.stdout + other.stderr
        assert "already building" in other.stdout

        # the tab answers once its model is exported, in the same server process
        top = _wait(lambda: _try(lambda: _classify(client, art)), 300, "abcnorm to answer")[3]
        assert top["abcnorm"]["top"]
        # the failing build is reported in its row; the classifier keeps answering
        failed = _wait(lambda: (s := client.predict(api_name="/status")) and
                       _run_state(s, "brokenline")["state"] == "failed" and s, 300, "brokenline to fail")
        assert "does not exist" in _run_state(failed, "brokenline")["error"]
        assert _classify(client, art)[3]["abcnorm"]["top"] == top["abcnorm"]["top"]

        # kill the worker (and its training) mid-run: the page says so; the next start resumes
        prog = art / "runs" / "slowline" / "progress.json"
        _wait(lambda: prog.is_file() and json.loads(prog.read_text()).get("step", 0) >= 6
              and (art / "runs" / "slowline" / "checkpoint.pt").is_file(), 300, "slowline to train")
        worker_pid = client.predict(api_name="/status")["build"]["pid"]
        os.killpg(worker_pid, signal.SIGKILL)
        _wait(lambda: _run_state(client.predict(api_name="/status"), "slowline")["state"]
              == "interrupted", 30, "the killed build to show")
        assert _stop(app) == 0  # SIGTERM: the server stops cleanly
    finally:
        if app.poll() is None:
            app.kill()

    # second start: the killed run resumes from its checkpoint; stop it cleanly mid-run
    app = _start(art, port, log)
    try:
        client = _client(port, app, log)
        _wait(lambda: prog.is_file() and json.loads(prog.read_text()).get("step", 0) >= 12,
              120, "slowline to resume")
        step_before = json.loads(prog.read_text())["step"]
        assert _stop(app, signal.SIGTERM) == 0  # stops server and worker; training checkpoints
    finally:
        if app.poll() is None:
            app.kill()
    text = log.read_text()
    assert "--resume" in text and "[train] resuming from" in text
    assert "stopping after this step with a resumable checkpoint" in text
    assert not (art / "runs" / "slowline" / "summary.json").is_file()

    # third start: finishes the run; everything finished is kept (abcnorm is not retrained)
    app = _start(art, port, log)
    try:
        client = _client(port, app, log)
        done = _wait(lambda: (s := client.predict(api_name="/status")) and
                     _run_state(s, "slowline")["state"] == "ready" and s, 180, "slowline to finish")
        assert _run_state(done, "abcnorm")["state"] == "ready"
        summary = json.loads((art / "runs" / "slowline" / "summary.json").read_text())
        assert summary["steps"] == 40 and step_before < 40
        assert log.read_text().count("[build] training abcnorm") == 1
    finally:
        _stop(app)
    timings = json.loads((art / "build" / "timings.json").read_text())
    assert {"abcnorm smoke", "slowline smoke"} <= set(timings)
    assert up_s < 60, f"the page took {up_s:.0f} s to come up"


def _try(fn):
    try:
        return fn()
    except Exception:  # noqa: BLE001 - not ready yet
        return None


def _screenshot_shows_the_queue(port: int, path: Path) -> None:
    """The page, in Chromium, shows the build queue (skipped where no browser is installed)."""
    from tests.test_browser import CHROMIUM, FLAGS

    if not Path(CHROMIUM).exists():
        return
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS[1:], headless=True)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto(f"http://127.0.0.1:{port}/", wait_until="networkidle")
        panel = page.locator("#build-status")
        panel.wait_for(state="visible", timeout=30_000)
        text = panel.inner_text()
        assert "Building the default models" in text and "abcnorm" in text
        page.screenshot(path=str(path), full_page=False)
        browser.close()


def test_the_default_build_leaves_the_optional_runs_out_and_lists_them(tmp_path):
    """The first build is one default model per tab, cheapest first; the Seq-FaceAttr model,
    the SeqFakeFormer baseline and the CE baseline are built on request only (``--only``),
    and the build panel says how."""
    from app.build import optional_runs, plan
    from app.ui import build_markdown

    items = plan(tmp_path)
    names = [it.run for it in items]
    assert {"seqfake_attr", "seqfakeformer", "abcnorm_ce"} <= set(optional_runs())
    assert not set(names) & set(optional_runs())
    assert {"seqfake", "qmil", "dcl", "abcnorm"} <= set(names)
    assert [it.seconds for it in items] == sorted(it.seconds for it in items)
    assert [it.run for it in plan(tmp_path, only=["seqfake_attr"])] == ["seqfake_attr"]
    assert [it.run for it in plan(tmp_path, only=["abcnorm_ce"])] == ["abcnorm_ce"]
    st = {"running": False, "runs": [{"run": n, "state": "ready", "elapsed_s": 1.0} for n in names]}
    text = build_markdown(st)
    assert "Built on request only" in text and "`seqfake_attr`" in text
    assert "--only seqfake_attr" in text or "--only seqfakeformer" in text
