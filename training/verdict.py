"""Did the model learn? The held-out metric against chance, with its uncertainty.

A method names its headline held-out metric, the chance level of that metric on its test
set (bag accuracy of balanced bags: 0.5; top-1: the share of the largest test class, 1/C on
a balanced test set; kNN top-1: the same) and the number of independent test items. The
model counts as learned when the metric is clearly above chance: above
``chance + Z * sqrt(chance * (1 - chance) / n)``, the one-sided 97.7% bound of the accuracy
of a guesser on ``n`` items. Otherwise the run is marked ``at_chance`` (summary, checkpoint,
manifest entry, model card, the app's model line).
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterable

Z = 2.0  # standard errors above chance that count as "clearly above"


@dataclass(frozen=True)
class Chance:
    """A method's headline held-out metric, its chance level and its test size."""

    metric: str
    chance: float
    n: int
    unit: str = "test items"


def majority_share(labels: Iterable[Any]) -> float:
    """The share of the most frequent label (the accuracy of always answering it)."""
    counts = Counter(labels)
    total = sum(counts.values())
    return max(counts.values()) / total if total else 0.0


def verdict(metrics: dict[str, Any], chance: Chance | None) -> dict[str, Any] | None:
    """The ``learned`` record of a run: the metric, its chance level, the bound it must
    pass, and ``at_chance``; None when the method has no chance reference or the metric
    was not measured."""
    if chance is None or chance.n <= 0:
        return None
    value = metrics.get(chance.metric)
    if not isinstance(value, (int, float)) or value != value:
        return None
    p0 = min(max(float(chance.chance), 0.0), 1.0)
    bound = p0 + Z * math.sqrt(p0 * (1 - p0) / chance.n)
    return {"metric": chance.metric, "value": round(float(value), 4),
            "chance": round(p0, 4), "bound": round(min(bound, 1.0), 4), "n": int(chance.n),
            "unit": chance.unit, "z": Z, "at_chance": bool(value <= bound)}


def describe(learned: dict[str, Any]) -> str:
    """One line on a ``learned`` record: "bag_acc 0.503, chance 0.500 (clearly above:
    > 0.571 on 200 test bags)"."""
    return (f"{learned['metric']} {learned['value']:.3f}, chance {learned['chance']:.3f} "
            f"(clearly above: > {learned['bound']:.3f} on {learned['n']} {learned['unit']})")


ADVICE = ("try more steps (--set budget.max_seconds=SECONDS or train.max_steps=N), ImageNet "
          "starting weights where they were off (--set pretrained.weights=imagenet), a larger "
          "input size (data.image_size; ABC-Norm: data.size) or more images per class")


def warning(learned: dict[str, Any]) -> str:
    """The CLI's warning for a run at chance (one line)."""
    return (f"[train] warning: this model did not learn - its answers are not meaningful: "
            f"held-out {describe(learned)}; {ADVICE}")
