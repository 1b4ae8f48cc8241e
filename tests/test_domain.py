"""The domain check (runtime/domain.py, export/domain.py): the Mahalanobis score against an
independent computation, the threshold and its boundary, the sidecar's sha256 check, and the
served answers: in-distribution inputs in domain, other data not, the warning in the UI and
the CLI's JSON, and a model trained on a user's image folder gets a check too."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from scipy.spatial.distance import mahalanobis

from runtime import domain


def test_score_is_the_smallest_squared_mahalanobis_distance():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(3, 3))
    cov = a @ a.T + np.eye(3)
    prec = np.linalg.inv(cov)
    means = np.array([[0.0, 0.0, 0.0], [4.0, -1.0, 2.0]])
    x = rng.normal(size=(6, 3)) * 3
    want = [min(mahalanobis(row, m, prec) ** 2 for m in means) for row in x]
    np.testing.assert_allclose(domain.DomainModel(means, prec, 1.0).score(x), want, rtol=1e-10)


def test_fit_uses_class_means_and_a_shared_covariance():
    """Two classes far apart: the class-conditional fit scores each class's own points as
    close, which a single mean (no labels) cannot."""
    rng = np.random.default_rng(1)
    x = np.r_[rng.normal(0, 1, (400, 2)), rng.normal(20, 1, (400, 2))]
    y = np.r_[np.zeros(400, int), np.ones(400, int)]
    means, prec = domain.fit(x, y)
    np.testing.assert_allclose(np.sort(means[:, 0]), [0, 20], atol=0.3)
    cov = np.linalg.inv(prec)              # the within-class covariance: about the identity
    np.testing.assert_allclose(cov, np.eye(2), atol=0.25)
    mid = np.array([[10.0, 10.0]])         # between the classes: far from both
    assert domain.DomainModel(means, prec, 0).score(mid)[0] > 50
    one_mean, one_prec = domain.fit(x)     # unlabelled: one mean in the middle
    assert domain.DomainModel(one_mean, one_prec, 0).score(mid)[0] < 1


def test_threshold_is_the_percentile_and_the_boundary_is_in_domain():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2000, 4))
    means, prec = domain.fit(x[:1000])
    dm = domain.calibrate(means, prec, x[1000:], 99)
    held = dm.score(x[1000:])
    assert dm.threshold == pytest.approx(np.percentile(held, 99))
    assert np.mean(held > dm.threshold) <= 0.011
    at = domain.DomainModel(means, prec, float(dm.score(x[:1])[0]))  # score == threshold
    assert domain.check(at, x[:1])[0]["in_domain"] is True
    below = domain.DomainModel(means, prec, float(dm.score(x[:1])[0]) - 1e-9)
    assert domain.check(below, x[:1])[0]["in_domain"] is False


def test_class_weighted_threshold_covers_a_rare_class():
    """Held-out scores: 99 images of a frequent class at 1, one of a rare class at 100. A
    plain 99th percentile (about 2) flags the rare class; weighting each class equally puts
    the threshold at the rare image's score."""
    means, prec = np.zeros((1, 1)), np.eye(1)
    x = np.r_[np.ones(99), [10.0]][:, None]                 # scores x^2: 1 (x 99) and 100
    y = np.r_[np.zeros(99, int), [1]]
    assert domain.calibrate(means, prec, x, 99).threshold < 3
    assert domain.calibrate(means, prec, x, 99, y).threshold == pytest.approx(100.0)
    assert domain.calibrate(means, prec, x, 40, y).threshold == pytest.approx(1.0)



class _Identity:
    """A stand-in ONNX model whose one output ``f`` is its input: features = the image."""
    input_names = ["image"]
    preprocess = None

    def prepare(self, images: list) -> np.ndarray:
        return np.stack(images).astype(np.float64)

    def run(self, feeds: dict) -> dict:
        return {"f": feeds["image"]}


def test_the_threshold_comes_from_the_validation_split_the_fit_did_not_see():
    """Worked by hand. 40 training images at +-1 (mean 0, variance 1: score = x^2); 20
    validation images at sqrt(1..20) (scores 1..20). The threshold is the 99th percentile of
    the validation scores, 1 + 0.99 * 19 = 19.81, and a validation image at the threshold
    is in domain, one above it is not. With fewer than min_val validation images it is the
    99th percentile of the 8 training images kept out of the fit (scores 1): 1."""
    from export.domain import fit_for_model, settings

    train = [np.array([1.0 if i % 2 else -1.0]) for i in range(40)]
    val = [np.array([np.sqrt(k)]) for k in range(1, 21)]
    cfg = {**settings(), "min_val": 20, "held_out": 0.2, "percentile": 99, "min_per_dim": 0}
    dm, rec = fit_for_model(_Identity(), train, None, ["f"], cfg, val=(val, None))
    assert dm.threshold == pytest.approx(19.81)
    assert rec["threshold_from"] == "validation images"
    assert (rec["n_fit"], rec["n_held_out"]) == (40, 20)
    got = domain.check(dm, np.array([[np.sqrt(19.81)], [np.sqrt(19.82)]]))
    assert [d["in_domain"] for d in got] == [True, False]
    dm, rec = fit_for_model(_Identity(), train, None, ["f"], {**cfg, "min_val": 21},
                            val=(val, None))
    assert dm.threshold == pytest.approx(1.0)
    assert rec["threshold_from"] == "held-out training images"
    assert (rec["n_fit"], rec["n_held_out"]) == (32, 8)


def test_a_small_fit_keeps_its_principal_directions():
    """Worked by hand: centred points (+-2, +-1, 0) have covariance diag(4, 1, 0), rank 2.
    With one direction kept (4 images, 4 per dimension wanted, 3 dimensions: 4 // 4 = 1)
    the precision is 1/4 along it and, across, 1 / (the mean of the other non-zero
    eigenvalues, 1) = 1 (counting the zero one would give 1 / 0.5 = 2); a full fit (enough
    images) is the Ledoit-Wolf one."""
    c = np.array([[2.0, 1, 0], [-2, -1, 0], [2, -1, 0], [-2, 1, 0]])
    np.testing.assert_allclose(domain.ppca_precision(c, 1), np.eye(3) * [0.25, 1, 1], atol=1e-9)
    means, prec = domain.fit(c, None, min_per_dim=4)
    np.testing.assert_allclose(prec, np.diag([0.25, 1, 1]), atol=1e-9)
    _, full = domain.fit(c, None, min_per_dim=1)
    assert not np.allclose(full, np.diag([0.25, 1, 1]))

def test_features_pool_maps_and_flatten_the_rest():
    out = {"f": np.arange(2 * 3 * 2 * 2, dtype=np.float32).reshape(2, 3, 2, 2),
           "v": np.ones((2, 2, 2), np.float32)}
    feats = domain.features(out, ["f", "v"])
    assert feats.shape == (2, 7)
    np.testing.assert_allclose(feats[0, :3], out["f"][0].mean(axis=(1, 2)))


# --- served ----------------------------------------------------------------------------------
def _cli(art, *args):
    proc = subprocess.run([sys.executable, "-m", "app.cli", "--artifacts", str(art), *map(str, args)],
                          capture_output=True, text=True, timeout=300)
    return proc


@pytest.mark.slow
def test_served_answers_say_whether_the_input_is_in_domain(smoke_artifacts, tmp_path):
    ex = smoke_artifacts / "examples"
    manifest = json.loads((smoke_artifacts / "manifest.json").read_text())["models"]
    for name in ("seqfake", "seqfake_attr", "dcl", "abcnorm", "abcnorm_ce"):
        assert manifest[name]["domain"]["threshold"] > 0, name
        assert manifest[name]["sidecars"][domain.SUFFIX]["sha256"]
    fashion = sorted((ex / "fashion").glob("*.png"))
    face = sorted((ex / "faces").glob("*.png"))[0]
    # in distribution: most of the Fashion-MNIST examples (a 99th-percentile threshold may
    # flag one), the generated face crop
    ins = [json.loads(_cli(smoke_artifacts, "classify", f).stdout)["domain"]["in_domain"]
           for f in fashion]
    assert sum(ins) >= len(ins) - 1
    rep = json.loads(_cli(smoke_artifacts, "face", face, "--crop").stdout)
    assert rep["domain"]["in_domain"] is True and rep["domain"]["trained_on"]
    # elsewhere: a generated face into the classifier and the encoder, a Fashion-MNIST image
    # (upscaled to the face tab's minimum size) into the face model
    for cmd in ("classify", "neighbours"):
        rep = json.loads(_cli(smoke_artifacts, cmd, face).stdout)
        dom = rep["domain"]
        assert dom["in_domain"] is False, cmd
        # out of domain: the model's own features or the generic part over its threshold
        assert dom["score"] > dom["threshold"] or (
            "generic_score" in dom and dom["generic_score"] > dom["generic_threshold"]), dom
    # the batch rows carry it too
    out = json.loads(_cli(smoke_artifacts, "face", face, face, "--crop").stdout)
    assert [r["in_domain"] for r in out["rows"]] == [True]  # one file, named twice


@pytest.mark.slow
def test_the_face_models_check_flags_fashion_mnist(smoke_artifacts, tmp_path):
    """The export's fit on the face model's features, with enough faces (the smoke build has
    48): generated test faces are in domain, Fashion-MNIST images are not."""
    from export.domain import fit_for_model, model_features
    from runtime.engine import Engine
    from runtime.preprocess import PreprocessSpec
    from training.data import faces_synth
    from training.data.fashion_mnist import load_fashion_mnist
    from training.data.seqdeepfake import load_split

    faces_synth.generate(tmp_path, 400, 4, 60, seed=3, verbose=False, workers=1)
    spec = PreprocessSpec(size=(64, 64), channels=3, mean=(0.5,) * 3, std=(0.5,) * 3)
    train = load_split(tmp_path, "components", "train", spec).images
    test = load_split(tmp_path, "components", "test", spec).images
    model = Engine(smoke_artifacts).get("seqfake")
    dm, record = fit_for_model(model, list(train), None, ["features"])
    assert record["n_fit"] == 320 and record["n_held_out"] == 80
    fashion = load_fashion_mnist("test").images[:60]
    s_in = dm.score(model_features(model, list(test), ["features"], 64))
    s_out = dm.score(model_features(model, list(fashion), ["features"], 64))
    from export.domain_report import auroc

    # a barely trained smoke model (the full one: 92 % flagged, AUROC 0.996, reports/domain.md)
    assert np.mean(s_in <= dm.threshold) >= 0.9       # a 99th-percentile threshold
    assert np.mean(s_out > dm.threshold) >= 0.75
    assert auroc(s_in, s_out) >= 0.9


@pytest.mark.slow
def test_a_domain_file_that_does_not_match_is_refused(smoke_artifacts, tmp_path):
    art = tmp_path / "art"
    shutil.copytree(smoke_artifacts, art, ignore=shutil.ignore_patterns("data", "runs"))
    side = art / "onnx" / f"abcnorm{domain.SUFFIX}"
    with np.load(side) as z:
        arrays = dict(z)
    arrays["threshold"] = np.asarray(1e9)           # a doctored threshold: all "in domain"
    np.savez(side, **arrays)
    fashion = sorted((art / "examples" / "fashion").glob("*.png"))[0]
    r = _cli(art, "classify", fashion)
    assert r.returncode == 2 and "does not match the manifest" in r.stderr
    r = _cli(art, "face", sorted((art / "examples" / "faces").glob("*.png"))[0], "--crop")
    assert r.returncode == 0                         # the other models keep answering


@pytest.mark.slow
def test_the_ui_warns_above_an_out_of_domain_answer(smoke_artifacts):
    from gradio_client import handle_file

    from tests.test_app import _serve

    demo, client = _serve(smoke_artifacts)
    try:
        face = sorted((smoke_artifacts / "examples" / "faces").glob("*.png"))[0]
        fashion = sorted((smoke_artifacts / "examples" / "fashion").glob("*.png"))[0]
        text, *_ = client.predict(handle_file(str(face)), "", api_name="/classify")
        assert "unlike the data this model was trained on" in text and "unreliable" in text
        text, *_ = client.predict(handle_file(str(fashion)), "", api_name="/classify")
        assert "unlike the data" not in text
    finally:
        demo.close()


@pytest.mark.slow
def test_a_model_trained_on_a_users_folder_gets_a_domain_check(tmp_path):
    """ABC-Norm on an ImageFolder of colour images: the export fits the check on them."""
    from export.pipeline import export_run
    from tests.test_abcnorm_method import TINY_REAL
    from training.__main__ import main as train

    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("val", 4), ("test", 4)):
        for c, colour in enumerate(((220, 40, 40), (40, 40, 220))):
            d = tmp_path / "data" / split / f"class_{c}"
            d.mkdir(parents=True)
            for i in range(n):
                img = np.clip(rng.normal(colour, 25, (40, 40, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(d / f"{i}.png")
    art = tmp_path / "art"
    sets = [*TINY_REAL, "run.name=mine", "train.max_steps=2", "train.batch_size=8",
            "train.epochs=1"]
    assert train(["abcnorm", "--data", str(tmp_path / "data"), "--artifacts", str(art),
                  "--no-progress", *[x for s in sets for x in ("--set", s)]]) == 0
    entry = export_run(art, "mine", int8=False)
    assert entry["domain"]["n_fit"] + entry["domain"]["n_held_out"] == 24
    assert entry["domain"]["classes"] == 2 and "image folder" in entry["domain"]["trained_on"]


# --- bags (qMIL): per image and for the bag ---------------------------------------------------
def _answers(flags: list[bool], scores: list[float]) -> list[dict]:
    return [{"in_domain": f, "score": s, "threshold": 5.0, "trained_on": "x"}
            for f, s in zip(flags, scores)]


def test_bag_check_needs_the_fraction_of_images_in_domain():
    half = domain.bag_check(_answers([True, False, True, False], [1, 9, 2, 8]), 0.5)
    assert half["in_domain"] is True                 # 2 of 4 = exactly the fraction: in
    assert half["instances_in_domain"] == 2 and half["instances"] == 4
    assert half["score"] == pytest.approx(5.0)      # median of 1, 2, 8, 9
    assert domain.bag_check(_answers([True, False, False, False], [1, 9, 9, 9]), 0.5)[
        "in_domain"] is False
    assert domain.bag_check(_answers([True, True, True, False], [1, 1, 1, 9]), 1.0)[
        "in_domain"] is False                        # every image required
    with pytest.raises(ValueError):
        domain.bag_check([], 0.5)


def test_instance_features_give_one_row_per_image_of_each_bag():
    x = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)  # 2 bags of 3 images
    rows = domain.features({"f": x}, ["f"], per_instance=True)
    assert rows.shape == (6, 4)
    np.testing.assert_array_equal(rows[4], x[1, 1])              # bag 2, image 2
    with pytest.raises(ValueError, match="must be"):
        domain.features({"f": x[:, 0]}, ["f"], per_instance=True)


@pytest.mark.slow
def test_a_bag_answer_says_which_images_are_out_of_domain(smoke_artifacts, tmp_path):
    """qMIL: an answer per image and for the bag; the threshold of a copy of the smoke
    build set between the scores of a bag's images flags exactly those above it, the bag
    follows the export's fraction, and the tab warns with the images' numbers."""
    from app.services import qmil as qmil_svc
    from app.ui_common import domain_warning
    from runtime.engine import Engine
    from runtime.manifest import sha256_file

    art = tmp_path / "art"
    shutil.copytree(smoke_artifacts, art, ignore=shutil.ignore_patterns("data", "runs"))
    manifest_path = art / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    entry = manifest["models"]["qmil"]
    assert entry["domain"]["unit"] == "instance" and entry["domain"]["bag_min_in_domain"] == 0.5
    # the check in the model's own features alone (the generic part: tests/test_domain_real.py)
    side = art / entry["sidecars"][domain.SUFFIX]["file"]
    with np.load(side) as z:
        arrays = {k: v for k, v in z.items() if not k.startswith("generic")}
    np.savez(side, **arrays)
    entry["sidecars"][domain.SUFFIX]["sha256"] = sha256_file(side)
    manifest_path.write_text(json.dumps(manifest))
    domain._load.cache_clear()
    fashion = [np.asarray(Image.open(p)) for p in
               sorted((art / "examples" / "fashion").glob("*.png"))[:3]]
    rng = np.random.default_rng(0)
    bag = fashion + [rng.integers(0, 256, (40, 40, 3), dtype=np.uint8) for _ in range(2)]
    rep = qmil_svc.query_bag(Engine(art), None, "bag", images=bag).report
    assert rep["domain"]["instances"] == 5 and len(rep["attention"]) == 5
    scores = {a["instance"]: a["domain_score"] for a in rep["attention"]}
    assert all(a["in_domain"] == (a["domain_score"] <= rep["domain"]["threshold"])
               for a in rep["attention"])
    # a threshold that keeps exactly the two lowest-scoring images in domain: 2 of 5 < 0.5
    low = sorted(scores.values())
    with np.load(side) as z:
        arrays = dict(z)
    arrays["threshold"] = np.asarray((low[1] + low[2]) / 2)
    np.savez(side, **arrays)
    entry["sidecars"][domain.SUFFIX]["sha256"] = sha256_file(side)
    manifest_path.write_text(json.dumps(manifest))
    domain._load.cache_clear()
    rep = qmil_svc.query_bag(Engine(art), None, "bag", images=bag).report
    out = sorted(a["instance"] for a in rep["attention"] if not a["in_domain"])
    assert len(out) == 3 and rep["domain"]["instances_in_domain"] == 2
    assert rep["domain"]["in_domain"] is False
    text = domain_warning(rep)
    assert "3 of the 5 images" in text and ", ".join(f"#{i}" for i in out) in text
    assert "unreliable" in text


def test_dcl_validation_images_are_the_training_images_its_subset_left_out(tmp_path):
    """The encoder's check reads its threshold from Fashion-MNIST training images outside
    ``train_subset``: none of them is a pre-training image, none a test image."""
    from tests.test_dcl_method import _fixture
    from training.config import apply_overrides, default_config_path, load_config
    from training.methods import build_method

    _fixture(tmp_path / "fm", n_train=64, n_test=20)
    cfg = apply_overrides(load_config(default_config_path("dcl")), [
        f"data.root={tmp_path / 'fm'}", "data.train_subset=40", "run.device=cpu"])
    method = build_method("dcl", cfg)
    train, _ = method.domain_images("train")
    val, labels = method.domain_images("val")
    test, _ = method.domain_images("test")
    assert (len(train), len(val), len(labels), len(test)) == (40, 24, 24, 20)
    seen = {im.tobytes() for im in [*train, *test]}
    assert not any(im.tobytes() in seen for im in val)
