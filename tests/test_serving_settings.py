"""The serving settings (one object, app/serve.yaml + REPLENS_<KEY> + flags) and the answer
file store (written once, atomically, per answer; bounded)."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from app.outputs import OutputError, OutputStore
from app.settings import SETTINGS_FILE, ServeSettings, load_settings
from methods.schema import ConfigError


def test_every_setting_has_its_default_once_in_serve_yaml():
    import dataclasses

    data = yaml.safe_load(SETTINGS_FILE.read_text())
    assert set(data) == {f.name for f in dataclasses.fields(ServeSettings)}
    assert load_settings({}, environ={}).queue_size == data["queue_size"]


def test_the_app_docs_document_every_setting_with_its_default():
    readme = (Path(__file__).resolve().parents[1] / "docs" / "app.md").read_text()
    for key, value in yaml.safe_load(SETTINGS_FILE.read_text()).items():
        row = f"| `{key}` | {value} | `REPLENS_{key.upper()}` | `--{key.replace('_', '-')}` |"
        assert row in readme, row


def test_environment_then_flags_override_the_file():
    s = load_settings({}, environ={"REPLENS_QUEUE_SIZE": "7", "REPLENS_REQUEST_TIMEOUT_S": "2.5"})
    assert s.queue_size == 7 and s.request_timeout_s == 2.5
    s = load_settings({"queue_size": 3, "max_bag": None}, environ={"REPLENS_QUEUE_SIZE": "7"})
    assert s.queue_size == 3 and s.max_bag == yaml.safe_load(SETTINGS_FILE.read_text())["max_bag"]


@pytest.mark.parametrize("env,words", [
    ({"REPLENS_QUEUE_SIZE": "many"}, "REPLENS_QUEUE_SIZE='many'"),
    ({"REPLENS_QUEUE_SIZE": "0"}, "queue_size must be >= 1"),
    ({"REPLENS_MAX_UPLOAD_MB": "-1"}, "max_upload_mb must be >= 1"),
    ({"REPLENS_MIN_SIDE": "4096"}, "min_side (4096) must not exceed max_side"),
])
def test_bad_values_are_refused_with_their_key(env, words):
    with pytest.raises(ConfigError, match=None) as info:
        load_settings({}, environ=env)
    assert words in str(info.value)


def test_main_command_refuses_a_bad_limit_in_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "app", "--no-build", "--artifacts", str(tmp_path),
                           "--queue-size", "0"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "REPLENS_PORT": "0"})
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == "error: queue_size must be >= 1, got 0"


def test_limits_in_force_are_read_by_the_input_checks(tmp_path):
    from PIL import Image

    from app.inputs import InputError, load_bag
    from app.settings import configure, current

    before = current()
    p = tmp_path / "a.png"
    Image.new("RGB", (32, 32)).save(p)
    try:
        configure(load_settings({"max_bag": 2}, environ={}))
        with pytest.raises(InputError, match="the limit is 2"):
            load_bag([p, p, p])
        assert len(load_bag([p, p])) == 2
    finally:
        configure(before)


# --- the answer store ---------------------------------------------------------------------
def test_each_answer_has_its_own_folder_and_identical_pictures_never_share_a_file(tmp_path):
    store = OutputStore(tmp_path, max_answers=10, max_age_s=3600)
    img = np.full((8, 8, 3), 200, np.uint8)
    a, b = store.new("classify"), store.new("classify")
    pa, pb = a.image(img, "cam"), b.image(img, "cam")
    assert pa != pb and Path(pa).parent != Path(pb).parent
    assert Path(pa).read_bytes() == Path(pb).read_bytes()
    j = a.json({"x": 1.5, "p": Path("/a")}, "report")
    assert Path(j).read_text().startswith("{") and '"/a"' in Path(j).read_text()
    assert not list(tmp_path.rglob("*.tmp"))
    assert a.image(None, "none") is None


def test_store_is_bounded_by_count_and_age(tmp_path):
    store = OutputStore(tmp_path, max_answers=3, max_age_s=3600)
    made = [store.new("q").folder for _ in range(5)]
    kept = store.answers()
    assert len(kept) == 3 and kept == made[-3:]  # the oldest went first
    old = tmp_path / f"{time.time_ns() - int(7200e9)}-q-old00000"
    old.mkdir()
    (old / "01-x.png").write_bytes(b"png")
    store.new("q")
    assert not old.exists() and len(store.answers()) == 3


def test_a_failed_write_leaves_no_file_and_says_why(tmp_path, monkeypatch):
    import errno

    store = OutputStore(tmp_path, max_answers=3, max_age_s=3600)
    ans = store.new("face")

    def full(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(OutputError, match="disk is full"):
        ans.json({"a": 1}, "report")
    assert list(ans.folder.iterdir()) == []


@pytest.mark.slow
def test_served_answers_refer_to_files_unique_to_each_answer(smoke_artifacts):
    """Two identical requests: their pictures and downloads are different files in the
    answer store (never one content-hash path rewritten for both)."""
    import socket

    from gradio_client import Client, handle_file

    from app.server import create_app

    demo, _ = create_app(smoke_artifacts)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        c = Client(f"http://127.0.0.1:{port}/", verbose=False, download_files=False)
        f = sorted((smoke_artifacts / "examples" / "fashion").glob("*.png"))[0]
        one = c.predict(handle_file(str(f)), "", api_name="/classify")
        two = c.predict(handle_file(str(f)), "", api_name="/classify")
        paths = [[r[1]["path"], r[4]["path"]] for r in (one, two)]
        assert all("replens-answers" in p for p in paths[0] + paths[1])
        assert not set(paths[0]) & set(paths[1])
        assert one[3] == two[3]
    finally:
        demo.close()
