"""The domain check: is an input like the data the model was trained on?

A Gaussian model of the training data in the model's own feature space (Lee et al. 2018,
"A simple unified framework for detecting out-of-distribution samples"): class means
``mu_k`` (one mean when the data has no labels) and one shared covariance ``Sigma`` (with
Ledoit-Wolf shrinkage, so it stays invertible when there are fewer images than feature
dimensions). The score of a feature vector ``x`` is its smallest squared Mahalanobis distance
to a class mean,

    s(x) = min_k (x - mu_k)^T Sigma^-1 (x - mu_k),

and an input is *in domain* when ``s(x) <= threshold``; the threshold is a percentile (99th
by default, ``export/domain.yaml``) of the scores of held-out training images the fit did not
see. Fitted at export (:mod:`export.domain`), stored beside the ONNX file as
``<model>.domain.npz`` (sha256 in the manifest, checked like the model), read here with
numpy only.

Features are read from the model's ONNX outputs named by its variant (``Variant.domain``):
a 4-D map (B, C, h, w) is averaged over h, w; other outputs are flattened per input; the
pieces are concatenated in order. A bag model's check (``unit: instance`` in its record)
reads (B, K, D) outputs, one row per image of a bag (B * K rows): it judges every image,
and :func:`bag_check` the bag.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

SUFFIX = ".domain.npz"


class DomainFileError(RuntimeError):
    """The domain sidecar is missing, corrupt or does not match the manifest."""

    user_error = True


def features(outputs: dict[str, np.ndarray], names: Sequence[str],
             per_instance: bool = False) -> np.ndarray:
    """(B, D) float64 feature vectors from a model's outputs (see the module docstring);
    ``per_instance``: the outputs are (B, K, D) per image of a bag, giving (B * K, D)."""
    parts = []
    for name in names:
        a = np.asarray(outputs[name], dtype=np.float64)
        if per_instance:
            if a.ndim != 3:
                raise ValueError(f"instance features {name!r} must be (B, K, D), got {a.shape}")
            a = a.reshape(-1, a.shape[-1])
        elif a.ndim == 4:
            a = a.mean(axis=(2, 3))
        parts.append(a.reshape(a.shape[0], -1))
    return np.concatenate(parts, axis=1)


@dataclass
class DomainModel:
    """means (K, D), precision (D, D) = Sigma^-1, threshold (squared distance)."""
    means: np.ndarray
    precision: np.ndarray
    threshold: float

    def score(self, x: np.ndarray) -> np.ndarray:
        """(B,) smallest squared Mahalanobis distance of each row of ``x`` (B, D)."""
        d = x[:, None, :] - self.means[None, :, :]               # (B, K, D)
        return np.einsum("bkd,de,bke->bk", d, self.precision, d).min(axis=1)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"means": self.means, "precision": self.precision,
                "threshold": np.asarray(self.threshold)}


def fit(x: np.ndarray, labels: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Class means (K, D) and the shared precision matrix (D, D) of features ``x`` (N, D).

    The covariance is that of the features minus their class mean, shrunk towards a scaled
    identity by the Ledoit-Wolf estimate of the shrinkage."""
    from sklearn.covariance import ledoit_wolf

    x = np.asarray(x, dtype=np.float64)
    if labels is None:
        labels = np.zeros(len(x), dtype=np.int64)
    classes = np.unique(labels)
    means = np.stack([x[labels == c].mean(axis=0) for c in classes])
    centred = x - means[np.searchsorted(classes, labels)]
    cov, _ = ledoit_wolf(centred, assume_centered=True)
    return means, np.linalg.pinv(cov, hermitian=True)


def calibrate(model_means: np.ndarray, precision: np.ndarray, held_out: np.ndarray,
              percentile: float, labels: np.ndarray | None = None) -> DomainModel:
    """The threshold: the ``percentile`` of the held-out in-domain scores.

    With ``labels`` each held-out image weighs 1 / (its class's count), so every class counts
    the same: on long-tailed training data the threshold then covers the rare classes too
    (a plain percentile would be set by the frequent ones and flag rare-class inputs)."""
    probe = DomainModel(model_means, precision, float("inf"))
    scores = probe.score(np.asarray(held_out, dtype=np.float64))
    if labels is None:
        return DomainModel(model_means, precision, float(np.percentile(scores, percentile)))
    labels = np.asarray(labels)
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    w = 1.0 / counts[inverse]
    order = np.argsort(scores)
    cum = np.cumsum(w[order]) / w.sum()
    k = int(np.searchsorted(cum, percentile / 100.0))
    return DomainModel(model_means, precision, float(scores[order][min(k, len(order) - 1)]))


def check(model: DomainModel, x: np.ndarray, trained_on: str = "") -> list[dict[str, Any]]:
    """One answer per row of ``x`` (B, D): in_domain, score, threshold, trained_on."""
    return [{"in_domain": bool(s <= model.threshold), "score": round(float(s), 3),
             "threshold": round(model.threshold, 3), "trained_on": trained_on}
            for s in model.score(np.asarray(x, dtype=np.float64))]


def bag_check(instances: list[dict[str, Any]], min_in_domain: float) -> dict[str, Any]:
    """The bag's answer from its instances' :func:`check` answers: in domain when at least
    ``min_in_domain`` of its images are (a bag of in-domain images then passes even though
    each image is flagged with probability 1 - percentile / 100, which for a bag of 64 would
    flag half of all in-domain bags if one flagged image failed the bag); ``score`` is the
    median instance score, the counts say how many images are out."""
    if not instances:
        raise ValueError("an empty bag has no domain answer")
    n_in = sum(bool(d["in_domain"]) for d in instances)
    return {"in_domain": bool(n_in >= min_in_domain * len(instances)),
            "score": round(float(np.median([d["score"] for d in instances])), 3),
            "threshold": instances[0]["threshold"], "trained_on": instances[0]["trained_on"],
            "instances_in_domain": int(n_in), "instances": len(instances),
            "min_in_domain": float(min_in_domain)}


def load(path: str | Path, sha256: str | None) -> DomainModel:
    """The sidecar at ``path``, refused unless its sha256 matches the manifest's."""
    return _load(str(path), sha256)


@functools.lru_cache(maxsize=16)
def _load(path: str, sha256: str | None) -> DomainModel:
    from runtime.manifest import sha256_file

    side = Path(path)
    if not side.is_file():
        raise DomainFileError(f"domain check {side.name} is missing; re-export the model.")
    if sha256_file(side) != sha256:
        raise DomainFileError(f"domain check {side.name} does not match the manifest's sha256 "
                              f"(corrupt or replaced); re-export the model.")
    with np.load(side, allow_pickle=False) as z:
        return DomainModel(z["means"], z["precision"], float(z["threshold"]))
