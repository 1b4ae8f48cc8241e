"""INT8 export (export/int8.py): the serving rule, the quantised file's manifest entry and
sha256 check, the engine choosing the file the manifest names, and one real smoke model
quantised and evaluated on its test split."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from export import int8
from runtime.engine import Engine, ModelUnavailableError, OnnxModel
from runtime.manifest import read_manifest, served_file, sha256_file, update_manifest
from runtime.preprocess import FASHION_MNIST

RULE = {"min_speedup": 1.3, "max_loss_points": 1.0}


# ------------------------------------------------------------------------- the rule

@pytest.mark.parametrize("m32, m8, ms32, ms8, want, says", [
    (0.90, 0.895, 2.0, 1.0, "int8", "at least 1.3x faster"),      # 2x, -0.5 point
    (0.90, 0.89, 1.3, 1.0, "int8", "at most 1 point"),            # both exactly at the limit
    (0.90, 0.91, 2.0, 1.0, "int8", "+1.00 points"),               # int8 more accurate
    (0.90, 0.90, 1.29, 1.0, "fp32", "under 1.3x faster"),         # just too slow
    (0.90, 0.8899, 3.0, 1.0, "fp32", "loses more than 1 point"),  # just too inaccurate
    (0.90, 0.50, 1.0, 2.0, "fp32", "under 1.3x faster and loses more than 1 point"),
    (float("nan"), 0.9, 2.0, 1.0, "fp32", "not measurable"),
    (0.9, 0.9, 2.0, 0.0, "fp32", "not measurable"),
])
def test_decision_rule_by_hand_made_numbers(m32, m8, ms32, ms8, want, says):
    precision, reason = int8.decide(m32, m8, ms32, ms8, headline="top1", **RULE)
    assert precision == want and says in reason, reason


def test_rule_thresholds_come_from_the_yaml_once():
    cfg = int8.settings()
    assert cfg["min_speedup"] == 1.3 and cfg["max_loss_points"] == 1.0
    assert cfg["calibrate_method"] in ("MinMax", "Entropy", "Percentile")


def test_calibration_chunk_never_divides_the_runs():
    for n in range(1, 80):
        k = int8._chunk(n)
        assert k >= 6 and (k >= n or n % k)


# ------------------------------------------------------- a tiny model, quantised

def _tiny_onnx(path):
    """image (B, 1, 28, 28) -> Conv 8x3x3 -> Relu -> GlobalAveragePool -> Gemm -> logits
    (B, 3), written with onnx.helper (no torch export: fast)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((8, 1, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "b"),
             numpy_helper.from_array(rng.standard_normal((8, 3)).astype(np.float32), "fc"),
             numpy_helper.from_array(rng.standard_normal(3).astype(np.float32), "fcb"),
             numpy_helper.from_array(np.array([-1, 8], np.int64), "shape")]
    nodes = [helper.make_node("Conv", ["image", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["g"]),
             helper.make_node("Reshape", ["g", "shape"], ["f"]),
             helper.make_node("Gemm", ["f", "fc", "fcb"], ["logits"])]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["b", 1, 28, 28])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["b", 3])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


@pytest.fixture()
def tiny_int8(tmp_path):
    """An artifacts folder with a tiny fp32 model and its QDQ int8 version in the manifest."""
    _tiny_onnx(tmp_path / "onnx/tiny.onnx")
    entry = {"name": "tiny", "method": "abcnorm", "version": "t1", "file": "onnx/tiny.onnx",
             "sha256": sha256_file(tmp_path / "onnx/tiny.onnx"), "labels": ["a", "b", "c"],
             "preprocess": FASHION_MNIST.to_dict(), "extra": {}}
    rng = np.random.default_rng(1)
    feeds = [{"image": rng.standard_normal((8, 1, 28, 28)).astype(np.float32)} for _ in range(4)]
    rec = {"file": "onnx/tiny.int8.onnx"}
    rec["quantization"] = int8.quantize(tmp_path / "onnx/tiny.onnx",
                                        tmp_path / rec["file"], feeds, int8.settings())
    rec["sha256"] = sha256_file(tmp_path / rec["file"])
    update_manifest(tmp_path, "tiny", {**entry, "precision": "int8", "int8": rec})
    return tmp_path, feeds


def test_int8_round_trip_engine_serves_the_file_the_manifest_names(tiny_int8):
    import onnx

    art, feeds = tiny_int8
    entry = read_manifest(art)["models"]["tiny"]
    q = onnx.load(str(art / entry["int8"]["file"]))
    ops = {n.op_type for n in q.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops                 # QDQ, not dynamic
    assert entry["int8"]["quantization"]["format"].startswith("QDQ")
    assert served_file(entry) == ("onnx/tiny.int8.onnx", entry["int8"]["sha256"], "int8")

    served = Engine(art).get("tiny")
    assert served.precision == "int8" and served.path == art / "onnx/tiny.int8.onnx"
    fp32 = OnnxModel("tiny", entry, art, precision="fp32")
    assert fp32.path == art / "onnx/tiny.onnx"
    x = feeds[0]["image"]
    a, b = fp32.run({"image": x})["logits"], served.run({"image": x})["logits"]
    assert not np.array_equal(a, b)                                        # another file
    assert np.abs(a - b).max() < 0.1 * np.abs(a).max()                     # same model

    update_manifest(art, "tiny", {**entry, "precision": "fp32"})          # the rule said fp32
    assert Engine(art).get("tiny").path == art / "onnx/tiny.onnx"


def test_corrupt_or_missing_int8_file_is_refused(tiny_int8):
    art, _ = tiny_int8
    path = art / "onnx/tiny.int8.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelUnavailableError, match="does not match the manifest"):
        Engine(art).get("tiny")
    entry = read_manifest(art)["models"]["tiny"]
    update_manifest(art, "tiny", {**entry, "int8": {"reason": "quantisation failed"}})
    with pytest.raises(ModelUnavailableError, match="no int8 file"):
        Engine(art).get("tiny")
    # an fp32 entry (the rule's other answer, or a manifest from before int8) still serves
    update_manifest(art, "tiny", {**entry, "precision": "fp32"})
    assert Engine(art).get("tiny").precision == "fp32"


# -------------------------------------------- a real smoke model, measured as at export

def test_smoke_classifier_quantised_evaluated_and_recorded(smoke_artifacts, tmp_path):
    """abcnorm of the smoke build: the int8 file calibrated on its training images, its
    test top-1 next to fp32's (fp32 through onnxruntime = training's recorded top-1), both
    batch-1 speeds, the decision and its reason in the manifest; the engine serves it."""
    from export.pipeline import view_of
    from methods import get_method, resolve
    from training.checkpoint import load_trained

    src = read_manifest(smoke_artifacts)["models"]["abcnorm"]
    (tmp_path / "onnx").mkdir()
    shutil.copy(smoke_artifacts / src["file"], tmp_path / src["file"])
    entry = {k: v for k, v in src.items() if k not in ("precision", "int8", "sidecars")}
    model, ckpt = load_trained(smoke_artifacts / src["training"]["checkpoint"])
    variant, _ = view_of(model, ckpt)
    config = ckpt["config"]
    plugin = resolve(get_method("abcnorm").plugin)(
        {**config, "run": {**config.get("run", {}), "artifacts": str(smoke_artifacts)}})
    cfg = {**int8.settings(), "calibration_images": 64, "timing_repeats": 10, "timing_warmup": 2}
    plugin_eval = resolve(variant.evaluate)
    out = int8.quantize_run(tmp_path, entry, plugin, variant.headline, plugin_eval, cfg)
    rec = out["int8"]
    assert variant.headline == "top1" and rec["headline"] == "top1"
    assert rec["test_fp32"] == pytest.approx(src["metrics"]["top1"], abs=1e-6)
    assert rec["n_test"] > 0 and 0 <= rec["test_int8"] <= 1
    assert rec["sha256"] == sha256_file(tmp_path / rec["file"])
    assert "64 training images" in rec["quantization"]["calibration"]
    for k in ("ms_batch1_fp32", "ms_batch1_int8", "ms_batch1_fp32_1thread",
              "ms_batch1_int8_1thread"):
        assert rec[k] > 0
    assert out["precision"] == int8.decide(
        rec["test_fp32"], rec["test_int8"], rec["speedup_batch1"], 1.0,
        rec["rule"]["min_speedup"], rec["rule"]["max_loss_points"])[0]
    assert rec["reason"] and json.dumps(out)                               # JSON-able
    update_manifest(tmp_path, "abcnorm", {**entry, **out})
    assert Engine(tmp_path).get("abcnorm").precision == out["precision"]

    # the INT8 file served with the run's sidecars (head weights, domain check): the tab
    # answers with its Grad-CAM (the sidecars belong to the run, not to the served file)
    from app.services.classify import classify

    for side in src["sidecars"].values():
        shutil.copy(smoke_artifacts / side["file"], tmp_path / side["file"])
    update_manifest(tmp_path, "abcnorm", {**entry, **out, "precision": "int8",
                                          "sidecars": src["sidecars"]})
    engine = Engine(tmp_path)
    assert engine.get("abcnorm").path.name == "abcnorm.int8.onnx"
    res = classify(engine, np.full((28, 28, 3), 90, np.uint8), "abcnorm")
    assert res.report["top"] and res.report["domain"] is not None
    assert res.cam.ndim == 3 and res.cam.shape[2] == 3
