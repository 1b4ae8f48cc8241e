"""Reference outputs of SBI's detector, computed with the authors' model class.

Runs efficientnet_pytorch's ``EfficientNet.from_name("efficientnet-b4", num_classes=2)``
(the network of SBI's ``Detector``, mapooon/SelfBlendedImages ``src/inference/model.py``)
with seeded weights and seeded inputs, and writes only what is small to
``tests/data/published/sbi.json``: the weight recipe (seed, rule), the key list with shapes in
the authors' order, the input recipe and the probabilities ``softmax(logits)[:, 1]``.
``tests/test_published_sbi.py`` rebuilds the same weights and inputs from the recipes
(:func:`recipe_state_dict`, :func:`recipe_inputs`) without efficientnet_pytorch and compares.

efficientnet_pytorch is not one of the project's requirements: install it outside the
project and put it on the path for this one run::

    .venv/bin/python -m pip install --no-deps --target /tmp/effnet efficientnet_pytorch==0.7.1
    PYTHONPATH=/tmp/effnet .venv/bin/python -m scripts.published_fixtures_sbi
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

OUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "published" / "sbi.json"
WEIGHT_SEED = 20220419
INPUT_SEED = 7
PREFIX = "net."  # the Detector keeps the network under ``net``
# (side, batch) of the recorded input batches: 380 is B4's own size (the exported model's);
# 64 runs the same static padding on a small input (the fast torch comparison). Each case
# sets its batch-norm statistics on a calibration batch of its own side (CALIB_SEED)
CASES = ((64, 3), (380, 2))
CALIB_SEED = 11  # the input seed of the batch that sets the batch-norm statistics
CALIB_BATCH = 2
WEIGHT_RULE = ("torch.Generator seeded with `seed`; keys in the recorded order; "
               "num_batches_tracked: 0; running_var: 0.5 + U[0,1); 1-d weight: 0.1 + 0.01 N; "
               "_fc.weight: 20 N / sqrt(fan_in); other weight with >1 dims: "
               "N / sqrt(fan_in) (fan_in = numel / shape[0]); every other tensor: 0.1 N; "
               "then, per case, every batch norm's running mean and variance are the "
               "statistics of the case's calibration batch (inputs of the case's side, "
               "`calibration_batch` images, seed `calibration_seed`) passed through the "
               "network in train mode with momentum 1 (drop-connect off)")


def recipe_tensor(name: str, shape: tuple[int, ...], g: torch.Generator) -> torch.Tensor:
    """One tensor of the weight recipe (:data:`WEIGHT_RULE`)."""
    if name.endswith("num_batches_tracked"):
        return torch.zeros(shape, dtype=torch.long)
    if name.endswith("running_var"):
        return 0.5 + torch.rand(shape, generator=g)
    if name.endswith("weight") and len(shape) == 1:
        return 0.1 + 0.01 * torch.randn(shape, generator=g)
    if name.endswith("weight"):
        fan_in = math.prod(shape) // shape[0]
        gain = 20.0 if name.endswith("_fc.weight") else 1.0
        return gain * torch.randn(shape, generator=g) / math.sqrt(fan_in)
    return 0.1 * torch.randn(shape, generator=g)


def recipe_state_dict(keys: list[tuple[str, list[int]]], seed: int) -> dict[str, torch.Tensor]:
    """The seeded state dict of the recorded ``(name, shape)`` list, in that order."""
    g = torch.Generator().manual_seed(seed)
    return {name: recipe_tensor(name, tuple(shape), g) for name, shape in keys}


def calibrate_bn(net: torch.nn.Module, x: np.ndarray) -> None:
    """Set every batch norm's running statistics to those of batch ``x`` (one train-mode
    pass with momentum 1, no gradients); ``net`` is left in eval mode. Seeded random
    weights alone either lose the input after 32 blocks or overflow; normalised
    activations keep the output input-dependent and finite."""
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.momentum = 1.0
    net.train()
    with torch.no_grad():
        net(torch.from_numpy(x))
    for m, mom in zip(bns, saved):
        m.momentum = mom
    net.eval()


def recipe_inputs(side: int, batch: int, seed: int) -> np.ndarray:
    """(batch, 3, side, side) float32 in [0, 1]: seeded uint8 pixels / 255, as SBI's image
    script feeds its crops."""
    rng = np.random.default_rng([seed, side, batch])
    return (rng.integers(0, 256, (batch, 3, side, side), dtype=np.uint8)
            .astype(np.float32) / 255.0)


def authors_probabilities(net: torch.nn.Module, x: np.ndarray) -> list[float]:
    """``softmax(net(x))[:, 1]`` as the authors' inference scripts read it."""
    with torch.no_grad():
        return net(torch.from_numpy(x)).softmax(1)[:, 1].double().tolist()


def build(out: Path) -> dict[str, Any]:
    """Run the authors' network on the recipes and write ``out``."""
    from efficientnet_pytorch import EfficientNet  # outside the project's requirements

    net = EfficientNet.from_name("efficientnet-b4", num_classes=2).eval()
    keys = [(PREFIX + k, list(v.shape)) for k, v in net.state_dict().items()]
    state = recipe_state_dict(keys, WEIGHT_SEED)
    # the calibration pass runs in train mode: a copy without drop-connect takes it
    calib = EfficientNet.from_name("efficientnet-b4", num_classes=2, drop_connect_rate=0.0)
    cases = []
    for side, batch in CASES:
        calib.load_state_dict({k[len(PREFIX):]: v for k, v in state.items()}, strict=True)
        calibrate_bn(calib, recipe_inputs(side, CALIB_BATCH, CALIB_SEED))
        net.load_state_dict(calib.state_dict(), strict=True)
        cases.append({"side": side, "batch": batch, "fake_prob": authors_probabilities(
            net, recipe_inputs(side, batch, INPUT_SEED))})
    record = {
        "source": "efficientnet_pytorch 0.7.1 EfficientNet.from_name('efficientnet-b4', "
                  "num_classes=2), the network of SBI's Detector (mapooon/SelfBlendedImages)",
        "command": "PYTHONPATH=/tmp/effnet .venv/bin/python -m scripts.published_fixtures_sbi",
        "torch": torch.__version__,
        "weights": {"seed": WEIGHT_SEED, "rule": WEIGHT_RULE, "prefix": PREFIX,
                    "calibration_seed": CALIB_SEED, "calibration_batch": CALIB_BATCH},
        "inputs": {"seed": INPUT_SEED, "rule": "numpy default_rng([seed, side, batch]) "
                   "integers(0, 256, (batch, 3, side, side), uint8) / 255"},
        "cases": cases,
        "keys": keys,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=0) + "\n")
    return record


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scripts.published_fixtures_sbi",
                                description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=OUT, help=f"output JSON (default {OUT})")
    rec = build(p.parse_args(argv).out)
    for case in rec["cases"]:
        print(f"{case['side']} px x {case['batch']}: fake_prob {case['fake_prob']}")
    print(f"{len(rec['keys'])} keys")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
