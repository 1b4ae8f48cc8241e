"""``python -m training seqfake --data DIR`` on a tiny Seq-DeepFake fixture (a few steps)."""
from __future__ import annotations

import pytest
import torch

from training.__main__ import main
from tests.test_seqfake_data import write_fixture

FAST = ["--set", "train.epochs=1", "--set", "model.out_indices=[2, 3]", "--set",
        "train.batch_size=2", "--set", "data.img_size=32", "--set", "model.dim=32", "--set", "model.heads=2", "--set", "train.log_every=1",
        "--set", "optim.warmup_steps=0", "--no-progress"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _ckpt(art, name="seqfake"):
    return torch.load(art / "runs" / name / "checkpoint.pt", weights_only=True)


@pytest.fixture(scope="module")
def fixture_root(tmp_path_factory):
    return write_fixture(tmp_path_factory.mktemp("seqdf"))


def test_trains_on_seqdeepfake_folder(fixture_root, tmp_path):
    rc = main(["seqfake", "--data", str(fixture_root), "--artifacts", str(tmp_path), *FAST])
    assert rc == 0
    ck = _ckpt(tmp_path)
    assert ck["finished"] and ck["global_step"] == 2
    assert ck["model_spec"]["name"] == "seqfake_mobilenetv2_100"  # a folder: ImageNet MobileNetV2
    extra = ck["extra"]
    assert extra["labels"] == ["nose", "eye", "eyebrow", "lip", "hair"]
    assert extra["task"] == "components" and extra["threshold"] == 0.5
    assert extra["preprocess"]["size"] == [32, 32] and extra["preprocess"]["channels"] == 3
    for key in ("fixed_acc", "adaptive_acc", "multilabel_acc", "random_order_adaptive_acc"):
        assert 0.0 <= ck["metrics"][key] <= 1.0
    # the stored spec rebuilds the network, and the weights load into it
    from models.registry import create_model
    m = create_model(ck["model_spec"]["name"], **ck["model_spec"]["kwargs"])
    m.load_state_dict(ck["model"])


def test_baseline_and_binary_modes(fixture_root, tmp_path):
    assert main(["seqfake", "--data", str(fixture_root), "--artifacts", str(tmp_path),
                 "--set", "model.arch=seqfakeformer", "--set", "run.name=sff", *FAST]) == 0
    assert _ckpt(tmp_path, "sff")["model_spec"]["name"] == "seqfakeformer_mobilenetv2_100"
    assert main(["seqfake", "--data", str(fixture_root), "--artifacts", str(tmp_path),
                 "--set", "data.task=binary", "--set", "run.name=bin", *FAST]) == 0
    ck = _ckpt(tmp_path, "bin")
    assert ck["extra"]["task"] == "binary" and ck["model_spec"]["kwargs"]["num_classes"] == 1
    assert {"auc", "video_auc", "mil_auc"} <= set(ck["metrics"])


def test_bad_folder_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    rc = main(["seqfake", "--data", str(tmp_path / "empty"), "--artifacts", str(tmp_path), *FAST])
    assert rc == 2
    assert "not a Seq-DeepFake folder" in capsys.readouterr().err
    rc = main(["seqfake", "--data", str(tmp_path / "nothing"), "--artifacts", str(tmp_path), *FAST])
    assert rc == 2
    assert "nothing: no such file or folder" in capsys.readouterr().err
