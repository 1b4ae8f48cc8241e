"""A model that learned nothing is said to have: the held-out metric against chance
(training/verdict.py) in the summary, the checkpoint, the manifest, the model card, the
CLI's last line and the app's model line."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from training.__main__ import main
from training.checkpoint import load_checkpoint
from training.verdict import Chance, majority_share, verdict

TINY_REAL = ["model.real_data={backbone: resnet18, stem: cifar, stem_stride: 2, "
             "backbone_kwargs: {layers: [1, 1, 1, 1], channels: [8, 16, 32, 64]}}",
             "data.size=[16, 16]"]


def _folder(root: Path, classes: int, per_class: int, random_labels: bool, seed: int = 0) -> Path:
    """An ImageFolder (train/ and test/, ``per_class`` images per class in each) of 16 px
    images: each class its own brightness, or (random_labels) the same noise in every
    class, so the folder names say nothing about the pixels."""
    rng = np.random.default_rng(seed)
    for split in ("train", "test"):
        for c in range(classes):
            for i in range(per_class):
                level = 128 if random_labels else 40 + 180 * c // max(1, classes - 1)
                arr = np.clip(rng.normal(level, 40, (16, 16, 3)), 0, 255).astype(np.uint8)
                p = root / split / f"class{c}" / f"{i}.png"
                p.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(arr).save(p)
    return root


def _train(data: Path, art: Path, *sets: str) -> int:
    args = ["abcnorm", "--data", str(data), "--artifacts", str(art), "--no-progress"]
    for s in (*TINY_REAL, "train.batch_size=16", "optim.lr=0.05", "optim.warmup_steps=0", *sets):
        args += ["--set", s]
    return main(args)


def test_the_bound_grows_with_the_uncertainty_of_a_small_test_set():
    small = verdict({"top1": 0.5}, Chance("top1", 1 / 3, 20))
    large = verdict({"top1": 0.5}, Chance("top1", 1 / 3, 2000))
    assert small["at_chance"] and not large["at_chance"]
    assert small["bound"] == pytest.approx(1 / 3 + 2 * np.sqrt(1 / 3 * 2 / 3 / 20), abs=1e-4)
    assert verdict({"bag_acc": 0.503}, Chance("bag_acc", 0.5, 400))["at_chance"]
    assert verdict({}, Chance("top1", 0.5, 10)) is None  # not measured: no verdict
    assert verdict({"top1": 0.9}, None) is None
    assert majority_share([0, 0, 1, 2]) == 0.5


@pytest.mark.slow
def test_a_model_trained_on_random_labels_is_marked_at_chance(tmp_path, capsys):
    data = _folder(tmp_path / "noise", classes=3, per_class=30, random_labels=True)
    art = tmp_path / "art"
    assert _train(data, art, "train.epochs=2") == 0
    err = capsys.readouterr().err
    summary = json.loads((art / "runs/abcnorm/summary.json").read_text())
    learned = summary["learned"]
    assert summary["at_chance"] is True and learned["at_chance"] is True
    assert learned["metric"] == "top1" and learned["chance"] == pytest.approx(1 / 3, abs=1e-3)
    assert learned["value"] <= learned["bound"]
    assert load_checkpoint(art / "runs/abcnorm/checkpoint.pt")["learned"] == learned
    assert "did not learn" in err and "top1" in err and "pretrained" in err
    from export.__main__ import main as export_main
    from runtime.manifest import read_manifest

    assert export_main(["abcnorm", "--artifacts", str(art), "--no-int8"]) == 0
    assert read_manifest(art)["models"]["abcnorm"]["learned"] == learned


def test_a_model_that_learned_is_not_marked(tmp_path, capsys):
    data = _folder(tmp_path / "bright", classes=3, per_class=30, random_labels=False)
    art = tmp_path / "art"
    assert _train(data, art, "train.epochs=4") == 0
    summary = json.loads((art / "runs/abcnorm/summary.json").read_text())
    assert summary["at_chance"] is False, summary["learned"]
    assert summary["learned"]["value"] > summary["learned"]["bound"]
    assert "did not learn" not in capsys.readouterr().err


def _entry(at_chance: bool) -> dict:
    learned = {"metric": "bag_acc", "value": 0.503, "chance": 0.5, "bound": 0.571, "n": 200,
               "unit": "test bags", "z": 2.0, "at_chance": at_chance}
    return {"version": "v1", "variant": "qmil", "labels": ["a", "b"],
            "metrics": {"bag_acc": 0.503}, "learned": learned}


def test_the_app_model_line_and_the_model_card_say_so():
    from app.ui_common import model_summary
    from export.model_cards import card
    from methods import get_method

    for at_chance in (True, False):
        e = _entry(at_chance)
        engine = SimpleNamespace(names=lambda: None, manifest={"models": {"m": e}})
        line = model_summary(engine, "m")
        assert ("this model did not learn: answers are not meaningful" in line) is at_chance
        summary = {"steps": 3, "metrics": e["metrics"], "learned": e["learned"]}
        text = "\n".join(card("m", get_method("qmil"), summary, {}, e))
        assert ("at_chance" in text) is at_chance
        assert "bag_acc 0.503, chance 0.500" in text


def test_a_metric_at_the_bound_is_not_clearly_above_chance():
    """The boundary: 0.5 + 2 * sqrt(0.5 * 0.5 / 400) = 0.55, worked by hand; a metric equal
    to it is at chance, one just above it learned."""
    import math

    bound = 0.5 + 2 * math.sqrt(0.5 * 0.5 / 400)
    assert abs(bound - 0.55) < 1e-12
    assert verdict({"bag_acc": bound}, Chance("bag_acc", 0.5, 400))["at_chance"] is True
    assert verdict({"bag_acc": bound + 1e-9}, Chance("bag_acc", 0.5, 400))["at_chance"] is False
