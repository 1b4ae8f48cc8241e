"""One writer per run: a training or an export of a run that another live process trains
or exports is refused (exit 2, naming that process); a lock left by a dead process is
taken over; ``--resume`` of a run that does not exist is refused, listing those that do."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from runtime.artifacts import Locked, hold_run_lock

TOY = ["toy", "--no-progress", "--set", "train.epochs=1", "--set", "toy.n=16"]


def _train(art: Path, *args: str) -> int:
    from training.__main__ import main

    return main([*TOY, "--artifacts", str(art), *args])


def test_a_second_training_of_a_locked_run_is_refused_naming_the_holder(tmp_path, capsys):
    run_dir = tmp_path / "runs" / "toy"
    held = hold_run_lock(run_dir)  # this process trains "toy" (as another process would)
    try:
        assert _train(tmp_path) == 2
    finally:
        held.close()
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: run 'toy'")
    assert f"pid {os.getpid()} on {socket.gethostname()}" in err and "since" in err
    assert "`" in err  # the holder's command line
    assert not (run_dir / "metrics.jsonl").exists() and not (run_dir / "checkpoint.pt").exists()
    assert _train(tmp_path) == 0  # released: trains
    assert (run_dir / "checkpoint.pt").is_file()


def test_an_export_of_a_run_in_training_is_refused(tmp_path, capsys):
    from export.__main__ import main

    assert _train(tmp_path) == 0
    held = hold_run_lock(tmp_path / "runs" / "toy")
    try:
        code = main(["toy", "--artifacts", str(tmp_path), "--no-int8"])
    finally:
        held.close()
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert f"pid {os.getpid()}" in err[0] and "in use by another process" in err[0]
    assert not (tmp_path / "manifest.json").exists()


def test_a_lock_left_by_a_dead_process_is_taken_over(tmp_path):
    run_dir = tmp_path / "runs" / "toy"
    code = ("import sys, time; from runtime.artifacts import hold_run_lock; "
            "h = hold_run_lock(sys.argv[1]); print('held', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(run_dir)], stdout=subprocess.PIPE,
                            text=True, cwd=Path(__file__).resolve().parents[1])
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(Locked, match=f"pid {proc.pid} on "):
            hold_run_lock(run_dir)
    finally:
        proc.kill()  # dies holding it
        proc.wait()
    held = hold_run_lock(run_dir)  # taken over
    assert json.loads((run_dir / "lock").read_text())["pid"] == os.getpid()
    held.close()


def test_resume_of_a_missing_run_is_refused_listing_the_runs(tmp_path, capsys):
    assert _train(tmp_path, "--resume") == 2
    err = capsys.readouterr().err.strip()
    assert "--resume" in err and "holds no run yet" in err
    assert not (tmp_path / "runs" / "toy").exists()  # nothing trained from scratch
    assert _train(tmp_path, "--set", "run.name=first") == 0
    capsys.readouterr()
    assert _train(tmp_path, "--resume", "--set", "run.name=frist") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "run 'frist' does not exist" in err
    assert f"the runs in {tmp_path / 'runs'}: first (resume one with --set run.name" in err
    assert _train(tmp_path, "--resume", "--set", "run.name=first") == 0  # an existing one
