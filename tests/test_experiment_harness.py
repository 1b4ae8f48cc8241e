"""The experiment harness: one cache key, one reuse decision, one provenance record and one
definition of the spread over seeds for every script in training/experiments/."""
from __future__ import annotations

import copy
import json
import shlex
import sys
from pathlib import Path

import numpy as np
import pytest

from training.experiments import harness

REPORTS = Path(__file__).resolve().parent.parent / "reports"


def _toy(*overrides: str) -> dict:
    return harness.resolve_config("toy", list(overrides))


def _leaves(cfg: dict, prefix: str = ""):
    for k, v in cfg.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            yield from _leaves(v, key + ".")
        else:
            yield key, v


def _set(cfg: dict, dotted: str, value) -> dict:
    out = copy.deepcopy(cfg)
    node = out
    *parents, leaf = dotted.split(".")
    for p in parents:
        node = node[p]
    node[leaf] = value
    return out


def _other(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if value is None:
        return 7
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, list):
        return value + [1]
    return {"changed": True}


def test_key_changes_with_every_result_relevant_value_and_not_with_names():
    cfg = _toy()
    key = harness.config_key(cfg, method="toy")
    assert len(key) == 64 and key == harness.config_key(copy.deepcopy(cfg), method="toy")
    leaves = dict(_leaves(cfg))
    assert "optim.lr" in leaves and "toy.input_noise" in leaves
    for dotted, value in leaves.items():
        changed = harness.config_key(_set(cfg, dotted, _other(value)), method="toy")
        if dotted in harness.NON_RESULT_KEYS:
            assert changed == key, dotted
        else:
            assert changed != key, dotted
    # names, logging and paths do not change results
    assert harness.config_key(_toy("run.name=elsewhere"), method="toy") == key
    assert harness.config_key(_toy("train.log_every=7"), method="toy") == key
    # the method, the device type and the script's own settings do
    assert harness.config_key(cfg, method="dcl") != key
    assert harness.config_key(cfg, method="toy", device="cuda") != \
        harness.config_key(cfg, method="toy", device="cpu")
    assert harness.config_key(cfg, method="toy", extra={"probe_epochs": 20}) != \
        harness.config_key(cfg, method="toy", extra={"probe_epochs": 21})
    # key order in the file does not matter (canonical JSON)
    shuffled = {k: cfg[k] for k in reversed(list(cfg))}
    assert harness.config_key(shuffled, method="toy") == key


def test_section_overrides_replace_mappings_whole():
    sections = {"train": {"epochs": 2, "grad_clip": None}, "optim": {"lr": 1.0e-6},
                "toy": {"n": 32, "dropout": 0.0}}
    cfg = harness.resolve_config("toy", harness.section_overrides(sections))
    assert cfg["train"]["epochs"] == 2 and cfg["train"]["grad_clip"] is None
    assert cfg["optim"]["lr"] == 1.0e-6 and cfg["toy"]["n"] == 32


def test_cached_run_is_reused_and_a_changed_config_retrains(tmp_path):
    measured = []

    def measure(trainer, method):
        measured.append(trainer.run_dir)
        return {"mse": method.evaluate(trainer.model, trainer.device)["mse"]}

    cfg = _toy("train.epochs=1", "train.log_every=100")
    first = harness.train_run("toy", cfg, tmp_path, measure=measure, log=None)
    assert not first.reused and first.checkpoint.is_file() and len(measured) == 1
    assert first.run_dir.name == f"toy.{first.key[:12]}"
    assert first.provenance["device"] == first.summary["device"]

    again = harness.train_run("toy", _toy("train.epochs=1", "run.name=renamed"), tmp_path,
                              measure=measure, log=None)
    assert again.reused and again.key == first.key and len(measured) == 1
    assert again.result == first.result and again.summary["metrics"] == first.summary["metrics"]
    assert again.name == "renamed"
    model = again.load_model()  # from the checkpoint
    assert sum(p.numel() for p in model.parameters()) > 0

    changed = harness.train_run("toy", _toy("train.epochs=1", "optim.lr=0.01"), tmp_path,
                                measure=measure, log=None)
    assert not changed.reused and changed.key != first.key and len(measured) == 2
    assert changed.run_dir != first.run_dir and first.checkpoint.is_file()

    fresh = harness.train_run("toy", cfg, tmp_path, measure=measure, reuse=False, log=None)
    assert not fresh.reused and len(measured) == 3

    # the one reuse decision: a record whose config no longer hashes to its key is refused,
    # and so is one whose checkpoint is gone when the caller needs the model
    assert harness.lookup(tmp_path, first.key) is not None
    path = harness.record_path(tmp_path, first.key)
    rec = json.loads(path.read_text())
    rec["config"]["optim"]["lr"] = 0.5
    path.write_text(json.dumps(rec))
    assert harness.lookup(tmp_path, first.key) is None
    assert not harness.train_run("toy", cfg, tmp_path, log=None).reused
    first.checkpoint.unlink()
    assert harness.lookup(tmp_path, first.key) is not None
    assert harness.lookup(tmp_path, first.key, need_checkpoint=True) is None


def test_cached_value_keyed_by_content(tmp_path):
    calls = []
    value, reused = harness.cached_value(tmp_path, {"a": 1}, lambda: calls.append(1) or 5)
    assert (value, reused, len(calls)) == (5, False, 1)
    assert harness.cached_value(tmp_path, {"a": 1}, lambda: 6) == (5, True)
    assert harness.cached_value(tmp_path, {"a": 2}, lambda: 6) == (6, False)


def test_provenance_fields_and_command(monkeypatch):
    args = ["--seeds", "0", "1", "--set", "data.note=two words"]
    prov = harness.provenance(module="training.experiments.qmil_report", args=args)
    assert prov["command"] == shlex.join(["python", "-m", "training.experiments.qmil_report",
                                          *args])
    for k in ("git_commit", "git_dirty", "device", "device_name", "torch", "numpy",
              "onnxruntime", "torch_threads", "platform", "machine", "cpu", "cpu_count",
              "python"):
        assert k in prov, k
    import torch

    assert prov["device"] == ("cuda:0" if torch.cuda.is_available() else "cpu")
    assert prov["torch"] == torch.__version__ and prov["numpy"] == np.__version__
    assert prov["torch_threads"] == torch.get_num_threads()
    import platform

    assert platform.node() not in json.dumps(prov)  # no host name
    monkeypatch.setattr(sys, "argv", ["/x/dcl_sweep.py", "--fresh", "a b"])
    assert harness.command_line("training.experiments.dcl_sweep") == \
        shlex.join(["python", "-m", "training.experiments.dcl_sweep"] + sys.argv[1:])
    text = "\n".join(harness.provenance_lines(prov))
    assert prov["command"] in text and "no GPU" not in text


def test_spread_is_the_sample_std_and_is_named():
    vals = [0.934, 0.946]
    assert harness.spread(vals) == pytest.approx(float(np.std(vals, ddof=1)))
    assert harness.spread([1.0, 2.0, 4.0]) == pytest.approx(float(np.std([1, 2, 4], ddof=1)))
    assert np.isnan(harness.spread([0.5]))
    st = harness.seed_stats(vals)
    assert st["n"] == 2 and st["mean"] == pytest.approx(0.94)
    assert st["sd"] == pytest.approx(0.012 / np.sqrt(2))
    assert harness.fmt_mean_sd(vals) == "0.940 ± 0.008 (mean ± sample std, 2 seeds)"
    assert harness.fmt_mean_sd(vals, label=False) == "0.940 ± 0.008"
    assert harness.fmt_mean_sd(vals, digits=1, scale=100, label=False) == "94.0 ± 0.8"
    assert harness.fmt_mean_sd([0.5]) == "0.500 (1 seed, no spread)"
    assert harness.seed_stats([0.5])["sd"] is None
    assert "sample standard deviation" in harness.legend(2) and "n = 2" in harness.legend(2)


def test_experiment_summaries_use_the_harness_spread():
    from training.experiments import abcnorm_report, dcl_sweep, qmil_report, seqfake_ablation

    runs = [{"loss": "dcl", "batch_size": 32, "seed": s, "knn_top1": k, "linear_top1": k,
             "train_seconds": 1.0} for s, k in ((0, 0.70), (1, 0.74), (2, 0.75))]
    a = dcl_sweep.aggregate(runs)["table"]["dcl@32"]
    assert a["knn_sd"] == pytest.approx(float(np.std([0.70, 0.74, 0.75], ddof=1)))
    st = abcnorm_report._stats([0.5, 0.6])
    assert st["sd"] == pytest.approx(round(float(np.std([50, 60], ddof=1)), 2)) and st["n"] == 2
    per_seed = [{"v": 0.2}, {"v": 0.4}]
    assert harness.seed_stats([r["v"] for r in per_seed])["sd"] == pytest.approx(
        float(np.std([0.2, 0.4], ddof=1)))
    m = {k: 0.5 for k in seqfake_ablation.METRICS}
    sf = seqfake_ablation.summarise([
        {"variant": "full", "seed": s, "metrics": {**m, "fixed_acc": f}, "train_seconds": 1.0,
         "images_per_s_batch1": 1.0, "images_per_s_batch32": 1.0}
        for s, f in ((0, 0.6), (1, 0.7))])["full"]["fixed_acc"]
    assert sf["sd"] == pytest.approx(float(np.std([0.6, 0.7], ddof=1)))
    assert sf["range"] == pytest.approx(0.1)
    assert qmil_report.summarise is not None


@pytest.mark.parametrize("path", sorted(p for p in REPORTS.rglob("*.md")
                                        if "±" in p.read_text()), ids=lambda p: p.name)
def test_every_report_with_a_plus_minus_says_what_it_is(path):
    text = path.read_text()
    assert harness.SPREAD_LEGEND in text
    for stale in ("half the spread", "± sd)", "mean ± std over seeds"):
        assert stale not in text
