"""The face models' headline test metrics through an exported model (fp32 or int8)."""
from __future__ import annotations

from typing import Any

import numpy as np

from export.calibration import model_logits
from training.metrics.seqfake import decode, fixed_accuracy, roc_auc, unpad


def _targets(plugin: Any) -> tuple[Any, list[list[int]]]:
    split = plugin.eval_split()
    if len(split.images) == 0:
        raise ValueError("no evaluation faces")
    return split, [unpad(t) for t in split.labels.tolist()]


def fixed_acc(model: Any, plugin: Any) -> tuple[float, int]:
    """Fixed-Acc on the evaluation faces (``plugin.eval_split()``): the sequence decoded
    from the served ``probs`` (N, L) at the run's threshold, as the face tab decodes it.
    Returns (fixed_acc, N)."""
    split, targets = _targets(plugin)
    probs = model_logits(model, list(split.images), "probs")
    return fixed_accuracy(decode(probs, float(plugin.threshold)), targets), len(targets)


def decoder_fixed_acc(model: Any, plugin: Any) -> tuple[float, int]:
    """Fixed-Acc of the decoder baseline: its greedy ``sequence`` (N, S) output."""
    split, targets = _targets(plugin)
    seq = model_logits(model, list(split.images), "sequence").astype(np.int64)
    return fixed_accuracy([unpad(s) for s in seq.tolist()], targets), len(targets)


def binary_auc(model: Any, plugin: Any) -> tuple[float, int]:
    """ROC AUC of real / fake (``probs[:, 0]``) on the evaluation faces."""
    split, targets = _targets(plugin)
    probs = model_logits(model, list(split.images), "probs")
    return roc_auc(probs[:, 0], [int(len(t) > 0) for t in targets]), len(targets)
