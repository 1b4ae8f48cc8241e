"""The budget of a user's folder (training/budget.py): steps from the folder's size with a
floor and a time ceiling, the user's --set values kept, the plan printed and recorded."""
from __future__ import annotations

import json

import pytest

from training.budget import apply, plan
from tests.test_verdict import TINY_REAL, _folder

BUDGET = {"batch_size": 32, "epochs": 10, "min_steps": 60, "max_seconds": 420, "lr": 0.01,
          "warmup_steps": 5}


def test_steps_follow_the_folder_with_a_floor_and_a_ceiling():
    mid = plan(BUDGET, 900, step_s=0.5)            # 28 steps an epoch, 10 epochs: 280 steps
    assert (mid["steps"], mid["epochs"], mid["limited_by"]) == (280, 10, "epochs")
    small = plan(BUDGET, 60, step_s=0.5)           # 1 step an epoch: the floor, 60 epochs
    assert (small["steps"], small["epochs"], small["limited_by"]) == (60, 60, "step floor")
    large = plan(BUDGET, 5000, step_s=2.0)         # 1560 steps wanted, 210 fit in 420 s
    assert (large["steps"], large["limited_by"]) == (210, "time ceiling")
    assert large["estimated_seconds"] <= 420
    tiny = plan(BUDGET, 10, step_s=0.1)            # fewer items than a batch
    assert tiny["batch_size"] == 10


def test_the_step_floor_wins_over_a_slow_measured_step():
    slow = plan(BUDGET, 382, step_s=8.5)           # 49 steps fit in 420 s: the floor, 60
    assert (slow["steps"], slow["limited_by"]) == (60, "step floor")


class _Timed:
    """A method whose training steps take the given seconds, one after another."""

    def __init__(self, seconds: list[float]) -> None:
        self.seconds = list(seconds)

    def build_model(self):
        import torch

        return torch.nn.Linear(1, 1)

    def collate_fn(self):
        return None

    def loss(self, model, batch, device):
        import time

        time.sleep(self.seconds.pop(0))
        return model(batch).sum(), {}


def test_the_step_time_is_a_median_one_slow_step_does_not_size_the_run():
    import torch

    from training.budget import step_seconds

    data = [torch.ones(1) for _ in range(4)]
    # warm-up (not counted), then a slow step of a busy machine, a fast one, a typical one:
    # the typical one sizes the run
    t = step_seconds(_Timed([0.2, 0.3, 0.002, 0.04]), data, 4, torch.device("cpu"))
    assert 0.04 * 1.15 <= t < 0.1


def test_a_machine_busier_than_its_cores_trains_on_one_thread_unless_threads_is_set():
    import torch

    from training.budget import busy_threads, describe

    n = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert busy_threads({"threads": None}, load=1.5, cores=2) is None  # not busy
        assert busy_threads({"threads": 2}, load=18.0, cores=2) is None    # the user's count
        assert torch.get_num_threads() == 2
        said = busy_threads({"threads": None}, load=18.0, cores=2)
        assert torch.get_num_threads() == 1 and said == "1 thread: load average 18.0 >= 2 cores"
    finally:
        torch.set_num_threads(n)
    p = dict(plan(BUDGET, 900, step_s=0.5), threads_reason=said)
    cfg = {"train": {"max_steps": 280, "epochs": 10, "batch_size": 32}, "optim": {"lr": 0.01}}
    assert said in describe(p, "net", (96, 96), cfg)


def test_values_the_user_set_are_kept():
    defaults = {"train": {"batch_size": 128, "epochs": 6, "max_steps": None},
                "optim": {"lr": 0.1, "warmup_steps": 50}}
    p = plan(BUDGET, 900, step_s=0.5)
    cfg = json.loads(json.dumps(defaults))
    assert set(apply(cfg, defaults, p)) == {"train.batch_size", "train.epochs",
                                             "train.max_steps", "optim.lr",
                                             "optim.warmup_steps"}
    assert cfg["train"] == {"batch_size": 32, "epochs": 10, "max_steps": 280}
    mine = json.loads(json.dumps(defaults))
    mine["train"]["epochs"], mine["optim"]["lr"] = 2, 0.5
    apply(mine, defaults, p)
    assert mine["train"]["epochs"] == 2 and mine["train"]["max_steps"] is None  # epochs rule
    assert mine["optim"]["lr"] == 0.5 and mine["train"]["batch_size"] == 32


@pytest.mark.slow
def test_the_plan_is_printed_before_training_and_recorded(tmp_path, capsys):
    from training.__main__ import main

    data = _folder(tmp_path / "f", classes=2, per_class=8, random_labels=False)
    args = ["abcnorm", "--data", str(data), "--artifacts", str(tmp_path / "art"),
            "--no-progress"]
    for s in (*TINY_REAL, "budget.epochs=1", "budget.min_steps=2", "budget.batch_size=8"):
        args += ["--set", s]
    assert main(args) == 0
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.startswith("[plan]"))
    assert "16 training items" in line and "2 steps of batch 8" in line and "min at" in line
    summary = json.loads((tmp_path / "art/runs/abcnorm/summary.json").read_text())
    assert summary["steps"] == 2 and summary["plan"]["steps"] == 2
    assert out.index("[plan]") < out.index('"steps"')


def test_a_users_folder_trains_channels_last_where_the_yaml_left_the_default():
    defaults = {"train": {"batch_size": 128, "epochs": 6, "max_steps": None,
                          "channels_last": False}, "optim": {"lr": 0.1, "warmup_steps": 50}}
    cfg = json.loads(json.dumps(defaults))
    assert "train.channels_last" in apply(cfg, defaults, plan(BUDGET, 900, step_s=0.5))
    assert cfg["train"]["channels_last"] is True
