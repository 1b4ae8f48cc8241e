"""Grad-CAM for ABC-Norm classifiers with pytorch-grad-cam (thesis section 4.4.4).

``python -m training.gradcam CHECKPOINT IMAGE [--class K] [--out overlay.png]`` explains the
predicted class (or class K) of one image on the last convolutional stage.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from PIL import Image
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from runtime.cam import overlay
from runtime.preprocess import PreprocessSpec, to_input, to_pil
from training.checkpoint import load_trained


@dataclass
class Explanation:
    """One Grad-CAM explanation.

    Attributes:
        cam: map in [0, 1] at the input size, shape (H, W).
        class_idx: the explained class; predicted: the model's top-1 class.
        probs: softmax probabilities, shape (C,).
        overlay: uint8 RGB (H, W, 3) heat map over the (resized) input image.
    """

    cam: np.ndarray
    class_idx: int
    predicted: int
    probs: np.ndarray
    overlay: np.ndarray


def load_classifier(path: str | Path) -> tuple[nn.Module, dict]:
    """Rebuild a classifier from a checkpoint; returns (model in eval mode, checkpoint)."""
    return load_trained(path)


def gradcam(model: nn.Module, x: torch.Tensor, class_idx: int | None = None) -> np.ndarray:
    """Grad-CAM on ``model.last_stage()``.

    Args:
        model: a :class:`models.classifier.LongTailClassifier` in eval mode.
        x: one normalised input. Shape: (1, C_in, H, W).
        class_idx: class to explain (default: the predicted class).

    Returns:
        float32 map in [0, 1]. Shape: (H, W).
    """
    targets = None if class_idx is None else [ClassifierOutputTarget(int(class_idx))]
    with GradCAM(model=model, target_layers=[model.last_stage()]) as cam:
        return cam(input_tensor=x, targets=targets)[0]


def explain(model: nn.Module, image: np.ndarray | Image.Image, spec: PreprocessSpec,
            class_idx: int | None = None, alpha: float = 0.5) -> Explanation:
    """Explain one image (uint8 array or PIL image), preprocessed with ``to_input``."""
    x = torch.from_numpy(to_input(image, spec))
    with torch.no_grad():
        probs = model(x).softmax(1)[0].numpy()
    pred = int(probs.argmax())
    k = pred if class_idx is None else int(class_idx)
    cam = gradcam(model, x, k)
    shown = np.asarray(to_pil(image, spec.channels).resize(spec.size[::-1], Image.BILINEAR))
    return Explanation(cam, k, pred, probs, overlay(shown, cam, alpha))


def explain_checkpoint(path: str | Path, image: np.ndarray | Image.Image,
                       class_idx: int | None = None) -> tuple[Explanation, list[str]]:
    """Load a checkpoint and explain one image; also returns the class names."""
    model, ckpt = load_classifier(path)
    spec = PreprocessSpec.from_dict(ckpt["extra"]["preprocess"])
    return explain(model, image, spec, class_idx), list(ckpt["extra"]["labels"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.gradcam", description=__doc__)
    p.add_argument("checkpoint")
    p.add_argument("image")
    p.add_argument("--class", dest="class_idx", type=int, default=None,
                   help="class id to explain (default: the predicted class)")
    p.add_argument("--out", default="gradcam.png")
    args = p.parse_args(argv)
    try:
        with Image.open(args.image) as im:
            image = im.copy()
        exp, labels = explain_checkpoint(args.checkpoint, image, args.class_idx)
    except (OSError, ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    Image.fromarray(exp.overlay).save(args.out)
    print(f"predicted {labels[exp.predicted]} ({exp.probs[exp.predicted]:.3f}); "
          f"explained {labels[exp.class_idx]}; overlay -> {args.out}")
    return 0


if __name__ == "__main__":
    from runtime.cli import run_main

    raise SystemExit(run_main(main))
