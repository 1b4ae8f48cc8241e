"""The import contracts (.importlinter, import-linter): they hold for the code as it is, and a
wrong import added to a scratch copy of the packages (torch in the serving tier, training code
imported inside a service function, a torch network in the serving runtime, the registry
importing the serving tier, one tab importing another) breaks the contract that forbids it."""
from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ".importlinter"
LINT = Path(sys.executable).with_name("lint-imports")


def root_packages() -> list[str]:
    """The packages the contracts cover, as the contract file lists them."""
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / CONFIG)
    return cfg["importlinter"]["root_packages"].split()


def lint(root: Path) -> subprocess.CompletedProcess:
    """``lint-imports`` on the packages under ``root`` (found there first on the path)."""
    assert LINT.is_file(), f"{LINT} is missing: run bash scripts/test.sh (it installs import-linter)"
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([str(LINT), "--no-cache", "--config", str(root / CONFIG)], cwd=root,
                          env=env, capture_output=True, text=True, timeout=300)


def test_the_contracts_hold():
    r = lint(ROOT)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "0 broken" in r.stdout


WRONG = {
    # module-level torch in the serving runtime
    "runtime/calibration.py": ("import torch\n",
                               "runtime is not allowed to import torch"),
    # training code imported inside a service function
    "app/services/qmil.py": ("\n\ndef _wrong():\n    import training.engine\n",
                             "app is not allowed to import training"),
    # a torch network imported by the serving runtime
    "runtime/gallery.py": ("import models.dcl\n", "runtime is not allowed to import models"),
    # the registry reaching up into the serving tier
    "methods/base.py": ("from runtime import manifest\n",
                        "methods is not allowed to import runtime"),
    # one tab importing another
    "app/tabs/face.py": ("from app.tabs import query\n",
                         "app.tabs.face is not allowed to import app.tabs.query"),
}


def test_a_wrong_import_breaks_its_contract(tmp_path):
    for package in root_packages():
        shutil.copytree(ROOT / package, tmp_path / package,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy(ROOT / CONFIG, tmp_path / CONFIG)
    for module, (line, _) in WRONG.items():
        with open(tmp_path / module, "a", encoding="utf-8") as f:
            f.write(line)
    r = lint(tmp_path)
    assert r.returncode != 0, r.stdout[-4000:]
    out = " ".join(r.stdout.split())
    for module, (_, message) in WRONG.items():
        assert message in out, (module, r.stdout[-4000:])
