"""Long-tailed evaluation: top-1 overall and on Many / Medium / Few, per-class accuracy,
confusion matrix, and the per-class accuracy vs class frequency plot (thesis Chapter 4).

Group accuracy is the mean top-1 over the test images of the group's classes (as in Kang
et al. 2020; with a balanced test set this equals the mean of per-class accuracies).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from training.data.longtail import GROUPS


def confusion_matrix(targets: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts M[t, p] of test images of true class t predicted as p. Shape: (C, C), int64."""
    targets, preds = np.asarray(targets, dtype=np.int64), np.asarray(preds, dtype=np.int64)
    return np.bincount(targets * num_classes + preds,
                       minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class_accuracy(cm: np.ndarray) -> np.ndarray:
    """Recall of each class from a confusion matrix; NaN for classes with no test image."""
    support = cm.sum(axis=1).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(cm) / support, np.nan)


def longtail_accuracy(targets: np.ndarray, preds: np.ndarray, groups: Sequence[str]
                      ) -> dict[str, float]:
    """Top-1 overall and per group.

    Args:
        targets: true labels. Shape: (N,).
        preds: predicted labels. Shape: (N,).
        groups: "many" / "medium" / "few" per class id (length C).

    Returns:
        ``{"top1", "many", "medium", "few"}`` in [0, 1]; a group with no test image is NaN.
    """
    targets, preds = np.asarray(targets), np.asarray(preds)
    correct = targets == preds
    out = {"top1": float(correct.mean()) if len(correct) else float("nan")}
    group_of = np.asarray(list(groups))
    for g in GROUPS:
        mask = np.isin(targets, np.flatnonzero(group_of == g))
        out[g] = float(correct[mask].mean()) if mask.any() else float("nan")
    return out


def plot_per_class_accuracy(class_counts: Sequence[int], accuracies: dict[str, Sequence[float]],
                            class_names: Sequence[str], path: str | Path,
                            title: str = "") -> None:
    """Per-class accuracy (one line per method) against training images per class.

    Args:
        class_counts: N_j per class id.
        accuracies: method -> per-class accuracy (by class id).
        class_names: names by class id.
        path: PNG to write.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = np.argsort(-np.asarray(class_counts), kind="stable")
    fig, ax1 = plt.subplots(figsize=(9, 4.5))
    ax1.bar(range(len(order)), np.asarray(class_counts)[order], color="#dddddd")
    ax1.set_yscale("log")
    ax1.set_ylabel("training images (log)")
    ax1.set_xticks(range(len(order)))
    ax1.set_xticklabels([class_names[i] for i in order], rotation=45, ha="right")
    ax2 = ax1.twinx()
    for name, acc in accuracies.items():
        ax2.plot(range(len(order)), np.asarray(acc)[order], marker="o", label=name)
    ax2.set_ylabel("test accuracy")
    ax2.set_ylim(0, 1)
    ax2.legend(loc="lower left", fontsize=8)
    ax1.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_confusion_matrix(cm: np.ndarray, class_names: Sequence[str], path: str | Path,
                          title: str = "") -> None:
    """Row-normalised confusion matrix as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(6, 5.5))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(class_names)))
    ax.set_yticks(range(len(class_names)))
    ax.set_xticklabels(class_names, rotation=45, ha="right", fontsize=8)
    ax.set_yticklabels(class_names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
