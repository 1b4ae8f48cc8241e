"""SBI's detector imported from published weights, against the authors' network.

``tests/data/published/sbi.json`` holds what efficientnet_pytorch's EfficientNet-B4 (the
network of SBI's ``Detector``) gave on seeded weights and inputs
(``scripts/published_fixtures_sbi.py``); these tests rebuild the same weights in the
authors' key layout from the recipe, without efficientnet_pytorch.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from scripts.published_fixtures_sbi import calibrate_bn, recipe_inputs, recipe_state_dict

FIXTURE = json.loads((Path(__file__).parent / "data" / "published" / "sbi.json").read_text())
KEYS = [(k, list(s)) for k, s in FIXTURE["keys"]]


def _case(side: int) -> dict:
    return next(c for c in FIXTURE["cases"] if c["side"] == side)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread for these tests: B4's many small convolutions on a shared 2-core
    machine ran 10x slower with two threads competing (measured)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def recipe() -> dict[str, torch.Tensor]:
    """The seeded weights in the authors' layout (``net.`` + efficientnet_pytorch keys)."""
    return recipe_state_dict(KEYS, FIXTURE["weights"]["seed"])


def _calibrated(recipe: dict[str, torch.Tensor], side: int):
    """The re-implementation holding the recipe's weights, batch norms set on the case's
    calibration batch as the fixture script set the authors' network."""
    from models.sbi import SBIDetector

    w = FIXTURE["weights"]
    model = SBIDetector()
    model.load_state_dict(recipe, strict=True)
    calibrate_bn(model, recipe_inputs(side, w["calibration_batch"], w["calibration_seed"]))
    return model


def test_key_layout_is_the_authors():
    """Every key of the re-implementation, in order and shape, is efficientnet_pytorch's."""
    from models.sbi import SBIDetector

    mine = [(k, list(v.shape)) for k, v in SBIDetector().state_dict().items()]
    assert mine == KEYS


def test_probabilities_match_the_authors_at_64px(recipe):
    """Same weights, same inputs: softmax[:, 1] within 1e-5 of the authors' network (the
    static padding computed for 380 px applied to a 64 px input, as theirs does)."""
    case = _case(64)
    model = _calibrated(recipe, 64)
    with torch.no_grad():
        got = model(torch.from_numpy(recipe_inputs(64, case["batch"], FIXTURE["inputs"]["seed"])))
    np.testing.assert_allclose(got["fake_prob"].numpy(), case["fake_prob"], atol=1e-5, rtol=0)
    assert np.ptp(case["fake_prob"]) > 1e-3  # the inputs give different answers


def _save(state: dict, path: Path) -> Path:
    torch.save({"model": state, "epoch": 3}, path)
    return path


def _import(args: list[str], capsys) -> tuple[int, str]:
    from export.published.__main__ import main

    code = main(["sbi", *args])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("damage", ["missing", "misshapen"])
def test_damaged_state_dict_is_refused_naming_the_key(recipe, tmp_path, capsys, damage):
    state = dict(recipe)
    key = "net._blocks.7._se_reduce.weight"
    if damage == "missing":
        del state[key]
    else:
        state[key] = torch.zeros(3, 3, 1, 1)
    code, err = _import([str(_save(state, tmp_path / "FFraw.tar")), "--artifacts",
                         str(tmp_path / "art")], capsys)
    assert code == 2 and key in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "art" / "runs").exists()


def test_weights_without_a_quality_are_refused(recipe, tmp_path, capsys):
    code, err = _import([str(_save({}, tmp_path / "weights.tar")), "--artifacts",
                         str(tmp_path / "art")], capsys)
    assert code == 2 and "--ff raw" in err


def test_crop_geometry_hand_worked():
    """Box (100, 50)-(180, 150) in a 300 x 400 (h x w) image: w = 80, h = 100, margins
    10 and 12.5; top int(37.5) = 37, bottom int(162.5) + 1 = 163, left 90, right 191. At the
    image's corner the window is clipped: (-20, -10)-(60, 70) -> int(-30) = -30 -> 0."""
    from runtime.align_sbi import crop_window, sbi_crop

    assert crop_window((100, 50, 180, 150), 300, 400) == (90, 37, 191, 163)
    assert crop_window((-20, -10, 60, 70), 300, 400) == (0, 0, 71, 81)
    assert crop_window((350, 250, 400, 300), 300, 400) == (343, 243, 400, 300)
    rgb = np.zeros((300, 400, 3), np.uint8)
    rgb[37:163, 90:191] = 200           # exactly the window: the crop is uniform
    rgb[36, :] = rgb[:, 89] = 255       # the rows and columns just outside it are not
    crop = sbi_crop(rgb, (100, 50, 180, 150))
    assert crop.shape == (380, 380, 3) and crop.dtype == np.uint8
    assert (crop == 200).all()


@pytest.mark.slow
def test_import_export_onnxruntime_matches_the_authors(recipe, tmp_path, capsys):
    """The whole path: the authors' checkpoint layout -> ``python -m export.published sbi``
    -> the export pipeline -> onnxruntime at 380 px: softmax[:, 1] within 1e-5."""
    from export.pipeline import export_run
    from runtime.engine import OnnxModel
    from runtime.manifest import read_manifest

    case = _case(380)
    state = _calibrated(recipe, 380).state_dict()
    art = tmp_path / "art"
    code, err = _import([str(_save(state, tmp_path / "FFc23.tar")), "--artifacts", str(art)],
                        capsys)
    assert code == 0, err
    export_run(art, "sbi_ffc23", int8=False)
    entry = read_manifest(art)["models"]["sbi_ffc23"]
    assert entry["variant"] == "sbi" and entry["preprocess"]["alignment"] == "sbi"
    assert entry["extra"]["published"]["reported_by_authors"]["auc_cdf"] == 92.87
    model = OnnxModel("sbi_ffc23", entry, art)
    x = recipe_inputs(380, case["batch"], FIXTURE["inputs"]["seed"])
    got = model.run({"image": x})["probs"][:, 0]
    np.testing.assert_allclose(got, case["fake_prob"], atol=1e-5, rtol=0)
    # the served preprocessing of a 380 px uint8 crop is pixels / 255, as the authors' script
    u8 = (x[0].transpose(1, 2, 0) * 255).round().astype(np.uint8)
    np.testing.assert_allclose(model.prepare([u8])[0], x[0], atol=1e-7)
    _check_face_service(art)
    _check_domain_from_folder(art, tmp_path, capsys)


class _OneFace:
    """A detector that finds one given face."""

    name = "given"

    def __init__(self, face) -> None:
        self.face = face

    def detect(self, rgb):
        return [self.face]


def _check_face_service(art: Path) -> None:
    """The face tab's service on the imported model: SBI's crop, the fakeness answer (no
    sequence, says what it detects), unreliable without a domain check, raw answer kept."""
    from app.faces import Face
    from app.services.face import analyze_face_models, batch_rows
    from runtime.align_sbi import sbi_crop
    from runtime.engine import Engine

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    face = Face((200.0, 120.0, 360.0, 330.0), 0.99,
                np.array([[250, 200], [310, 200], [280, 240], [255, 280], [305, 280]], np.float32))
    engine = Engine(art)
    [res] = analyze_face_models(engine, _OneFace(face), rgb, ["sbi_ffc23"], detect_side=None)
    r = res.report
    assert r["alignment"] == "sbi" and np.array_equal(res.crop, sbi_crop(rgb, face.box))
    p = float(engine.get("sbi_ffc23").run({"image": engine.get("sbi_ffc23").prepare(
        [sbi_crop(rgb, face.box)])})["probs"][0, 0])
    assert r["fake_probability"] == pytest.approx(p, abs=1e-4)
    assert r["sequence"] == [] and r["decoder"] == "none" and r["answer"] == "fakeness"
    assert "no component order" in r["sequence_text"]
    assert r["reliability"] == "no_domain_check" and r["verdict"] == "unreliable"
    assert r["raw_verdict"] == ("manipulated" if p >= 0.5 else "real")
    assert r["headline"].startswith("no domain check for this model")
    [row] = batch_rows(engine, _OneFace(face), rgb, ["sbi_ffc23"])
    assert row["p_fake"] == r["fake_probability"] and row["sequence"] == ""
    assert row["verdict"] == "unreliable" and row["raw_verdict"] == r["raw_verdict"]


def _check_domain_from_folder(art: Path, tmp_path: Path, capsys) -> None:
    """``python -m export.published.domain`` fits the imported model's check on a folder the
    user names: answers then carry a domain check naming that folder."""
    import cv2

    from app.services.face import analyze_crop
    from export.published.domain import main
    from runtime.engine import Engine

    faces = tmp_path / "faces"
    faces.mkdir()
    rng = np.random.default_rng(1)
    for i in range(6):
        cv2.imwrite(str(faces / f"{i}.png"), rng.integers(0, 256, (380, 380, 3), np.uint8))
    assert main(["sbi_ffc23", "--faces", str(tmp_path / "none"), "--crops", "--artifacts",
                 str(art)]) == 2 and "--faces" in capsys.readouterr().err
    assert main(["sbi_ffc23", "--faces", str(faces), "--crops", "--artifacts", str(art)]) == 0
    crop = rng.integers(0, 256, (380, 380, 3), np.uint8)
    r = analyze_crop(Engine(art), crop, "sbi_ffc23")
    assert r["reliability"] in ("in_domain", "out_of_domain")
    assert str(faces) in r["domain"]["trained_on"]


def test_video_rule_is_sbis():
    """Per frame the largest fakeness over faces at least half the largest area (a small
    face's 0.99 is dropped), mean over frames with a face (an empty frame is skipped)."""
    from app.services.fakeness import frame_fakeness, video_fakeness

    assert frame_fakeness([(100.0, 0.2), (49.0, 0.99), (50.0, 0.4)]) == 0.4
    assert frame_fakeness([]) is None
    assert video_fakeness([[(100.0, 0.2), (49.0, 0.99)], [], [(10.0, 0.6)]]) == pytest.approx(0.4)
    assert video_fakeness([[], []]) is None


def test_video_score_over_tracks_is_sbis():
    """Two people over three frames, areas 100 and 64: frame 0 keeps both (max 0.7), frames
    1 and 2 have one each: (0.7 + 0.2 + 0.9) / 3. A face of area 16 (< 100 / 2) beside the
    large one is dropped, its 0.95 ignored: (0.3 + 0.2) / 2."""
    from app.faces import Face
    from app.services.video import TrackResult, _fakeness_video
    from app.tracking import Observation, Track

    def track(tid: int, side: float, probs: dict[int, float]) -> tuple[Track, TrackResult]:
        obs = [Observation(f, 0, Face((0.0, 0.0, side, side), 1.0)) for f in probs]
        rows = [{"fake_probability": p} for p in probs.values()]
        return Track(tid, obs), TrackResult(tid, {"timeline": rows}, None, [])

    big = track(1, 10.0, {0: 0.3, 1: 0.2})
    small = track(2, 8.0, {0: 0.7, 2: 0.9})
    assert _fakeness_video([big[0], small[0]], [big[1], small[1]]) == pytest.approx(0.6)
    small = track(2, 4.0, {1: 0.95})
    assert _fakeness_video([big[0], small[0]], [big[1], small[1]]) == pytest.approx(0.25)


def test_the_face_card_says_what_a_fakeness_model_detects():
    """Shown as a finding or as the raw output of no finding, the card says the model is a
    face-swap / blending detector without a component order."""
    from app.tabs.face import face_card

    report = {"headline": "no domain check for this model: x", "reliable": False,
              "reliability": "no_domain_check", "verdict": "unreliable",
              "raw_verdict": "manipulated", "fake_probability": 0.8, "threshold": 0.5,
              "sequence": [], "answer": "fakeness", "model": "sbi", "trained_on": "FF++",
              "detects": "a face-swap / blending detector with no component order"}
    assert "face-swap / blending detector with no component order" in face_card(report)
    report.update(reliable=True, reliability="in_domain", verdict="manipulated")
    assert "face-swap / blending detector with no component order" in face_card(report)
