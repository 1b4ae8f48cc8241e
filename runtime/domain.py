"""The domain check: is an input like the data the model was trained on?

A Gaussian model of the training data in the model's own feature space (Lee et al. 2018,
"A simple unified framework for detecting out-of-distribution samples"): class means
``mu_k`` (one mean when the data has no labels) and one shared covariance ``Sigma`` (with
Ledoit-Wolf shrinkage, so it stays invertible when there are fewer images than feature
dimensions). The score of a feature vector ``x`` is its smallest squared Mahalanobis distance
to a class mean,

    s(x) = min_k (x - mu_k)^T Sigma^-1 (x - mu_k),

and an input is *in domain* when ``s(x) <= threshold``; the threshold is a percentile (99th
by default, ``export/domain.yaml``) of the scores of in-domain images the fit did not see: the
run's validation split where it has one (images the network did not train on either, whose
features are as far from the training images' as a user's would be), else held-out training
images. A fit on fewer images than ``min_per_dim`` per feature dimension uses a
probabilistic-PCA covariance (:func:`ppca_precision`). Fitted at export
(:mod:`export.domain`), stored beside the ONNX file as ``<model>.domain.npz`` (sha256 in the
manifest, checked like the model), read here with numpy only.

Features are read from the model's ONNX outputs named by its variant (``Variant.domain``):
a 4-D map (B, C, h, w) is averaged over h, w; other outputs are flattened per input; the
pieces are concatenated in order. A bag model's check (``unit: instance`` in its record)
reads (B, K, D) outputs, one row per image of a bag (B * K rows): it judges every image,
and :func:`bag_check` the bag.

A network's own features need not tell a real photograph from its training images (a face
model trained on drawn faces, a classifier trained on 28 px grayscale clothes), so the check
has a second part, fitted the same way on *generic* features of the model's input that no
model training shaped (record ``generic``, arrays ``generic_*`` in the same sidecar):

* ``face_net``: the activations of the third convolution of MTCNN's O-Net (facenet-pytorch's
  weights, trained on real faces), averaged over positions (64-d), read from the face box of
  the aligned crop (:func:`face_box`); the network is the sidecar ``<model>.generic.onnx``;
* ``statistics``: :func:`image_statistics`, a few numbers that separate rendered or scanned
  images from photographs (brightness, contrast, border, fine-detail energy, flat and dark
  area, colour saturation).

An input is in domain when both scores are within their thresholds; the two thresholds are
scaled together at export so that the held-out training images pass at the percentile.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

SUFFIX = ".domain.npz"
GENERIC_SUFFIX = ".generic.onnx"  # the generic network of a ``face_net`` check
FACE_NET_SIDE = 48                # O-Net's input side
# The face box inside an aligned crop (app.faces.align_crop with margin 0.45: the box's side
# is 1 / 1.9 of the crop's, its centre 0.08 of the crop below the crop's centre), as
# fractions of the crop side: x0, y0, x1, y1.
FACE_BOX = (0.237, 0.317, 0.763, 0.843)


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


def pixels(x: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """A model input (N, C, H, W), normalised with ``mean``/``std``, back in [0, 1] pixels."""
    c = (None, slice(None), None, None)
    return np.clip(np.asarray(x, np.float64) * np.asarray(std, np.float64)[c]
                   + np.asarray(mean, np.float64)[c], 0.0, 1.0)


def _laplacian(g: np.ndarray) -> np.ndarray:
    return (4 * g[:, 1:-1, 1:-1] - g[:, :-2, 1:-1] - g[:, 2:, 1:-1] - g[:, 1:-1, :-2]
            - g[:, 1:-1, 2:])


def image_statistics(p: np.ndarray) -> np.ndarray:
    """(N, 11) statistics of images ``p`` (N, C, H, W) in [0, 1]: grey mean and standard
    deviation, log Laplacian and log gradient energy, fraction of flat (|Laplacian| < 1/255)
    and of black (< 1/255) pixels, log kurtosis of the Laplacian, mean colour saturation
    (0 for one channel), border mean and standard deviation, and the log ratio of fine to
    coarse (half-resolution) Laplacian energy."""
    n = len(p)
    g = p.mean(axis=1)
    lap = _laplacian(g)
    e_fine = np.mean(lap ** 2, axis=(1, 2))
    grad = (np.abs(np.diff(g, axis=2)).mean(axis=(1, 2))
            + np.abs(np.diff(g, axis=1)).mean(axis=(1, 2)))
    lc = lap.reshape(n, -1) - lap.reshape(n, -1).mean(axis=1, keepdims=True)
    kurt = np.mean(lc ** 4, axis=1) / (np.mean(lc ** 2, axis=1) ** 2 + 1e-12)
    sat = (p.max(axis=1) - p.min(axis=1)).mean(axis=(1, 2))
    border = np.concatenate([g[:, 0, :], g[:, -1, :], g[:, :, 0], g[:, :, -1]], axis=1)
    h, w = g.shape[1] // 2 * 2, g.shape[2] // 2 * 2
    half = g[:, :h, :w].reshape(n, h // 2, 2, w // 2, 2).mean(axis=(2, 4))
    e_coarse = np.mean(_laplacian(half) ** 2, axis=(1, 2))
    flat = g.reshape(n, -1)
    return np.stack([flat.mean(1), flat.std(1), np.log(e_fine + 1e-6), np.log(grad + 1e-6),
                     np.mean(np.abs(lap) < 1 / 255, axis=(1, 2)), np.mean(g < 1 / 255, axis=(1, 2)),
                     np.log(kurt + 1e-6), sat, border.mean(1), border.std(1),
                     np.log(e_fine + 1e-6) - np.log(e_coarse + 1e-6)], axis=1)


def face_box(p: np.ndarray) -> np.ndarray:
    """O-Net's input (N, 3, 48, 48) from aligned face crops ``p`` (N, C, H, W) in [0, 1]:
    the face box (:data:`FACE_BOX`) resized, scaled as MTCNN scales pixels."""
    import cv2

    h, w = p.shape[2:]
    x0, y0, x1, y1 = (int(round(f * s)) for f, s in zip(FACE_BOX, (w, h, w, h)))
    out = []
    for img in p:
        a = np.ascontiguousarray(img.transpose(1, 2, 0)[y0:y1, x0:x1] * 255.0, np.float32)
        if a.shape[2] == 1:
            a = np.repeat(a, 3, axis=2)
        interp = cv2.INTER_AREA if min(a.shape[:2]) > FACE_NET_SIDE else cv2.INTER_LINEAR
        out.append(cv2.resize(a, (FACE_NET_SIDE, FACE_NET_SIDE), interpolation=interp))
    return ((np.stack(out) - 127.5) * 0.0078125).transpose(0, 3, 1, 2).astype(np.float32)


def generic_features(kind: str, x: np.ndarray, mean: Sequence[float], std: Sequence[float],
                     session: Any = None) -> np.ndarray:
    """(N, D) generic features (module docstring) of model inputs ``x``: (N, C, H, W), or
    (B, K, C, H, W) for a bag model (one row per image). ``session``: the generic network
    (an onnxruntime session, input ``image``, output ``features``) of a ``face_net`` check."""
    x = np.asarray(x)
    if x.ndim == 5:
        x = x.reshape(-1, *x.shape[2:])
    p = pixels(x, mean, std)
    if kind == "statistics":
        return image_statistics(p)
    if kind == "face_net":
        if session is None:
            raise ValueError("a face_net domain check needs its network (session)")
        return np.asarray(session.run(["features"], {"image": face_box(p)})[0], np.float64)
    raise ValueError(f"unknown generic domain features {kind!r}: statistics or face_net")


@dataclass
class Gaussian:
    """means (K, D), precision (D, D) = Sigma^-1, threshold (squared distance)."""
    means: np.ndarray
    precision: np.ndarray
    threshold: float

    def score(self, x: np.ndarray) -> np.ndarray:
        """(B,) smallest squared Mahalanobis distance of each row of ``x`` (B, D)."""
        best = np.full(len(x), np.inf)
        for mean in self.means:                                  # one class at a time:
            d = x - mean                                         # (B, D), BLAS matmul
            best = np.minimum(best, ((d @ self.precision) * d).sum(axis=1))
        return best


@dataclass
class DomainModel(Gaussian):
    """The check in the model's own features, and optionally in generic features."""
    generic: Gaussian | None = None

    def arrays(self) -> dict[str, np.ndarray]:
        out = {"means": self.means, "precision": self.precision,
               "threshold": np.asarray(self.threshold)}
        if self.generic is not None:
            out.update({"generic_means": self.generic.means,
                        "generic_precision": self.generic.precision,
                        "generic_threshold": np.asarray(self.generic.threshold)})
        return out


def fit(x: np.ndarray, labels: np.ndarray | None = None,
        min_per_dim: float = 0) -> tuple[np.ndarray, np.ndarray]:
    """Class means (K, D) and the shared precision matrix (D, D) of features ``x`` (N, D).

    The covariance is that of the features minus their class mean, shrunk towards a scaled
    identity by the Ledoit-Wolf estimate of the shrinkage. With fewer than ``min_per_dim``
    images per dimension (N < min_per_dim * D) it is the probabilistic-PCA covariance
    instead (:func:`ppca_precision`): the top N / min_per_dim principal directions kept,
    the rest one shared variance."""
    from sklearn.covariance import ledoit_wolf

    x = np.asarray(x, dtype=np.float64)
    if labels is None:
        labels = np.zeros(len(x), dtype=np.int64)
    classes = np.unique(labels)
    means = np.stack([x[labels == c].mean(axis=0) for c in classes])
    centred = x - means[np.searchsorted(classes, labels)]
    if min_per_dim > 0 and len(x) < min_per_dim * x.shape[1]:
        return means, ppca_precision(centred, max(1, int(len(x) // min_per_dim)))
    cov, _ = ledoit_wolf(centred, assume_centered=True)
    return means, np.linalg.pinv(cov, hermitian=True)


def ppca_precision(centred: np.ndarray, k: int) -> np.ndarray:
    """The inverse of the probabilistic-PCA covariance of ``centred`` features (N, D)
    (Tipping & Bishop 1999): ``W diag(lambda) W^T + sigma2 (I - W W^T)``, ``W`` the top
    ``k`` eigenvectors of the sample covariance, ``lambda`` their eigenvalues, ``sigma2``
    the mean of the other non-zero eigenvalues (with fewer images than dimensions the
    sample covariance has rank r < D; the variance of new images in the directions the
    training images do not span is taken to be that of the weakest directions they do), i.e.
    ``W diag(1 / lambda) W^T + (I - W W^T) / sigma2``."""
    c = np.asarray(centred, np.float64)
    d = c.shape[1]
    k = min(k, d)
    cov = c.T @ c / max(1, len(c))
    vals, vecs = np.linalg.eigh(cov)
    vals, vecs = vals[::-1], vecs[:, ::-1]
    tiny = 1e-12 * max(float(vals[0]), 1e-12)
    rank = max(k + 1, int(np.sum(vals > 1e-9 * max(float(vals[0]), 1e-300))))
    lam = np.maximum(vals[:k], tiny)
    sigma2 = max(float(vals[k:rank].sum()) / (rank - k), tiny) if k < d else tiny
    w = vecs[:, :k]
    return (w / lam) @ w.T + (np.eye(d) - w @ w.T) / sigma2


def calibrate(model_means: np.ndarray, precision: np.ndarray, held_out: np.ndarray,
              percentile: float, labels: np.ndarray | None = None) -> DomainModel:
    """The threshold: the ``percentile`` of the held-out in-domain scores (images the
    Gaussian was not fitted on; :mod:`export.domain` uses the validation split, images the
    network did not train on either, where the run has one).

    With ``labels`` each held-out image weighs 1 / (its class's count), so every class counts
    the same: on long-tailed training data the threshold then covers the rare classes too
    (a plain percentile would be set by the frequent ones and flag rare-class inputs)."""
    probe = DomainModel(model_means, precision, float("inf"))
    s = probe.score(np.asarray(held_out, dtype=np.float64))
    return DomainModel(model_means, precision, weighted_percentile(s, percentile, labels))


def weighted_percentile(scores: np.ndarray, percentile: float,
                        labels: np.ndarray | None = None) -> float:
    """The ``percentile`` of ``scores``, each class of ``labels`` weighted equally."""
    scores = np.asarray(scores, dtype=np.float64)
    if labels is None:
        return float(np.percentile(scores, percentile))
    _, inverse, counts = np.unique(np.asarray(labels), return_inverse=True, return_counts=True)
    w = 1.0 / counts[inverse]
    order = np.argsort(scores)
    cum = np.cumsum(w[order]) / w.sum()
    k = int(np.searchsorted(cum, percentile / 100.0))
    return float(scores[order][min(k, len(order) - 1)])


def joint(model: DomainModel, generic: Gaussian, held_out: np.ndarray,
          held_out_generic: np.ndarray, percentile: float,
          labels: np.ndarray | None = None) -> DomainModel:
    """Both parts, their thresholds (each at ``percentile`` alone) scaled by one factor so
    that ``percentile`` of the held-out images pass both."""
    ratio = np.maximum(model.score(np.asarray(held_out, np.float64)) / model.threshold,
                       generic.score(np.asarray(held_out_generic, np.float64)) / generic.threshold)
    c = max(1.0, weighted_percentile(ratio, percentile, labels))
    return DomainModel(model.means, model.precision, model.threshold * c,
                       Gaussian(generic.means, generic.precision, generic.threshold * c))


def check(model: DomainModel, x: np.ndarray, trained_on: str = "",
          generic: np.ndarray | None = None) -> list[dict[str, Any]]:
    """One answer per row of ``x`` (B, D): in_domain, score, threshold, trained_on; with
    ``generic`` features (B, Dg) and a generic part, also generic_score, generic_threshold
    (in domain only when both scores are within their thresholds)."""
    scores = model.score(np.asarray(x, dtype=np.float64))
    out = [{"in_domain": bool(s <= model.threshold), "score": round(float(s), 3),
            "threshold": round(model.threshold, 3), "trained_on": trained_on} for s in scores]
    if model.generic is not None and generic is not None:
        g = model.generic
        for d, s in zip(out, g.score(np.asarray(generic, dtype=np.float64))):
            d.update(in_domain=bool(d["in_domain"] and s <= g.threshold),
                     generic_score=round(float(s), 3), generic_threshold=round(g.threshold, 3))
    return out


def scores(model: DomainModel, x: np.ndarray, generic: np.ndarray | None = None) -> np.ndarray:
    """(B,) one number per input, > 1 exactly when :func:`check` flags it: the larger of
    each part's score over its threshold."""
    r = model.score(np.asarray(x, np.float64)) / model.threshold
    if model.generic is not None and generic is not None:
        r = np.maximum(r, model.generic.score(np.asarray(generic, np.float64))
                       / model.generic.threshold)
    return r


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
        generic = (Gaussian(z["generic_means"], z["generic_precision"],
                            float(z["generic_threshold"])) if "generic_means" in z else None)
        return DomainModel(z["means"], z["precision"], float(z["threshold"]), generic)


def network(path: str | Path, sha256: str | None) -> Any:
    """The generic network's onnxruntime session (sidecar :data:`GENERIC_SUFFIX`), refused
    unless its sha256 matches the manifest's."""
    return _network(str(path), sha256)


@functools.lru_cache(maxsize=4)
def _network(path: str, sha256: str | None) -> Any:
    import onnxruntime as ort

    from runtime.manifest import sha256_file

    side = Path(path)
    if not side.is_file() or sha256_file(side) != sha256:
        raise DomainFileError(f"domain network {side.name} is missing or does not match the "
                              f"manifest's sha256; re-export the model.")
    return ort.InferenceSession(str(side), providers=["CPUExecutionProvider"])
