"""The classifier's headline test metric through an exported model (fp32 or int8)."""
from __future__ import annotations

from typing import Any

import numpy as np

from export.calibration import model_logits


def top1(model: Any, plugin: Any) -> tuple[float, int]:
    """Top-1 accuracy on the evaluation images (``plugin.domain_images("test")``, the split
    training's ``top1`` was measured on), logits (N, C) through ``model``
    (:class:`runtime.engine.OnnxModel`) with the serving preprocessing. Returns (top1, N)."""
    images, labels = plugin.domain_images("test")
    if labels is None or len(images) == 0:
        raise ValueError("no labelled test images")
    logits = model_logits(model, list(images), "logits")
    return float((logits.argmax(1) == np.asarray(labels)).mean()), int(len(labels))
