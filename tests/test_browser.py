"""Headless Chromium (Debian's) loads the page, runs a real request in each tab and saves a
screenshot of it. Screenshots go to $REPLENS_SCREENSHOT_DIR (default: a temp folder)."""
from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian's chromium is not installed")
def test_each_tab_after_a_real_request(smoke_artifacts, tmp_path):
    from playwright.sync_api import sync_playwright

    from app.server import create_app

    out = Path(os.environ.get("REPLENS_SCREENSHOT_DIR", tmp_path))
    out.mkdir(parents=True, exist_ok=True)
    demo, _ = create_app(smoke_artifacts)
    port = _port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    ex = smoke_artifacts / "examples"
    face = sorted((ex / "faces").glob("*.png"))[0]
    fashion = sorted((ex / "fashion").glob("*.png"))
    bag = sorted(sorted(p for p in (ex / "bags").iterdir() if p.is_dir())[0].glob("*.png"))
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS[1:],
                                         headless=True)
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.goto(f"http://127.0.0.1:{port}/", wait_until="networkidle", timeout=60_000)
            assert "RepLens" in page.content()

            def run(tab: str, prefix: str, files: list[Path], expect: str, before=None) -> None:
                page.get_by_role("tab", name=tab).click(force=True)
                page.locator(f"#{prefix}-input input[type=file]").set_input_files([str(f) for f in files])
                if before:
                    before()
                page.locator(f"#{prefix}-btn").click(force=True)
                page.locator(f"#{prefix}-json").get_by_text(expect).first.wait_for(timeout=60_000)
                page.wait_for_timeout(500)
                page.screenshot(path=str(out / f"{prefix}.png"), full_page=True)

            def crop_and_wait():
                page.locator("#face-crop input[type=checkbox]").check(force=True)
                page.wait_for_timeout(800)

            run("Face (sequential deepfake)", "face", [face], "verdict", crop_and_wait)

            def word():
                page.wait_for_timeout(1500)
                page.locator("#query-word textarea, #query-word input").first.fill("sneaker")

            run("Bag query (qMIL)", "query", bag, "attention", word)
            run("Retrieval (DCL)", "retrieval", [fashion[7]], "neighbours",
                lambda: page.wait_for_timeout(1000))
            run("Classifier (ABC-Norm)", "classify", [fashion[0]], "cam_class",
                lambda: page.wait_for_timeout(1000))
            assert not page.get_by_text("unlike the data this model was trained on").count()
            # a generated face sent to the classifier: the warning above the answer
            page.locator("#classify-input input[type=file]").set_input_files([str(face)])
            page.wait_for_timeout(1000)
            page.locator("#classify-btn").click(force=True)
            warning = page.get_by_text("unlike the data this model was trained on").first
            warning.wait_for(timeout=60_000)
            assert warning.is_visible()
            page.wait_for_timeout(500)
            page.screenshot(path=str(out / "classify-out-of-domain.png"), full_page=True)
            browser.close()
    finally:
        demo.close()
    for name in ("face", "query", "retrieval", "classify", "classify-out-of-domain"):
        assert (out / f"{name}.png").stat().st_size > 10_000
