"""The ablation report's summary and checks are computed from the runs, not written by hand."""
from __future__ import annotations

from training.experiments.seqfake_ablation import METRICS, summarise, verdicts


def _run(variant, seed, fixed, adaptive, rnd):
    m = {k: 0.5 for k in METRICS}
    m.update(fixed_acc=fixed, adaptive_acc=adaptive, random_order_adaptive_acc=rnd)
    return {"variant": variant, "seed": seed, "metrics": m, "train_seconds": 10.0,
            "images_per_s_batch1": 5.0, "images_per_s_batch32": 50.0}


def test_summary_and_verdicts():
    runs = [_run("full", 0, 0.80, 0.60, 0.40), _run("full", 1, 0.76, 0.58, 0.38),
            _run("bce_only", 0, 0.60, 0.40, 0.40), _run("bce_only", 1, 0.70, 0.45, 0.41)]
    s = summarise(runs)
    assert s["full"]["fixed_acc"]["mean"] == 0.78
    assert abs(s["bce_only"]["fixed_acc"]["spread"] - 0.10) < 1e-12
    v = verdicts(s)
    c = v["full_vs_bce_only_fixed_acc"]
    assert abs(c["margin"] - 0.13) < 1e-12 and c["holds"]  # 0.13 > max spread 0.10
    assert v["order_learnable_full"]["holds"]
    runs[3]["metrics"]["fixed_acc"] = 0.90  # now the spread (0.30) exceeds the margin
    assert not verdicts(summarise(runs))["full_vs_bce_only_fixed_acc"]["holds"]
