"""Atomic writes, manifest validation and the onnxruntime engine's refusals."""
from __future__ import annotations

import json
import os
import threading

import numpy as np
import pytest
import torch

from runtime.engine import Engine, ModelUnavailableError, OnnxModel
from export.onnx_export import export_module
from runtime.artifacts import ArtifactWriteError, atomic_path, write_json_atomic
from runtime.manifest import FORMAT_VERSION, ManifestError, read_manifest, sha256_file, update_manifest
from runtime.preprocess import FASHION_MNIST
from training.checkpoint import save_checkpoint


class _Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3)
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, image):
        f = torch.relu(self.conv(image))
        return self.fc(f.mean(dim=(2, 3))), f


@pytest.fixture()
def tiny_artifacts(tmp_path):
    torch.manual_seed(0)
    m = _Tiny().eval()
    x = torch.randn(2, 1, 28, 28)
    info = export_module(m, (x,), tmp_path / "onnx/tiny.onnx", ["image"], ["logits", "features"],
                         {"image": {0: "b"}, "logits": {0: "b"}, "features": {0: "b"}},
                         [(torch.randn(1, 1, 28, 28),)])
    assert info["max_abs_diff"] < 1e-4
    update_manifest(tmp_path, "tiny", {
        "name": "tiny", "method": "abcnorm", "version": "t1", "file": "onnx/tiny.onnx",
        "sha256": sha256_file(tmp_path / "onnx/tiny.onnx"), "opset": info["opset"],
        "labels": ["a", "b", "c"], "preprocess": FASHION_MNIST.to_dict(), "extra": {}})
    return tmp_path, m


def test_engine_loads_and_matches_torch(tiny_artifacts):
    art, m = tiny_artifacts
    model = Engine(art).get("tiny")
    assert model.provider in ("CPUExecutionProvider", "CUDAExecutionProvider")
    imgs = [np.random.default_rng(i).integers(0, 256, (28, 28), dtype=np.uint8) for i in range(3)]
    x = model.prepare(imgs)
    out = model.run({"image": x})
    ref = m(torch.from_numpy(x))
    np.testing.assert_allclose(out["logits"], ref[0].detach().numpy(), atol=1e-5)
    np.testing.assert_array_equal(out["logits"].argmax(1), ref[0].argmax(1).numpy())


def test_engine_is_thread_safe(tiny_artifacts):
    art, _ = tiny_artifacts
    engine = Engine(art)
    x = np.random.default_rng(0).standard_normal((1, 1, 28, 28), dtype=np.float32)
    want = engine.get("tiny").run({"image": x})["logits"]
    errors, results = [], []

    def worker():
        try:
            for _ in range(20):
                results.append(engine.get("tiny").run({"image": x})["logits"])
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 160
    assert all(np.array_equal(r, want) for r in results)


def test_flipped_byte_is_refused(tiny_artifacts):
    art, _ = tiny_artifacts
    path = art / "onnx/tiny.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelUnavailableError, match="does not match the manifest"):
        Engine(art).get("tiny")


def test_missing_file_and_unknown_model(tiny_artifacts):
    art, _ = tiny_artifacts
    (art / "onnx/tiny.onnx").unlink()
    engine = Engine(art)
    with pytest.raises(ModelUnavailableError, match="missing"):
        engine.get("tiny")
    with pytest.raises(ModelUnavailableError, match="not in"):
        engine.get("qmil")
    assert engine.status()["tiny"]["status"] == "unavailable"


def test_manifest_from_another_version(tiny_artifacts):
    art, _ = tiny_artifacts
    data = json.loads((art / "manifest.json").read_text())
    data["format_version"] = FORMAT_VERSION + 1
    (art / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ManifestError, match="format version"):
        read_manifest(art)
    engine = Engine(art)  # the app still starts, and says why nothing is served
    with pytest.raises(ModelUnavailableError, match="format version"):
        engine.get("tiny")
    (art / "manifest.json").write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        read_manifest(art)


def test_interrupted_write_keeps_the_good_file(tmp_path):
    target = tmp_path / "model.onnx"
    target.write_bytes(b"good")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half-writ")
            raise KeyboardInterrupt
    assert target.read_bytes() == b"good"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]  # temp file cleaned up


def test_interrupted_checkpoint_write_keeps_the_good_file(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"model": {"w": torch.ones(2)}})
    good = path.read_bytes()

    def boom(obj, f, *a, **k):
        with open(f, "wb") as fh:
            fh.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(ArtifactWriteError, match="No space left"):
        save_checkpoint(path, {"model": {"w": torch.zeros(2)}})
    assert path.read_bytes() == good


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_folder_clear_error(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(ArtifactWriteError, match="cannot write"):
            write_json_atomic(ro / "x.json", {})
    finally:
        ro.chmod(0o700)


def test_unwritable_artifacts_path_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("I am a file, not a folder")
    with pytest.raises(ArtifactWriteError, match="cannot write"):
        write_json_atomic(blocker / "sub" / "x.json", {})


def test_read_only_filesystem_clear_error(tmp_path, monkeypatch):
    """EROFS as raised by a read-only mount (simulated: root bypasses chmod)."""
    import tempfile

    def erofs(*a, **k):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", erofs)
    with pytest.raises(ArtifactWriteError, match="Read-only file system.*--artifacts"):
        write_json_atomic(tmp_path / "x.json", {})
