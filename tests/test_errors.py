"""The error contract of the command-line entry points: a user's mistake exits 2 with one
line that says what is wrong (no traceback); a bug exits 1 with its traceback and a line
asking to report it. One test per case a newcomer meets in a first hour."""
from __future__ import annotations

import socket
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from runtime.cli import BUG_LINE, run_main


def _one_line_error(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), text
    assert "Traceback" not in text
    return lines[0]


def _py(*args, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=env)


# --- the contract itself ------------------------------------------------------------------
def test_a_user_error_is_one_line_and_exit_2(capsys):
    def main(argv):
        raise ValueError("train.epochs must be an integer,\n got 'one'")
    assert run_main(main) == 2
    assert _one_line_error(capsys.readouterr().err) == \
        "error: train.epochs must be an integer, got 'one'"


def test_a_bug_keeps_its_traceback_exit_1(capsys):
    def main(argv):
        return {}["no such key"]
    assert run_main(main) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "KeyError" in err and err.strip().endswith(BUG_LINE)


# --- python -m training ---------------------------------------------------------------------
@pytest.mark.parametrize("args, expected", [
    (["qmil", "--data", "/no/such/dir"], "--data /no/such/dir: no such file or folder"),
    (["toy", "--set", "train.epohcs=1"], "unknown config key 'train.epohcs' (did you mean 'epochs'?)"),
    (["toy", "--set", "train.epochs=0.5"], "train.epochs must be an integer, got 0.5"),
    (["toy", "--set", "train.epochs=one"], "train.epochs must be an integer, got 'one'"),
    (["toy", "--set", "toy.n=4", "--set", "train.batch_size=16"], "data set of 4 samples is smaller than one batch (16)"),
    (["seqfake", "--set", "eval.threshold=1.5"], "eval.threshold must be <= 1, got 1.5"),
])
def test_training_mistakes(args, expected, tmp_path, capsys):
    from training.__main__ import main

    assert main([*args, "--artifacts", str(tmp_path), "--no-progress"]) == 2
    assert expected in _one_line_error(capsys.readouterr().err)
    assert not list((tmp_path / "runs").glob("*/summary.json"))   # nothing claims to be done


def test_a_folder_too_small_to_train_on_is_one_line(tmp_path, capsys):
    """DCL and qMIL read image folders (training/data/sources.py): a folder of one image is
    refused in one line naming what is wrong, never a silent fall-back to the installed
    Fashion-MNIST."""
    from training.__main__ import main

    (tmp_path / "photos").mkdir()
    Image.new("RGB", (32, 32)).save(tmp_path / "photos" / "a.png")
    for method in ("dcl", "qmil"):
        assert main([method, "--data", str(tmp_path / "photos"), "--artifacts",
                     str(tmp_path / "art"), "--no-progress", "--set", "train.max_steps=1"]) == 2
        err = _one_line_error(capsys.readouterr().err)
        assert "fashion" not in err.lower() and err.startswith("error:"), (method, err)
        assert not (tmp_path / "art" / "runs" / method / "checkpoint.pt").exists()


def test_export_without_runs_is_one_line(tmp_path):
    r = _py("export", "--all", "--artifacts", tmp_path)
    assert r.returncode == 2 and "no finished training runs" in _one_line_error(r.stderr)


# --- python -m app ------------------------------------------------------------------------
def test_bad_auth_variable_exits_2(tmp_path):
    import os

    r = _py("app", "--expose", "--no-build", "--artifacts", tmp_path,
            env={**os.environ, "REPLENS_AUTH": "bob"})
    assert r.returncode == 2 and "REPLENS_AUTH must look like user:password" in _one_line_error(r.stderr)


def test_expose_without_a_login_is_refused_unless_no_auth(tmp_path):
    import os

    env = {k: v for k, v in os.environ.items() if k != "REPLENS_AUTH"}
    r = _py("app", "--expose", "--no-build", "--artifacts", tmp_path, env=env)
    assert r.returncode == 2
    line = _one_line_error(r.stderr)
    assert "REPLENS_AUTH=user:password" in line and "--no-auth" in line


def test_no_auth_warns_on_the_console_and_the_page(tmp_path, monkeypatch, capsys):
    from app.server import NO_AUTH_WARNING, launch

    monkeypatch.delenv("REPLENS_AUTH", raising=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo = launch(tmp_path, port=port, expose=True, no_auth=True, block=False)
    try:
        assert NO_AUTH_WARNING in capsys.readouterr().out
        import urllib.request

        page = urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=10).read().decode()
        assert "WITHOUT a login" in page
    finally:
        demo.close()


def test_a_busy_port_names_the_flag(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = _py("app", "--no-build", "--port", port, "--artifacts", tmp_path)
    assert r.returncode == 2
    line = _one_line_error(r.stderr)
    assert f"port {port}" in line and "--port" in line


# --- python -m app.cli (on the smoke build) -------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("args, expected", [
    (["face", "{face}", "--crop", "--model", "qmil"], "model 'qmil' is a qmil model; this needs a seqfake model: seqfake, seqfake_attr"),
    (["classify", "{fashion}", "--model", "dcl"], "model 'dcl' is a dcl model; this needs a abcnorm model: abcnorm, abcnorm_ce"),
    (["classify", "{fashion}", "--cam-out", "/missing/dir/x.png"], "--cam-out /missing/dir/x.png: the folder /missing/dir does not exist"),
    # a folder is a batch (tests/test_batch.py); one without images is the user's mistake
    (["face", "{empty}", "--crop"], "No image files were found in"),
    (["neighbours", "{empty}"], "No image files were found in"),
    (["face", "{face}", "--crop", "--out", "results.txt"],
     "--out must end in .csv, .jsonl or .parquet"),
    (["face", "{face}", "--crop", "--resume"], "--resume needs --out"),
])
def test_cli_mistakes(args, expected, smoke_artifacts, tmp_path):
    ex = smoke_artifacts / "examples"
    subs = {"{face}": sorted((ex / "faces").glob("*.png"))[0],
            "{fashion}": sorted((ex / "fashion").glob("*.png"))[0], "{empty}": tmp_path / "empty"}
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    r = _py("app.cli", "--artifacts", smoke_artifacts, *[subs.get(a, a) for a in args])
    assert r.returncode == 2, r.stderr
    assert expected in _one_line_error(r.stderr)
    assert not (tmp_path / "x.png").exists()


@pytest.mark.slow
def test_indices_users_see_are_one_based(smoke_artifacts):
    """Instances and faces are numbered from 1 in the JSON, as the example files and --face."""
    import json

    ex = smoke_artifacts / "examples"
    bag = sorted(p for p in (ex / "bags").iterdir() if p.is_dir())[0]
    names = sorted(f.name for f in bag.glob("*.png"))
    assert names[0].startswith("01_") and bag.name.endswith(("_holds", "_lacks"))
    r = _py("app.cli", "--artifacts", smoke_artifacts, "query", "--bag", bag, "--word", "sneaker")
    rep = json.loads(r.stdout)
    assert sorted(a["instance"] for a in rep["attention"]) == list(range(1, len(names) + 1))
    face = sorted((ex / "faces").glob("*.png"))[0]
    img = np.zeros((400, 400, 3), np.uint8)
    img[72:328, 72:328] = np.asarray(Image.open(face).convert("RGB").resize((256, 256)))
    Image.fromarray(img).save(smoke_artifacts / "padded_face.png")
    r = _py("app.cli", "--artifacts", smoke_artifacts, "face", smoke_artifacts / "padded_face.png")
    if r.returncode == 0:     # a face was found: its number is 1-based
        assert json.loads(r.stdout)["face_number"] == 1
    else:                     # the generated face may not be detected: a clear message then
        assert "No face was found" in _one_line_error(r.stderr)


def test_an_empty_artifacts_folder_says_what_it_builds(tmp_path, monkeypatch, capsys):
    from app import build

    monkeypatch.setattr(build, "_stream", lambda cmd, log: (0, ""))   # no real training here
    with pytest.raises(build.BuildError, match="2 of 2 runs failed"):  # nothing was trained
        build.ensure_artifacts(tmp_path, only=["qmil", "dcl"])
    out = capsys.readouterr().out
    assert "lacks: qmil, dcl" in out and "python -m app --no-build" in out
    assert "cheapest first" in out
