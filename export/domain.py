"""Fit the domain check of an exported model (:mod:`runtime.domain`), at export.

The run's training plug-in gives its training images (``Method.domain_images``); a seeded
subset of at most ``max_images`` is pushed through the *exported* ONNX model with the
serving preprocessing, so the check lives in exactly the feature space the app computes.
They fit the class means and the shared covariance; the threshold is the ``percentile``
of the scores of the run's validation images (``domain_images("val")``: images neither the
network nor the fit saw, so their scores are what a user's in-domain image would score),
or, where the run has fewer than ``min_val`` of them, of a ``held_out`` fraction of the
training images kept out of the fit; each class weighted equally where the data has
classes, so a long-tailed training set does not leave its rare classes flagged. A fit on
fewer than ``min_per_dim`` images per feature dimension keeps the top principal directions
(probabilistic PCA, :func:`runtime.domain.ppca_precision`). The generic part (``generic`` in
the settings, by method) is fitted on the same images and split; its network (``face_net``:
MTCNN's O-Net from facenet-pytorch's wheel, cut after its third convolution,
:func:`face_net_onnx`) is exported to ONNX here and recorded as a sidecar.
Settings: ``export/domain.yaml``.

    python -m export.domain --artifacts DIR [--only MODEL ...]

refits the checks of exported models in place (fresh sidecar names, one manifest switch per
model, :mod:`export.commit`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import argparse
import functools
import io
import sys
import tempfile

import numpy as np
import yaml

from runtime import domain

SETTINGS = Path(__file__).with_name("domain.yaml")


def settings() -> dict[str, Any]:
    """``export/domain.yaml``, checked."""
    s = yaml.safe_load(SETTINGS.read_text())
    if not (0 < s["percentile"] <= 100 and 0 < s["held_out"] < 1 and s["max_images"] >= 4
            and 0 < s["bag_min_in_domain"] <= 1 and s["min_val"] >= 1
            and s["min_per_dim"] >= 0):
        raise ValueError(f"{SETTINGS}: percentile in (0, 100], held_out in (0, 1), "
                         f"max_images >= 4, bag_min_in_domain in (0, 1], min_val >= 1, "
                         f"min_per_dim >= 0")
    return s


def generic_kind(cfg: dict[str, Any], method: str, user_data: bool = False) -> str:
    """The generic part's features for ``method`` (``generic`` in the settings), or for a
    run trained on the user's own data (``user_data``)."""
    g = cfg.get("generic") or {}
    if user_data:
        return str(g.get("user_data", "none"))
    return str(g.get(method, g.get("default", "statistics")))


@functools.lru_cache(maxsize=1)
def face_net_onnx() -> bytes:
    """MTCNN's O-Net (facenet-pytorch's weights, inside its wheel) up to its third
    convolution, averaged over positions (64-d), as ONNX (input ``image`` (N, 3, 48, 48),
    output ``features``). Of O-Net's layers this one told real faces from the generated
    training faces best on the tuning half of the real-photograph set (reports/domain.md).
    Exported once per process (every face model of an export shares it)."""
    import torch

    from export.mtcnn import _nets
    from export.onnx_export import export_module

    class Conv3Mean(torch.nn.Module):
        def __init__(self, onet: torch.nn.Module) -> None:
            super().__init__()
            self.onet = onet

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
            o = self.onet
            x = o.pool1(o.prelu1(o.conv1(x)))
            x = o.pool2(o.prelu2(o.conv2(x)))
            return (o.prelu3(o.conv3(x)).mean(dim=(2, 3)),)

    net = Conv3Mean(_nets()[1]["onet"]).eval()
    g = torch.Generator().manual_seed(0)
    sample = (torch.rand(4, 3, 48, 48, generator=g) - 0.5) * 2
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "face_net.onnx"
        export_module(net, (sample,), path, ["image"], ["features"],
                      {"image": {0: "batch"}, "features": {0: "batch"}},
                      check_inputs=[(sample[:1],)], dynamo_first=False)
        return path.read_bytes()


def _session(onnx_bytes: bytes) -> Any:
    import onnxruntime as ort

    return ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])


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
                   batch_size: int, generic: tuple[str, Any] | None = None
                   ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """(N, D) features of ``images`` through an :class:`runtime.engine.OnnxModel` (one row
    per image, for a bag model too); with ``generic`` = (kind, session or None), also the
    (N, Dg) generic features of the same inputs (:func:`runtime.domain.generic_features`)."""
    out, gen = [], []
    for i in range(0, len(images), batch_size):
        batch = [_load_image(x) for x in images[i:i + batch_size]]
        x = model.prepare(batch)
        out.append(domain.features(model.run(image_feeds(model, batch)), names,
                                   per_instance=is_bag_model(model)))
        if generic is not None:
            pre = model.preprocess
            gen.append(domain.generic_features(generic[0], x, pre.mean, pre.std, generic[1]))
    if generic is None:
        return np.concatenate(out)
    return np.concatenate(out), np.concatenate(gen)


def _subset(images: Sequence[Any], labels: np.ndarray | None, n_max: int, seed: int
            ) -> tuple[list[Any], np.ndarray | None]:
    """A seeded random subset of at most ``n_max`` images and their labels."""
    idx = np.random.default_rng(seed).permutation(len(images))[:n_max]
    return [images[i] for i in idx], None if labels is None else np.asarray(labels)[idx]


def split_fit_threshold(images: Sequence[Any], labels: np.ndarray | None,
                        val: tuple[Sequence[Any], np.ndarray | None] | None,
                        cfg: dict[str, Any]) -> tuple[list[Any], np.ndarray | None, list[Any],
                                                      np.ndarray | None, str]:
    """The images the Gaussians are fitted on and those their thresholds are read from, with
    labels, and what the latter are: the validation split ``val`` (images neither the
    network nor the fit saw) when it has at least ``min_val`` images, else the ``held_out``
    fraction of the training images (which the network did train on)."""
    n_max, seed = int(cfg["max_images"]), int(cfg["seed"])
    if val is not None and len(val[0]) >= max(1, int(cfg["min_val"])):
        x_fit, y_fit = _subset(images, labels, n_max, seed)
        x_val, y_val = _subset(val[0], val[1], n_max, seed + 1)
        if y_val is not None and (y_fit is None or np.asarray(y_val).ndim != 1):
            y_val = None  # not class ids (e.g. per-component targets): every image weighs 1
        return x_fit, y_fit, x_val, y_val, "validation images"
    x, y = _subset(images, labels, n_max, seed)
    n_cal = max(1, int(round(len(x) * float(cfg["held_out"]))))
    return (x[n_cal:], None if y is None else y[n_cal:], x[:n_cal],
            None if y is None else y[:n_cal], "held-out training images")


def fit_for_model(model: Any, images: Sequence[Any], labels: np.ndarray | None,
                  names: Sequence[str], cfg: dict[str, Any] | None = None,
                  generic: tuple[str, Any] | None = None,
                  val: tuple[Sequence[Any], np.ndarray | None] | None = None
                  ) -> tuple[domain.DomainModel, dict[str, Any]]:
    """The fitted check and its manifest record (features, threshold, counts); with
    ``generic`` = (kind, network session or None) also its generic part. The thresholds are
    read from ``val`` (the run's validation images and labels) where it is large enough
    (:func:`split_fit_threshold`)."""
    cfg = cfg or settings()
    n = len(images)
    if n < 4:
        raise ValueError(f"{n} training images: too few for a domain check")
    x_img, y_fit, c_img, y_cal, source = split_fit_threshold(images, labels, val, cfg)
    bs, pct = int(cfg["batch_size"]), float(cfg["percentile"])
    per_dim = float(cfg.get("min_per_dim", 0))
    got, got_cal = (model_features(model, x_img, names, bs, generic),
                    model_features(model, c_img, names, bs, generic))
    (x_fit, g_fit), (x_cal, g_cal) = ((got, None), (got_cal, None)) if generic is None \
        else (got, got_cal)
    means, precision = domain.fit(x_fit, y_fit, per_dim)
    dm = domain.calibrate(means, precision, x_cal, pct, y_cal)
    if g_fit is not None:
        g_means, g_precision = domain.fit(g_fit, y_fit, per_dim)
        g_part = domain.calibrate(g_means, g_precision, g_cal, pct, y_cal)
        dm = domain.joint(dm, g_part, x_cal, g_cal, pct, y_cal)
    record = {"features": list(names), "dim": int(x_fit.shape[1]), "classes": int(len(means)),
              "n_fit": int(len(x_fit)), "n_held_out": int(len(x_cal)),
              "threshold_from": source, "percentile": pct,
              "threshold": round(dm.threshold, 4),
              "score": "smallest squared Mahalanobis distance to a class mean, shared "
                       "Ledoit-Wolf covariance (runtime/domain.py)"}
    if per_dim and len(x_fit) < per_dim * x_fit.shape[1]:
        record["components"] = max(1, int(len(x_fit) // per_dim))
        record["score"] = record["score"].replace("Ledoit-Wolf", "probabilistic-PCA")
    if dm.generic is not None:
        record["generic"] = {"kind": generic[0], "dim": int(g_fit.shape[1]),
                             "threshold": round(dm.generic.threshold, 4)}
        if len(g_fit) < per_dim * g_fit.shape[1]:
            record["generic"]["components"] = max(1, int(len(g_fit) // per_dim))
    if is_bag_model(model):
        record["unit"] = "instance"  # one answer per image of a bag (runtime/domain.py)
        record["bag_min_in_domain"] = float(cfg["bag_min_in_domain"])
    return dm, record


def validation_images(method: Any) -> tuple[Sequence[Any], np.ndarray | None] | None:
    """The plug-in's validation images and labels (``domain_images("val")``), or None
    where it has none."""
    try:
        images, labels = method.domain_images("val")
    except (KeyError, FileNotFoundError, ValueError) as exc:
        print(f"[domain] no validation images ({type(exc).__name__}: {exc}); the threshold "
              f"comes from held-out training images", flush=True)
        return None
    return (images, labels) if len(images) else None


def fit_run(artifacts: Path, entry: dict[str, Any], config: dict[str, Any],
            names: Sequence[str]) -> tuple[domain.DomainModel, dict[str, Any], bytes | None]:
    """Fit the check of one exported run: its plug-in's images through its ONNX file.
    Returns the check, its record and the generic network's ONNX bytes (None: none)."""
    from runtime.engine import OnnxModel
    from training.methods import plugin_for_run

    method = plugin_for_run(entry["method"], config, artifacts)
    images, labels = method.domain_images()
    if len(images) == 0:
        raise ValueError("the method gives no training images")
    model = OnnxModel(entry["name"], entry, artifacts)
    cfg = settings()
    user_data = bool((config.get("data") or {}).get("root"))
    kind, network = generic_kind(cfg, entry["method"], user_data), None
    if kind == "face_net":
        try:
            network = face_net_onnx()
        except ImportError as exc:  # no facenet-pytorch here: image statistics instead
            print(f"[export] {entry['name']}: domain check with image statistics, not the "
                  f"face network ({exc})", flush=True)
            kind = "statistics"
    generic = None
    if kind != "none" and model.preprocess is not None:
        generic = (kind, _session(network) if network else None)
    dm, record = fit_for_model(model, images, labels, names, cfg, generic,
                               validation_images(method))
    extra = entry.get("extra", {})
    record["trained_on"] = str(extra.get("data") or extra.get("dataset")
                               or f"the training data of {entry['name']}")
    return dm, record, network


def write_sidecars(artifacts: Path, entry: dict[str, Any], dm: domain.DomainModel,
                   network: bytes | None, written: list[str], fresh: bool = False) -> None:
    """Write the check (and its network) beside the entry's ONNX file and record them with
    their sha256 under the entry's ``sidecars``; ``fresh``: under names that do not exist
    yet (:func:`export.commit.fresh_name`), for a refit of a served model."""
    from export.commit import fresh_name
    from runtime.artifacts import atomic_path
    from runtime.manifest import sha256_file

    buf = io.BytesIO()
    np.savez(buf, **dm.arrays())
    files = {domain.SUFFIX: buf.getvalue()}
    if network is not None:
        files[domain.GENERIC_SUFFIX] = network
    else:
        entry.get("sidecars", {}).pop(domain.GENERIC_SUFFIX, None)
    stem = str(Path(entry["file"]).with_suffix(""))
    for suffix, data in files.items():
        rel = fresh_name(artifacts, stem, suffix) if fresh else stem + suffix
        written.append(rel)
        with atomic_path(artifacts / rel) as tmp:
            Path(tmp).write_bytes(data)
        entry.setdefault("sidecars", {})[suffix] = {"file": rel,
                                                    "sha256": sha256_file(artifacts / rel)}


def commit_refit(artifacts: Path, name: str, entry: dict[str, Any],
                 fit: Callable[[dict[str, Any]], tuple[domain.DomainModel, dict[str, Any],
                                                       bytes | None]]) -> dict[str, Any]:
    """Give model ``name`` the check ``fit(copy of entry)`` returns (check, record, generic
    network), its files under fresh names and the manifest switched to them in one commit;
    on any failure the files written are removed and the served entry stays. Returns the
    record."""
    import copy

    from export.commit import commit_entry, discard

    new = copy.deepcopy(entry)
    written: list[str] = []
    try:
        dm, record, network = fit(new)
        write_sidecars(artifacts, new, dm, network, written, fresh=True)
        new["domain"] = record
        commit_entry(artifacts, name, new)
    except BaseException:
        discard(artifacts, written)
        raise
    return record


def refit(artifacts: Path, only: Sequence[str] | None = None) -> list[str]:
    """Refit the domain check of every exported model that has one (or of ``only``), each
    committed by one manifest switch; returns the names refitted."""
    from runtime.manifest import read_manifest

    done = []
    for name, entry in read_manifest(artifacts)["models"].items():
        if not entry.get("domain") or (only and name not in only):
            continue
        if "fitted_on_folder" in entry["domain"]:  # an imported model's: its user's folder
            print(f"[domain] {name}: fitted on {entry['domain']['fitted_on_folder']}; refit it "
                  f"with python -m export.published.domain {name} --faces DIR", flush=True)
            continue
        record = commit_refit(artifacts, name, entry, lambda new: fit_run(
            artifacts, new, new["training"]["config"], new["domain"]["features"]))
        print(f"[domain] {name}: refitted, threshold {record['threshold']:.3g}"
              + (f", generic ({record['generic']['kind']}) {record['generic']['threshold']:.3g}"
                 if "generic" in record else ""), flush=True)
        done.append(name)
    return done


def main(argv: list[str] | None = None) -> int:
    from runtime.artifacts import artifacts_dir

    p = argparse.ArgumentParser(prog="python -m export.domain", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--artifacts", help="artifacts folder (default: $REPLENS_ARTIFACTS or ./artifacts)")
    p.add_argument("--only", nargs="+", metavar="MODEL", help="refit these models only")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    refit(artifacts_dir(args.artifacts), args.only)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
