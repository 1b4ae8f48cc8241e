"""The CLI prints the same JSON as the API and exits 2 with a message on bad input; the main
command reuses existing artifacts."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
from PIL import Image

from tests.api_schema import validate

pytestmark = pytest.mark.slow


def cli(art, *args):
    return subprocess.run([sys.executable, "-m", "app.cli", "--artifacts", str(art), *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def _video(path, frames):
    h, w = frames[0].shape[:2]
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 5, (w, h))
    for f in frames:
        vw.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    vw.release()


def test_cli_commands(smoke_artifacts, tmp_path):
    ex = smoke_artifacts / "examples"
    fashion = sorted((ex / "fashion").glob("*.png"))
    r = cli(smoke_artifacts, "classify", fashion[0], "--cam-out", tmp_path / "cam.png")
    assert r.returncode == 0, r.stderr
    rep = validate("/classify", json.loads(r.stdout), cli=True)
    assert len(rep["top"]) == 5 and (tmp_path / "cam.png").is_file()
    bag = sorted(p for p in (ex / "bags").iterdir() if p.is_dir())[0]
    r = cli(smoke_artifacts, "query", "--bag", bag, "--word", "ankle boot")
    assert r.returncode == 0, r.stderr
    assert validate("/query", json.loads(r.stdout))["bag_size"] == len(list(bag.glob("*.png")))
    r = cli(smoke_artifacts, "neighbours", fashion[3], "-k", 4)
    assert r.returncode == 0 and len(validate("/neighbours", json.loads(r.stdout))["neighbours"]) == 4
    face = sorted((ex / "faces").glob("*.png"))[0]
    r = cli(smoke_artifacts, "face", face, "--crop")
    assert r.returncode == 0, r.stderr
    assert validate("/face", json.loads(r.stdout))["verdict"] in ("real", "manipulated")


def test_cli_bad_inputs_exit_2(smoke_artifacts, tmp_path):
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (tmp_path / "empty").mkdir()
    for args, pattern in [
        (("classify", junk), "damaged|could not be read|not an image"),
        (("classify", tmp_path / "nope.png"), "not found"),
        (("query", "--bag", tmp_path / "empty", "--word", "bag"), "empty"),
        (("query", "--bag", tmp_path, "--word", "bag"), "Image 1 of the bag.*junk.jpg"),
        (("query", "--bag", smoke_artifacts / "examples" / "fashion", "--word", "qwzxv"), "qwzxv"),
        (("neighbours", junk, "-k", 4), "damaged|could not be read|not an image"),
    ]:
        r = cli(smoke_artifacts, *args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert r.stderr.startswith("error:") and __import__("re").search(pattern, r.stderr), r.stderr
        assert "Traceback" not in r.stderr


def test_video_face_timeline_and_video_bag(smoke_artifacts, tmp_path):
    faces = [np.asarray(Image.open(p).convert("RGB"))
             for p in sorted((smoke_artifacts / "examples" / "faces").glob("*.png"))[:4]]
    _video(tmp_path / "v.mp4", faces * 3)
    r = cli(smoke_artifacts, "video", tmp_path / "v.mp4", "--crop", "--frames", 6,
            "--report", tmp_path / "v.html")
    assert r.returncode == 0, r.stderr
    rep = validate("/face_video", json.loads(r.stdout))
    assert rep["frames_sampled"] == 6 and rep["frames_analysed"] == 6
    html = (tmp_path / "v.html").read_text()
    assert rep["model_version"] in html and 'id="section-timeline"' in html
    fashion = [np.asarray(Image.open(p).convert("RGB").resize((64, 64)))
               for p in sorted((smoke_artifacts / "examples" / "fashion").glob("*.png"))]
    _video(tmp_path / "bag.mp4", fashion)
    r = cli(smoke_artifacts, "query", "--bag", tmp_path / "bag.mp4", "--word", "sneaker")
    assert r.returncode == 0, r.stderr
    assert 1 <= validate("/query", json.loads(r.stdout))["bag_size"] <= len(fashion)
    (tmp_path / "empty.mp4").write_bytes(b"")
    r = cli(smoke_artifacts, "video", tmp_path / "empty.mp4", "--crop")
    assert r.returncode == 2 and "error:" in r.stderr


def test_main_command_reuses_artifacts(smoke_artifacts):
    t0 = time.time()
    r = subprocess.run([sys.executable, "-m", "app", "--build-only", "--smoke", "--artifacts",
                        str(smoke_artifacts)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "[build] training" not in r.stdout and "exporting" not in r.stdout
    assert time.time() - t0 < 60
