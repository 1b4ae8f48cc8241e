"""Every mistake on the command line is one clear line (exit 2, no traceback) that names the
flag, variable, setting or file and says what to do; contradictory flags are refused.

The commands run in-process (``main(argv)``) except where the mistake is the process itself
(a module file run as a script, a Python without the packages, another working folder).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _one_line(text: str) -> str:
    """The one line of ``text`` (stderr), checked to be one line and no traceback."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in text, text
    return lines[0]


def _run(main, argv, capsys) -> tuple[int, str, str]:
    """``main(argv)`` in-process: exit status (argparse's SystemExit too), stdout, stderr."""
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return int(code or 0), out, err


def _refused(main, argv, capsys) -> str:
    """The one-line message of a refused command (exit 2)."""
    code, _, err = _run(main, argv, capsys)
    assert code == 2, err
    return _one_line(err)


# --- training: --set and --config ------------------------------------------------------------
def test_yaml_syntax_error_in_set_names_the_override_line_and_column(tmp_path, capsys):
    from training.__main__ import main

    line = _refused(main, ["toy", "--set", "train.epochs=[1", "--artifacts", str(tmp_path)],
                    capsys)
    assert line.startswith("error: --set train.epochs=[1: not valid YAML at line 1, column 3")
    assert "bug" not in line and "[a, b]" in line        # how to write it instead


def test_yaml_syntax_error_in_config_file_names_file_line_and_column(tmp_path, capsys):
    from training.__main__ import main

    cfg = tmp_path / "mine.yaml"
    cfg.write_text("train:\n  epochs: 2\n  batch_size: [4\n")
    line = _refused(main, ["toy", "--config", str(cfg), "--artifacts", str(tmp_path)], capsys)
    assert f"config {cfg}: not valid YAML at line 4, column 1" in line


def test_scientific_notation_is_a_number_for_float_keys(tmp_path):
    from training.config import resolve_config

    cfg = tmp_path / "mine.yaml"
    cfg.write_text("optim:\n  weight_decay: 5E-4\n")
    out = resolve_config("toy", cfg, ["optim.lr=1e-3"])
    assert out["optim"]["lr"] == 0.001 and out["optim"]["weight_decay"] == 0.0005
    with pytest.raises(ValueError, match="train.epochs must be an integer"):  # still an int key
        resolve_config("toy", None, ["train.epochs=1e3"])


def test_override_without_equals_names_it(tmp_path, capsys):
    from training.__main__ import main

    line = _refused(main, ["toy", "--set", "train.epochs", "--artifacts", str(tmp_path)], capsys)
    assert "--set train.epochs" in line and "key.sub=value" in line


# --- python -m app: ports, contradictory flags, the artifacts folder -------------------------
@pytest.mark.parametrize("port", ["99999", "-1", "http"])
def test_port_out_of_range_is_one_line(port, capsys):
    from app.__main__ import main

    line = _refused(main, ["--port", port], capsys)
    assert "argument --port" in line and "1-65535" in line


def test_bad_port_variable_is_named(monkeypatch, tmp_path, capsys):
    from app.__main__ import main

    monkeypatch.setenv("REPLENS_PORT", "abc")
    line = _refused(main, ["--no-build", "--artifacts", str(tmp_path)], capsys)
    assert line.startswith("error: REPLENS_PORT='abc'") and "1-65535" in line


@pytest.mark.parametrize("flags", [
    ["--build-only", "--no-build"],
    ["--build-only", "--retinaface-weights", "w.pth"],
    ["--build-only", "--serve-only"],
    ["--build-only", "--expose"],
    ["--no-build", "--smoke"],
    ["--serve-only", "--only", "qmil"],
    ["--no-build", "--only", "qmil"],
])
def test_contradictory_flags_are_refused(flags, tmp_path, capsys):
    from app.__main__ import main

    line = _refused(main, [*flags, "--artifacts", str(tmp_path)], capsys)
    named = [f for f in flags if f.startswith("--")]
    assert all(f in line for f in named) and "cannot be used together" in line
    assert not any(tmp_path.iterdir())                   # nothing was built


def test_no_auth_without_expose_is_refused(tmp_path, capsys):
    from app.__main__ import main

    line = _refused(main, ["--no-auth", "--artifacts", str(tmp_path)], capsys)
    assert "--no-auth" in line and "--expose" in line


def test_artifacts_naming_a_file_is_refused(tmp_path, capsys):
    from app.__main__ import main as app_main
    from app.cli import main as cli_main

    from export.__main__ import main as export_main
    from training.__main__ import main as train_main

    f = tmp_path / "notes.txt"
    f.write_text("x")
    for main, argv in ((cli_main, ["--artifacts", str(f), "status"]),
                       (app_main, ["--no-build", "--artifacts", str(f)]),
                       (train_main, ["toy", "--artifacts", str(f)]),
                       (export_main, ["--all", "--artifacts", str(f)])):
        line = _refused(main, argv, capsys)
        assert f"--artifacts {f}" in line and "is a file, not a folder" in line


def test_invalid_manifest_json_names_file_line_and_column(tmp_path, capsys):
    from app.__main__ import main as app_main
    from app.cli import main as cli_main

    (tmp_path / "manifest.json").write_text('{"format_version": 1,\n  "models": {,}}\n')
    line = _refused(app_main, ["--no-build", "--artifacts", str(tmp_path)], capsys)
    assert f"{tmp_path / 'manifest.json'} is not valid JSON at line 2, column 14" in line
    code, out, _ = _run(cli_main, ["--artifacts", str(tmp_path), "status"], capsys)
    assert code == 0 and "at line 2, column 14" in json.loads(out)["manifest_error"]


# --- python -m app.cli ---------------------------------------------------------------------
def test_global_options_after_the_command_and_the_build_advice(tmp_path, capsys):
    from app.cli import main

    code, out, err = _run(main, ["status", "--artifacts", str(tmp_path)], capsys)
    assert code == 0, err
    advice = json.loads(out)["manifest_error"]          # an empty folder: how to build it
    assert f"python -m app --build-only --artifacts {tmp_path}" in advice


def test_missing_artifacts_variable_folder_says_how_to_build(monkeypatch, tmp_path, capsys):
    from app.cli import main

    missing = tmp_path / "nowhere"
    monkeypatch.setenv("REPLENS_ARTIFACTS", str(missing))
    line = _refused(main, ["status"], capsys)
    assert f"REPLENS_ARTIFACTS={missing}" in line and "does not exist" in line
    assert f"python -m app --build-only --artifacts {missing}" in line


def test_status_shows_local_time_and_age(tmp_path, capsys):
    from app.cli import main, moment

    now = time.time()
    (tmp_path / "build").mkdir()
    (tmp_path / "build" / "status.json").write_text(json.dumps(
        {"pid": 0, "smoke": True, "started": now - 300, "finished": now - 60, "runs": []}))
    code, out, _ = _run(main, ["--artifacts", str(tmp_path), "status"], capsys)
    build = json.loads(out)["build"]
    assert code == 0 and build["started"] == moment(now - 300, now)
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d \(5 min ago\)", build["started"])
    assert build["started"].startswith(time.strftime("%Y-%m-%d %H:%M", time.localtime(now - 300)))


def test_unknown_command_is_one_line(capsys):
    from app.cli import main

    line = _refused(main, ["stat"], capsys)
    assert "invalid choice: 'stat'" in line and "--help" in line


class _NoFaces:
    name = "none"

    def detect(self, rgb):
        return []


def test_no_face_message_names_the_flag_in_the_cli_and_the_checkbox_in_the_ui():
    from app.inputs import InputError, cli_requests
    from app.services.face import search_faces

    rgb = np.full((64, 64, 3), 128, np.uint8)
    for detector in (_NoFaces(), None):
        with pytest.raises(InputError) as ui:
            search_faces(detector, rgb, False, detect_side=None)
        with cli_requests(), pytest.raises(InputError) as cli:
            search_faces(detector, rgb, False, detect_side=None)
        assert "tick 'Image is already a face crop'" in str(ui.value), ui.value
        assert "pass --crop" in str(cli.value) and "tick" not in str(cli.value), cli.value


def test_video_without_detector_names_the_flag_in_the_cli_and_the_checkbox_in_the_ui():
    from app.inputs import InputError, cli_requests
    from app.services.video import _detect

    frames = [np.zeros((32, 32, 3), np.uint8)]
    with pytest.raises(InputError, match="tick 'Frames are face crops'"):
        _detect(None, frames, False)
    with cli_requests(), pytest.raises(InputError, match="pass --crop"):
        _detect(None, frames, False)


def test_face_command_without_crop_names_the_flag(smoke_artifacts, tmp_path, capsys):
    from PIL import Image

    from app.cli import main

    p = tmp_path / "wall.png"
    Image.fromarray(np.full((96, 96, 3), 128, np.uint8)).save(p)
    line = _refused(main, ["--artifacts", str(smoke_artifacts), "face", str(p)], capsys)
    assert "No face was found" in line and "pass --crop" in line and "tick" not in line


# --- the environment, the process, the console script ----------------------------------------
def test_a_missing_package_says_which_python_and_what_to_run(capsys):
    from runtime.cli import run_main

    def main(argv):
        raise ModuleNotFoundError("No module named 'gradio'", name="gradio")

    assert run_main(main) == 2
    line = _one_line(capsys.readouterr().err)
    assert "'gradio' is not installed for" in line and "bash scripts/run.sh" in line
    assert ".venv/bin/python" in line


def test_a_python_without_the_packages_is_one_line():
    """``python -S``: the interpreter without its site-packages, as a system Python."""
    r = subprocess.run([sys.executable, "-S", "-m", "app.cli", "status"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    line = _one_line(r.stderr)
    assert "is not installed for" in line and "bash scripts/run.sh" in line


def test_a_module_file_run_as_a_script_says_how_to_run_it(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "app" / "cli.py"), "status"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "python -m app.cli" in _one_line(r.stderr)


def test_project_is_installable_with_a_console_script():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert meta["build-system"]["build-backend"] == "setuptools.build_meta"
    module, func = meta["project"]["scripts"]["replens"].split(":")
    import importlib

    assert callable(getattr(importlib.import_module(module), func))
    assert re.search(r"pipq install .*--no-deps .*-e \.", (ROOT / "scripts" / "setup.sh").read_text())


def test_console_script_dispatches_and_refuses_in_one_line(tmp_path, capsys):
    from runtime.cli import console

    assert console([]) == 2 and "usage: replens COMMAND" in capsys.readouterr().err
    line = _refused(console, ["serv"], capsys)
    assert "unknown command 'serv'" in line and "train" in line
    line = _refused(console, ["train", "toy", "--set", "train.epochs=0",
                              "--artifacts", str(tmp_path)], capsys)
    assert line == "error: train.epochs must be >= 1, got 0"


def test_console_lists_every_command_and_passes_the_fixed_arguments(capsys, monkeypatch):
    """``replens --help`` names each command; ``replens face ARGS`` is ``python -m app.cli face
    ARGS`` and ``replens build`` is ``python -m app --build-only``."""
    import app.__main__
    import app.cli
    from runtime.cli import console

    assert console(["--help"]) == 0
    listed = capsys.readouterr().out
    for name in ("serve", "build", "train", "export", "import", "face", "query", "neighbours",
                 "classify", "status"):
        assert re.search(rf"^  {name} ", listed, re.M), name
    seen = []
    monkeypatch.setattr(app.cli, "main", lambda argv: seen.append(("cli", argv)) or 0)
    monkeypatch.setattr(app.__main__, "main", lambda argv: seen.append(("app", argv)) or 0)
    assert console(["face", "x.jpg", "--crop"]) == 0
    assert console(["build", "--smoke"]) == 0
    assert console(["serve", "--port", "0"]) == 0
    assert seen == [("cli", ["face", "x.jpg", "--crop"]), ("app", ["--build-only", "--smoke"]),
                    ("app", ["--port", "0"])]


def test_runs_from_another_folder_once_installed(tmp_path):
    from importlib import metadata

    try:
        metadata.version("replens")
    except metadata.PackageNotFoundError:
        pytest.fail("the project is not installed: bash scripts/setup.sh installs it (pip "
                    "install -e . --no-deps); see its output for why it could not")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run([sys.executable, "-m", "training", "toy", "--set", "train.epochs=0"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 2 and "train.epochs must be >= 1" in _one_line(r.stderr)


def test_a_plain_path_to_the_api_says_to_use_handle_file():
    """gradio_client sends a bare string when a path is not wrapped in ``handle_file``; the
    file inputs answer with how to upload it (the same schema as Gradio's own models)."""
    import gradio as gr

    from app.ui_common import SafeFile, SafeImage, SafeVideo

    for comp, base in ((SafeImage(), gr.Image()), (SafeFile(file_count="multiple"),
                                                    gr.File(file_count="multiple")),
                       (SafeVideo(), gr.Video())):
        assert comp.data_model.model_json_schema() == base.data_model.model_json_schema()
        for value in ("/home/me/photo.png", ["/home/me/photo.png"]):
            with pytest.raises(gr.Error) as info:
                comp.data_model.model_validate(value, context={"validate_meta": True})
            assert "handle_file(path)" in info.value.message
