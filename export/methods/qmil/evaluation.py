"""qMIL's headline test metric through an exported model (fp32 or int8)."""
from __future__ import annotations

from typing import Any

import numpy as np

from export.calibration import model_logits
from training.metrics.qmil import bag_accuracy


def bag_acc(model: Any, plugin: Any) -> tuple[float, int]:
    """Bag accuracy (``prob > 0.5``) on the evaluation bags of seen queries
    (``plugin.calibration_items("test")``, those of training's ``bag_acc``), one bag per
    run through ``model`` (:class:`runtime.engine.OnnxModel`). Returns (bag_acc, bags)."""
    bags, labels = plugin.calibration_items("test")
    if labels is None or len(bags) == 0:
        raise ValueError("no test bags")
    logit = model_logits(model, bags, "logit").reshape(-1)   # (N,)
    return bag_accuracy(1.0 / (1.0 + np.exp(-logit)), np.asarray(labels)), int(len(labels))
