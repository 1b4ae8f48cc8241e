"""The authors' SeqFakeFormer, imported and exported, against their own code's outputs.

tests/data/published/seqfakeformer.json was written by scripts/published_fixtures.py, which ran
the authors' classes (github.com/rshaojimmy/SeqDeepFake) outside this project on seeded random
weights: here the same weights are rebuilt from the seed recipe in their key layout, imported
with ``python -m export.published``, exported to ONNX and run through onnxruntime; the step
logits must agree within 1e-4 and the sequences exactly (EOS midway, EOS first: all "no
edit", and no EOS). A state dict with a missing or misshapen key is refused, naming it.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from scripts.published_fixtures import case_image, seeded_state

FIXTURE = json.loads((Path(__file__).parent / "data" / "published" / "seqfakeformer.json")
                     .read_text())
SMALL = FIXTURE["configs"]["small"]


def _published_file(tmp: Path, config: dict, case: dict, key: str = "best_state_dict_fixed",
                    edit=None) -> Path:
    """A checkpoint laid out as the authors' best_model_*.pt, weights from the recipe."""
    state = seeded_state(config["shapes"], FIXTURE["seed"], case["bias_offsets"])
    if edit is not None:
        edit(state)
    path = tmp / f"best_model_{abs(hash(json.dumps(case['bias_offsets'])))}.pt"
    torch.save({key: state, key.replace("state_dict", "val_acc"):
                torch.tensor(0.5, dtype=torch.float64)}, path)
    return path


def _import(tmp: Path, path: Path, config: dict, name: str, *more: str) -> int:
    from export.published.__main__ import main

    return main(["seqfakeformer", str(path), "--task", "components", "--artifacts",
                 str(tmp / "art"), "--name", name, "--img-size",
                 str(config["authors_config"]["dataset"]["imgsize"]), *more])


def _offset_groups(config: dict) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {}
    for case in config["cases"]:
        groups.setdefault(json.dumps(case["bias_offsets"], sort_keys=True), []).append(case)
    return groups


def _check_case(out: dict, case: dict) -> None:
    """The authors' sequence exactly, and their step logits within 1e-4 for every step
    their loop ran (the rest are zero: the loop stopped)."""
    assert out["sequence"][0].tolist() == case["sequence"], case["kind"]
    ran = len(case["step_logits"])
    assert int(out["steps"][0]) == ran
    np.testing.assert_allclose(out["step_logits"][0][:ran], np.array(case["step_logits"]),
                               atol=1e-4, rtol=0, err_msg=case["kind"])
    assert not out["step_logits"][0][ran:].any()


@pytest.fixture(scope="module")
def small_onnx(tmp_path_factory):
    """The first offset group of the small configuration: imported, exported by the export
    pipeline (``python -m export``'s :func:`export.pipeline.export_run`, with the TorchScript
    exporter first: seconds), an onnxruntime session of the served file; with its cases."""
    import functools

    from export import pipeline
    from export.onnx_export import export_module, ort_session
    from methods import get_method

    tmp = tmp_path_factory.mktemp("published")
    cases = next(iter(_offset_groups(SMALL).values()))
    assert _import(tmp, _published_file(tmp, SMALL, cases[0]), SMALL, "sff") == 0
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pipeline, "export_module", functools.partial(export_module,
                                                                dynamo_first=False))
        entry = pipeline.export_run(tmp / "art", "sff", int8=False)
    assert entry["variant"] == "published" and entry["parity_max_abs_diff"] < 1e-4
    assert entry["preprocess"]["alignment"] == "celebahq"
    variant = get_method("seqfake").variants["published"]
    return ort_session(tmp / "art" / entry["file"]), variant, cases, tmp


def test_fixture_covers_the_edge_cases():
    kinds = {c["kind"] for c in SMALL["cases"]}
    assert {"mid_eos", "all_na", "no_eos"} <= kinds
    all_na = next(c for c in SMALL["cases"] if c["kind"] == "all_na")
    assert all_na["sequence"] == [0, 0, 0, 0, 0] and len(all_na["step_logits"]) == 1


def test_onnx_matches_the_authors_code(small_onnx):
    sess, variant, cases, _ = small_onnx
    size = SMALL["authors_config"]["dataset"]["imgsize"]
    for case in cases:
        got = sess.run(None, {"image": case_image(case["image_seed"], size).numpy()})
        _check_case(dict(zip(variant.io.outputs, got)), case)


def test_every_case_matches_through_the_reimplementation():
    """Every case (each offset its own weights), through the re-implemented network."""
    from export.published.seqfakeformer import architecture
    from models.registry import create_model

    size = SMALL["authors_config"]["dataset"]["imgsize"]
    for case in SMALL["cases"]:
        state = seeded_state(SMALL["shapes"], FIXTURE["seed"], case["bias_offsets"])
        with torch.device("meta"):
            model = create_model("seqfakeformer_published",
                                 **architecture(state, Path("x.pt"), size)).eval()
        model.load_state_dict(state, strict=True, assign=True)
        with torch.no_grad():
            out = model(case_image(case["image_seed"], size))
        _check_case({"sequence": out["sequence"].numpy(), "steps": out["steps"].numpy(),
                     "step_logits": out["logits"].numpy()}, case)


def test_batch_rows_decode_as_each_image_alone(small_onnx):
    sess, variant, cases, _ = small_onnx
    size = SMALL["authors_config"]["dataset"]["imgsize"]
    x = torch.cat([case_image(c["image_seed"], size) for c in cases]).numpy()
    got = dict(zip(variant.io.outputs, sess.run(None, {"image": x})))
    for i, case in enumerate(cases):
        _check_case({k: v[i:i + 1] for k, v in got.items()}, case)


def test_run_records_sha256_task_and_the_authors_metrics(small_onnx):
    from runtime.manifest import sha256_file

    _, _, _, tmp = small_onnx
    run = tmp / "art" / "runs" / "sff"
    rec = json.loads((run / "published.json").read_text())
    pt = next(tmp.glob("best_model_*.pt"))
    assert rec["sha256"] == sha256_file(pt) and rec["file"] == pt.name
    assert rec["reported_by_authors"]["fixed_acc"] == 72.65
    assert rec["reported_by_authors"]["adaptive_acc"] == 55.30
    assert "nothing" in rec["measured_here"]
    assert "facial_components" in rec["trained_on"]
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    assert ckpt["metrics"] == {} and ckpt["finished"]
    assert ckpt["extra"]["preprocess"]["alignment"] == "celebahq"
    assert ckpt["extra"]["preprocess"]["mean"] == [0.5, 0.5, 0.5]


@pytest.mark.parametrize("edit, message", [
    (lambda s: s.pop("transformer.decoder.layers.1.point3.weight"),
     "key 'transformer.decoder.layers.1.point3.weight' is missing"),
    (lambda s: s.__setitem__("mlp.layers.1.weight", torch.zeros(512, 500)),
     r"key 'mlp.layers.1.weight' has shape \(512, 500\), expected \(512, 512\)"),
    (lambda s: s.__setitem__("transformer.extra.weight", torch.zeros(3)),
     "unexpected key 'transformer.extra.weight'"),
])
def test_a_wrong_key_is_refused_naming_it(tmp_path, capsys, edit, message):
    import re

    path = _published_file(tmp_path, SMALL, SMALL["cases"][0], edit=edit)
    assert _import(tmp_path, path, SMALL, "bad") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.search(message, err), err
    assert not (tmp_path / "art" / "runs" / "bad" / "checkpoint.pt").exists()


def test_bad_files_are_one_line_and_exit_2(tmp_path, capsys):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    for path, message in ((junk, "cannot be read as a PyTorch checkpoint"),
                          (tmp_path / "missing.pt", "does not exist"),
                          (tmp_path, "is a folder")):
        assert _import(tmp_path, path, SMALL, "bad") == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, err
    wrong = _published_file(tmp_path, SMALL, SMALL["cases"][0])
    assert _import(tmp_path, wrong, SMALL, "bad", "--state", "adaptive") == 2
    assert "no state dict under 'best_state_dict_adaptive'" in capsys.readouterr().err


def test_model_card_labels_the_authors_numbers_as_theirs(small_onnx):
    from export.model_cards import build_cards

    _, _, _, tmp = small_onnx
    text = build_cards(tmp / "art", [])
    card = text[text.index("## `sff`"):]
    assert "Reported by the authors** (their numbers, not measured here): fixed_acc 72.65" in card
    assert "(none measured here)" in card and "generated faces" not in card


def test_the_face_service_serves_it_with_its_alignment(small_onnx):
    """The app's face path: the imported model's crop is CelebA-HQ-aligned from the face's
    landmarks, its answer names that alignment, and its sequence is the ONNX graph's."""
    from types import SimpleNamespace

    from app.faces import Face
    from app.services.face import analyze_face_models
    from runtime.engine import Engine

    _, _, _, tmp = small_onnx
    rgb = np.full((300, 300, 3), 90, np.uint8)
    rgb[100:200, 90:170] = 200
    marks = np.array([[110, 130], [150, 130], [130, 150], [115, 175], [145, 175]], np.float32)
    detector = SimpleNamespace(name="stub", detect=lambda img: [
        Face((90.0, 100.0, 170.0, 200.0), 0.99, marks)])
    engine = Engine(tmp / "art")
    (res,) = analyze_face_models(engine, detector, rgb, ["sff"], detect_side=None)
    assert res.report["alignment"] == "celebahq" and res.report["decoder"] == "autoregressive"
    assert res.report["reliable"] is False           # no domain check for an imported model
    from runtime.align import celebahq_crop

    side = SMALL["authors_config"]["dataset"]["imgsize"]   # made at the model's input size
    np.testing.assert_array_equal(res.crop, celebahq_crop(rgb, Face((0, 0, 1, 1), 1.0, marks),
                                                           side))
