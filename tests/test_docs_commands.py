"""Every shell command in README.md and docs/*.md runs as written, as far as a test can
check without training for hours: each ``python -m MODULE ...`` line is parsed by that
module's own argument parser (a renamed or removed flag fails), every ``--set`` key and
value of a training command is validated against the method's schema (a renamed config key
fails), and the ``--help`` commands are run. Usage synopses (``[--flag ...]``) are skipped.
"""
from __future__ import annotations

import argparse
import importlib
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from methods.schema import ConfigError
from training.config import resolve_config

ROOT = Path(__file__).resolve().parents[1]
OUR_PACKAGES = {"app", "runtime", "training", "export", "methods", "models", "scripts"}
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def shell_blocks(text: str) -> list[str]:
    """The bodies of fenced blocks marked bash/sh/shell or unmarked, in order."""
    blocks, body, lang = [], None, ""
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            if body is None:
                lang, body = line.strip()[3:].strip(), []
            else:
                if lang in ("", "bash", "sh", "shell"):
                    blocks.append("\n".join(body) + "\n")
                body = None
        elif body is not None:
            body.append(line)
    return blocks


def doc_commands() -> list[tuple[str, list[str]]]:
    """(where, argv after ``-m``) of every python module command in a fenced shell block."""
    found = []
    for doc in DOCS:
        for block in shell_blocks(doc.read_text()):
            for line in block.replace("\\\n", " ").splitlines():
                try:
                    tokens = shlex.split(line, comments=True)
                except ValueError:
                    continue
                if "-m" not in tokens or not any(t.endswith(("python", "torchrun")) for t in tokens):
                    continue
                argv = tokens[tokens.index("-m") + 1:]
                if any(t.startswith("[") or t == "..." for t in argv):
                    continue                     # a usage synopsis, not a command
                if argv and argv[0].split(".")[0] not in OUR_PACKAGES:
                    continue                     # another tool's command (pip, ...)
                found.append((f"{doc.name}: {line.strip()}", argv))
    return found


COMMANDS = doc_commands()


class _Parsed(SystemExit):
    """Raised instead of running the command, once its arguments parsed."""

    def __init__(self, namespace: argparse.Namespace) -> None:
        super().__init__(0)
        self.namespace = namespace


def test_the_docs_have_commands():
    modules = {argv[0] for _, argv in COMMANDS}
    assert {"training", "export", "app.cli"} <= modules and len(COMMANDS) >= 25


@pytest.mark.parametrize("where, argv", COMMANDS, ids=[w[:90] for w, _ in COMMANDS])
def test_doc_command_parses_and_its_config_is_valid(where, argv, monkeypatch):
    module, args = argv[0], argv[1:]
    original = argparse.ArgumentParser.parse_args

    def parse_only(self, a=None, namespace=None):
        ns = original(self, a, namespace)
        raise _Parsed(ns)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_only)
    mod = importlib.import_module(module if module != "training" else "training.__main__")
    if module in ("app", "export"):
        mod = importlib.import_module(f"{module}.__main__")
    if "--help" in args:
        return                                   # run for real below
    with pytest.raises(_Parsed) as parsed:       # a bad flag exits 2 inside argparse instead
        mod.main(args)
    ns = parsed.value.namespace
    if module == "training":
        try:
            resolve_config(ns.method, ns.config, ns.overrides)
        except ConfigError as exc:               # placeholder paths (DIR, /path/to/...) only
            assert "does not exist" in str(exc), f"{where}: {exc}"


HELP = sorted({tuple(argv) for _, argv in COMMANDS if "--help" in argv})


@pytest.mark.parametrize("argv", HELP, ids=[" ".join(a) for a in HELP])
def test_doc_help_commands_run(argv):
    r = subprocess.run([sys.executable, "-m", *argv], capture_output=True, text=True,
                       timeout=120, cwd=ROOT)
    assert r.returncode == 0 and "usage:" in r.stdout, r.stderr


TRAINING = [(w, argv) for w, argv in COMMANDS if argv[0] == "training" and "--help" not in argv
            and not any(a in ("--data", "--resume") for a in argv)
            and "stage.name=crt" not in " ".join(argv)]      # crt needs a stage-1 checkpoint


@pytest.mark.slow
@pytest.mark.parametrize("where, argv", TRAINING, ids=[w[:90] for w, _ in TRAINING])
def test_doc_training_command_runs_with_a_step_limit(where, argv, tmp_path):
    """The command as written, plus the method's smoke budget and one optimiser step."""
    from methods import SMOKE_COMMON, get_method
    from training.__main__ import main

    method = argv[1]
    limit = [*SMOKE_COMMON, *get_method(method).smoke, "train.max_steps=1"]
    extra = [x for o in limit for x in ("--set", o)]
    assert main([*argv[1:], *extra, "--artifacts", str(tmp_path), "--no-progress"]) == 0, where
    assert list((tmp_path / "runs").glob("*/summary.json"))
