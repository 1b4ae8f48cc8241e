"""Temperature scaling and ECE (export/calibration.py): ECE by hand, its bin boundary, the
fitted temperature recovers a known one, and the served probabilities are the calibrated
ones of the manifest's temperature."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from export import calibration as cal


def test_ece_by_hand():
    # softmax: confidences 0.9 (right), 0.9 (wrong), 0.6 (right), 0.6 (right)
    p = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.4, 0.6]])
    y = np.array([0, 1, 0, 1])
    # bin of 0.9: |0.5 - 0.9| * 2/4; bin of 0.6: |1.0 - 0.6| * 2/4
    assert cal.ece(p, y, "softmax") == pytest.approx(0.5 * 0.4 + 0.5 * 0.4)
    # sigmoid: p 0.8 (label 1: right, conf 0.8), 0.3 (label 1: wrong, conf 0.7)
    assert cal.ece(np.array([[0.8, 0.3]]), np.array([[1, 1]]), "sigmoid") == \
        pytest.approx(0.5 * abs(1 - 0.8) + 0.5 * abs(0 - 0.7))


def test_ece_bin_holds_its_upper_edge():
    """Bin m holds confidences in ((m - 1) / M, m / M]: a confidence of exactly 8/15 shares
    the bin of 7.5/15 (both wrong), not of 8.5/15 (right)."""
    c = np.array([8 / 15, 7.5 / 15 + 1e-9, 8.5 / 15])
    p = np.stack([c, 1 - c], axis=1)
    y = np.array([1, 1, 0])
    got = cal.ece(p, y, "softmax")
    want = (2 / 3) * abs(0 - (c[0] + c[1]) / 2) + (1 / 3) * abs(1 - c[2])
    assert got == pytest.approx(want)


@pytest.mark.parametrize("kind", ["softmax", "sigmoid"])
def test_fitted_temperature_recovers_the_true_one(kind):
    rng = np.random.default_rng(0)
    z = rng.normal(0, 3, (20000, 4))
    true_t = 2.5
    p = cal.probabilities(z, true_t, kind)
    if kind == "softmax":
        y = np.array([rng.choice(4, p=row) for row in p])
    else:
        y = (rng.random(p.shape) < p).astype(int)
    t = cal.fit_temperature(z, y, kind)
    assert t == pytest.approx(true_t, rel=0.05)
    assert cal.ece(cal.probabilities(z, t, kind), y, kind) < \
        cal.ece(cal.probabilities(z, 1.0, kind), y, kind)


@pytest.mark.slow
def test_served_probabilities_use_the_manifest_temperature(smoke_artifacts):
    from runtime.engine import Engine

    manifest = json.loads((smoke_artifacts / "manifest.json").read_text())["models"]
    for name in ("abcnorm", "seqfake"):
        c = manifest[name]["calibration"]
        assert c["temperature"] > 0 and 0 <= c["ece_test_after"] <= 1
        assert c["fitted_on"].startswith("validation")
    fashion = sorted((smoke_artifacts / "examples" / "fashion").glob("*.png"))[0]
    r = subprocess.run([sys.executable, "-m", "app.cli", "--artifacts", str(smoke_artifacts),
                        "classify", str(fashion)], capture_output=True, text=True, timeout=300)
    rep = json.loads(r.stdout)
    model = Engine(smoke_artifacts).get("abcnorm")
    from PIL import Image

    logits = model.run({"image": model.prepare([np.asarray(Image.open(fashion))])})["logits"][0]
    z = logits.astype(np.float64) / manifest["abcnorm"]["calibration"]["temperature"]
    want = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    assert rep["top"][0]["probability"] == pytest.approx(want.max(), abs=1e-4)
    assert rep["temperature"] == manifest["abcnorm"]["calibration"]["temperature"]


@pytest.mark.slow
def test_the_qmil_bag_probability_is_calibrated_on_unseen_training_images(smoke_artifacts):
    """The bag temperature: fitted on validation bags made only of training images that no
    training bag holds, applied to the served probability as sigmoid(logit / T)."""
    from app.services import qmil as qmil_svc
    from methods import get_method, resolve
    from runtime.engine import Engine

    entry = json.loads((smoke_artifacts / "manifest.json").read_text())["models"]["qmil"]
    cal = entry["calibration"]
    assert cal["kind"] == "sigmoid" and cal["output"] == "logit"
    assert cal["fitted_on"].startswith("validation") and "bags" in cal["fitted_on"]
    cfg = {**entry["training"]["config"]}
    cfg["run"] = {**cfg["run"], "artifacts": str(smoke_artifacts)}
    plugin = resolve(get_method("qmil").plugin)(cfg)
    unused = plugin._unused_train()
    used = plugin.train_bags().indices
    assert len(unused) and not np.isin(unused, used[used >= 0]).any()
    items, labels = plugin.calibration_items("val")
    assert len(items) == cal["n_val"] == len(labels) and set(labels) == {0, 1}
    pool = {plugin.split("train").images[i].tobytes() for i in unused}
    assert all(im.tobytes() in pool for bag in items[:20] for im in bag["images"])
    # served: sigmoid(logit / T) of the model's own logit
    model = Engine(smoke_artifacts).get("qmil")
    from PIL import Image

    bag = [np.asarray(Image.open(p)) for p in
           sorted((smoke_artifacts / "examples" / "fashion").glob("*.png"))[:4]]
    q = qmil_svc.query_vector("bag")
    logit = float(model.run({"images": model.prepare(bag)[None], "mask": np.ones((1, 4), np.float32),
                             "query": q[None]})["logit"][0])
    rep = qmil_svc.query_bag(Engine(smoke_artifacts), None, "bag", images=bag).report
    assert rep["temperature"] == cal["temperature"] != 1.0
    assert rep["probability"] == pytest.approx(1 / (1 + np.exp(-logit / cal["temperature"])),
                                               abs=1e-4)
