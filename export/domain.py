"""Fit the domain check of an exported model (:mod:`runtime.domain`), at export.

The run's training plug-in gives its training images (``Method.domain_images``); a seeded
subset of at most ``max_images`` is pushed through the *exported* ONNX model with the
serving preprocessing, so the check lives in exactly the feature space the app computes.
``1 - held_out`` of them fit the class means and the shared covariance; the threshold is the
``percentile`` of the scores of the held-out rest (each class weighted equally where the
data has classes, so a long-tailed training set does not leave its rare classes flagged). Settings: ``export/domain.yaml``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import yaml

from runtime import domain

SETTINGS = Path(__file__).with_name("domain.yaml")


def settings() -> dict[str, Any]:
    """``export/domain.yaml``, checked."""
    s = yaml.safe_load(SETTINGS.read_text())
    if not (0 < s["percentile"] <= 100 and 0 < s["held_out"] < 1 and s["max_images"] >= 4
            and 0 < s["bag_min_in_domain"] <= 1):
        raise ValueError(f"{SETTINGS}: percentile in (0, 100], held_out in (0, 1), "
                         f"max_images >= 4, bag_min_in_domain in (0, 1]")
    return s


def _load_image(item: Any) -> np.ndarray:
    if isinstance(item, np.ndarray):
        return item
    from PIL import Image

    with Image.open(item) as im:
        return np.asarray(im.convert("RGB"))


def is_bag_model(model: Any) -> bool:
    """Whether the model takes bags of images (``images`` (B, K, C, H, W) + ``mask``)."""
    return "images" in model.input_names and "mask" in model.input_names


def image_feeds(model: Any, images: list[np.ndarray]) -> dict[str, np.ndarray]:
    """The feeds that show ``images`` to the model: a batch ``image`` (N, C, H, W), or for a
    bag model one bag of N instances (``images`` (1, N, C, H, W), ``mask`` of ones and, where
    the model takes one, a zero ``query``: instance features do not depend on the query)."""
    x = model.prepare(images)
    if not is_bag_model(model):
        return {"image": x}
    feeds = {"images": x[None], "mask": np.ones((1, len(images)), np.float32)}
    if "query" in model.input_names:
        dim = next(i.shape[-1] for i in model.session.get_inputs() if i.name == "query")
        feeds["query"] = np.zeros((1, int(dim)), np.float32)
    return feeds


def model_features(model: Any, images: Sequence[Any], names: Sequence[str],
                   batch_size: int) -> np.ndarray:
    """(N, D) features of ``images`` through an :class:`runtime.engine.OnnxModel` (one row
    per image, for a bag model too)."""
    out = []
    for i in range(0, len(images), batch_size):
        batch = [_load_image(x) for x in images[i:i + batch_size]]
        out.append(domain.features(model.run(image_feeds(model, batch)), names,
                                   per_instance=is_bag_model(model)))
    return np.concatenate(out)


def fit_for_model(model: Any, images: Sequence[Any], labels: np.ndarray | None,
                  names: Sequence[str], cfg: dict[str, Any] | None = None
                  ) -> tuple[domain.DomainModel, dict[str, Any]]:
    """The fitted check and its manifest record (features, threshold, counts)."""
    cfg = cfg or settings()
    n = len(images)
    if n < 4:
        raise ValueError(f"{n} training images: too few for a domain check")
    rng = np.random.default_rng(int(cfg["seed"]))
    idx = rng.permutation(n)[: int(cfg["max_images"])]
    n_cal = max(1, int(round(len(idx) * float(cfg["held_out"]))))
    cal, fit_idx = idx[:n_cal], idx[n_cal:]
    x = model_features(model, [images[i] for i in idx], names, int(cfg["batch_size"]))
    x_cal, x_fit = x[:n_cal], x[n_cal:]
    y_fit = None if labels is None else np.asarray(labels)[fit_idx]
    y_cal = None if labels is None else np.asarray(labels)[cal]
    means, precision = domain.fit(x_fit, y_fit)
    dm = domain.calibrate(means, precision, x_cal, float(cfg["percentile"]), y_cal)
    record = {"features": list(names), "dim": int(x.shape[1]), "classes": int(len(means)),
              "n_fit": int(len(fit_idx)), "n_held_out": int(n_cal),
              "percentile": float(cfg["percentile"]), "threshold": round(dm.threshold, 4),
              "score": "smallest squared Mahalanobis distance to a class mean, shared "
                       "Ledoit-Wolf covariance (runtime/domain.py)"}
    if is_bag_model(model):
        record["unit"] = "instance"  # one answer per image of a bag (runtime/domain.py)
        record["bag_min_in_domain"] = float(cfg["bag_min_in_domain"])
    return dm, record


def fit_run(artifacts: Path, entry: dict[str, Any], config: dict[str, Any],
            names: Sequence[str]) -> tuple[domain.DomainModel, dict[str, Any]]:
    """Fit the check of one exported run: its plug-in's images through its ONNX file."""
    from runtime.engine import OnnxModel
    from training.methods import plugin_for_run

    method = plugin_for_run(entry["method"], config, artifacts)
    images, labels = method.domain_images()
    if len(images) == 0:
        raise ValueError("the method gives no training images")
    model = OnnxModel(entry["name"], entry, artifacts)
    dm, record = fit_for_model(model, images, labels, names)
    extra = entry.get("extra", {})
    record["trained_on"] = str(extra.get("data") or extra.get("dataset")
                               or f"the training data of {entry['name']}")
    return dm, record
