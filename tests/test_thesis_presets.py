"""The thesis presets (training/configs/thesis/<method>.yaml): their own values load as the
thesis states them, and each trains two steps through ``python -m training`` on a fixture
(small input size and batch by --set; everything else as the preset has it)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training.__main__ import main
from training.checkpoint import load_checkpoint
from training.config import CONFIG_DIR, resolve_config
from tests.test_seqfake_data import write_fixture as write_seqdeepfake

PRESETS = CONFIG_DIR / "thesis"


def _preset(method: str) -> dict:
    return resolve_config(method, PRESETS / f"{method}.yaml")


def test_there_is_one_preset_per_method():
    assert sorted(p.stem for p in PRESETS.glob("*.yaml")) == ["abcnorm", "dcl", "qmil",
                                                              "seqfake"]


def test_the_presets_hold_the_thesis_settings():
    a = _preset("abcnorm")
    assert (a["model"]["real_data"]["backbone"], a["data"]["size"], a["train"]["epochs"],
            a["train"]["batch_size"], a["optim"]["name"], a["optim"]["schedule"]) == \
        ("resnet50", [224, 224], 90, 128, "sgd", "cosine")
    assert a["optim"]["lr"] == pytest.approx(0.004 * 128) and a["loss"]["lam"] == 0.5
    s = _preset("seqfake")
    assert (s["model"]["backbone"], s["model"]["depth"], s["data"]["img_size"],
            s["train"]["epochs"], s["optim"]["lr"], s["optim"]["schedule"],
            s["loss"]["tau"], s["loss"]["reg_reduction"]) == \
        ("resnet50", 1, 256, 200, 2.5e-4, "cosine", 0.2, "sum")
    d = _preset("dcl")
    assert (d["model"]["name"], d["model"]["kwargs"]["stem"], d["data"]["image_size"],
            d["train"]["epochs"], d["train"]["batch_size"], d["optim"]["name"],
            d["optim"]["lr"], d["dcl"]["temperature"]) == \
        ("dcl_resnet18", "cifar", 32, 200, 256, "sgd", 0.03, 0.07)
    q = _preset("qmil")
    assert (q["model"]["encoder"], q["optim"]["name"], q["optim"]["lr"],
            q["optim"]["weight_decay"], q["loss"]["lam"], q["model"]["temperature"]) == \
        ("lenet", "adam", 1e-4, 1e-5, 1e-4, 0.5)
    for cfg in (a, s, d, q):
        assert cfg["train"]["amp"] == "auto" and cfg["pretrained"]["weights"] is None


def _image_folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for split, n in (("train", 4), ("val", 2)):
        for c in ("heron", "ibis", "stork"):
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(
                    d / f"{i}.png")
    return root


def _two_steps(tmp_path: Path, method: str, data: Path | None, *sets: str) -> dict:
    argv = [method, "--config", str(PRESETS / f"{method}.yaml"), "--artifacts",
            str(tmp_path / "art"), "--no-progress", "--set", "train.max_steps=2",
            "--set", "train.log_every=1"]
    if data is not None:
        argv += ["--data", str(data)]
    for s in sets:
        argv += ["--set", s]
    assert main(argv) == 0
    run = tmp_path / "art" / "runs" / f"{method}_thesis"
    ckpt = load_checkpoint(run / "checkpoint.pt")
    assert ckpt["global_step"] == 2 and ckpt["finished"]
    losses = [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()
              if '"loss"' in line]
    assert len(losses) == 2 and all(np.isfinite(losses))
    return ckpt


def test_abcnorm_preset_trains_two_steps_on_an_image_folder(tmp_path):
    ckpt = _two_steps(tmp_path, "abcnorm", _image_folder(tmp_path / "birds"),
                      "data.size=[32, 32]", "train.batch_size=4", "train.num_workers=2",
                      "train.amp=bf16")
    assert ckpt["model_spec"]["kwargs"]["backbone"] == "resnet50"
    assert ckpt["config"]["train"]["channels_last"] is True


def test_seqfake_preset_trains_two_steps_on_a_seqdeepfake_folder(tmp_path):
    ckpt = _two_steps(tmp_path, "seqfake", write_seqdeepfake(tmp_path / "seq"),
                      "data.img_size=64", "train.batch_size=2", "train.num_workers=2",
                      "eval.batch_size=4")
    assert ckpt["model_spec"]["name"] == "seqfake_resnet50"


def test_dcl_preset_trains_two_steps(tmp_path):
    _two_steps(tmp_path, "dcl", None, "data.train_subset=64", "train.batch_size=16",
               "eval.gallery_size=64", "eval.test_size=32", "eval.k=8",
               "eval.random_init_reference=false")


def test_qmil_preset_trains_two_steps(tmp_path):
    _two_steps(tmp_path, "qmil", None, "data.bags_per_query=4", "train.batch_size=4",
               "data.eval_bags_per_query=4")
