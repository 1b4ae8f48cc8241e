"""Shared fixtures. ``smoke_artifacts``: the whole pipeline (train -> export -> gallery ->
examples) run once per session by the main command with tiny budgets, started in the
background as soon as the tests are collected; the tests that need it are end-to-end tests,
marked ``slow`` here and run last."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


SMOKE = "smoke_artifacts"
_BUILD: dict[str, object] = {}  # the smoke build started in the background: proc, folder, t0


def _uses_smoke(item: pytest.Item) -> bool:
    return SMOKE in getattr(item, "fixturenames", ())


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests that need the smoke build are end-to-end: they are marked ``slow`` (so ``-m "not
    slow"`` runs the unit tests alone) and run after the other tests, each module whole, so
    that the build (started in the background as collection ends) overlaps the unit tests."""
    smoke_modules = set()
    for item in items:
        if _uses_smoke(item):
            item.add_marker(pytest.mark.slow)
            smoke_modules.add(item.module.__name__ if item.module else "")
    items.sort(key=lambda it: (it.module.__name__ if it.module else "") in smoke_modules)


def _start_build(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Start ``python -m app --build-only --smoke`` into a new temporary folder."""
    art = tmp_path_factory.mktemp("artifacts")
    log = open(art.with_name(art.name + ".log"), "w")
    _BUILD.update(folder=art, t0=time.time(), log=log, proc=subprocess.Popen(
        [sys.executable, "-m", "app", "--build-only", "--smoke", "--artifacts", str(art)],
        stdout=log, stderr=subprocess.STDOUT, text=True))


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start the smoke build behind the unit tests when a selected test needs it."""
    if os.environ.get("REPLENS_TEST_ARTIFACTS") or session.config.option.collectonly:
        return
    if any(_uses_smoke(it) for it in session.items):
        _start_build(session.config._tmp_path_factory)  # type: ignore[attr-defined]


def pytest_sessionfinish(session: pytest.Session) -> None:
    proc = _BUILD.get("proc")
    if isinstance(proc, subprocess.Popen) and proc.poll() is None:
        proc.terminate()
        proc.wait(timeout=60)


@pytest.fixture(scope="session")
def smoke_artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The smoke build's artifacts folder (``REPLENS_TEST_ARTIFACTS`` reuses one)."""
    reuse = os.environ.get("REPLENS_TEST_ARTIFACTS")  # developers: reuse a smoke build
    if reuse:
        return Path(reuse)
    if "proc" not in _BUILD:
        _start_build(tmp_path_factory)
    proc = _BUILD["proc"]
    assert isinstance(proc, subprocess.Popen)
    code = proc.wait(timeout=1800)
    art = Path(str(_BUILD["folder"]))
    assert code == 0, art.with_name(art.name + ".log").read_text()[-8000:]
    (art / "build_seconds.txt").write_text(f"{time.time() - float(str(_BUILD['t0'])):.1f}\n")
    return art


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module of tiny models (faster without thread contention)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
