"""INT8 models: static QDQ quantisation at export, measured, served only when it pays.

For each exported model with a headline evaluation (``Variant.evaluate``):

1. ``quant_pre_process`` (onnxruntime's shape inference and graph clean-up), then
   ``quantize_static`` in the QDQ format: uint8 activations, int8 weights per output
   channel, activation ranges calibrated (``calibrate_method``) on a seeded subset of the
   run's *training* images pushed through the serving preprocessing (bag models: bags of
   training images with their query words). Dynamic quantisation is not used: onnxruntime's
   users report ConvInteger slower than fp32 on CPUs.
2. The headline test metric through both files (:attr:`methods.base.Variant.evaluate`,
   same test items, same code) and the batch-1 latency of both files on this CPU (median of
   calls in alternating blocks, the engine's session options), with the app's threads and with one
   thread; the smaller of the two speed-ups counts.
3. :func:`decide`: int8 is served only when it is at least ``min_speedup`` times faster at
   batch 1 and loses at most ``max_loss_points`` points of the headline metric; otherwise
   fp32. The manifest entry records ``precision`` and, under ``int8``, the file, its sha256,
   both speeds, both metrics and the reason (:func:`runtime.manifest.served_file`).

Settings: ``export/int8.yaml``.
"""
from __future__ import annotations

import math
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import yaml

from runtime.artifacts import atomic_path

SETTINGS = Path(__file__).with_name("int8.yaml")
SUFFIX = ".int8.onnx"


def settings() -> dict[str, Any]:
    """``export/int8.yaml``, checked."""
    s = yaml.safe_load(SETTINGS.read_text())
    if not (s["min_speedup"] > 0 and s["max_loss_points"] >= 0 and s["calibration_images"] >= 1
            and s["calibration_bags"] >= 1 and s["calibration_batch"] >= 1
            and s["timing_repeats"] >= 1 and s["timing_warmup"] >= 0
            and s["calibrate_method"] in ("MinMax", "Entropy", "Percentile")):
        raise ValueError(f"{SETTINGS}: min_speedup > 0, max_loss_points >= 0, calibration "
                         f"sizes >= 1, timing_repeats >= 1, calibrate_method MinMax | Entropy "
                         f"| Percentile")
    return s


def decide(metric_fp32: float, metric_int8: float, ms_fp32: float, ms_int8: float,
           min_speedup: float, max_loss_points: float, headline: str = "the headline metric"
           ) -> tuple[str, str]:
    """("int8" | "fp32", reason) by the rule of ``export/int8.yaml``.

    Args:
        metric_fp32, metric_int8: the headline test metric of each file, in [0, 1] (higher
            is better; 1 point = 0.01).
        ms_fp32, ms_int8: batch-1 latency of each file, milliseconds.
        min_speedup: int8 must be at least this many times faster (``ms_fp32 / ms_int8``).
        max_loss_points: and lose at most this many points (``100 (fp32 - int8)``).
    """
    values = (metric_fp32, metric_int8, ms_fp32, ms_int8)
    if any(not math.isfinite(float(v)) for v in values) or ms_fp32 <= 0 or ms_int8 <= 0:
        return "fp32", f"not measurable (metrics {metric_fp32}, {metric_int8}; ms {ms_fp32}, {ms_int8})"
    speedup = ms_fp32 / ms_int8
    loss = 100.0 * (metric_fp32 - metric_int8)
    fast, accurate = speedup >= min_speedup, loss <= max_loss_points + 1e-9
    said = (f"int8 {speedup:.2f}x {'faster' if speedup >= 1 else 'as fast'} at batch 1 "
            f"({ms_fp32:.3g} -> {ms_int8:.3g} ms), {headline} {metric_fp32:.4f} -> "
            f"{metric_int8:.4f} ({0.0 - loss + 0.0:+.2f} points)")
    if fast and accurate:
        return "int8", (f"{said}: at least {min_speedup:g}x faster and at most "
                        f"{max_loss_points:g} point(s) lost")
    why = [w for ok, w in ((fast, f"under {min_speedup:g}x faster"),
                           (accurate, f"loses more than {max_loss_points:g} point(s)")) if not ok]
    return "fp32", f"{said}: {' and '.join(why)}, so fp32 is served"


# ------------------------------------------------------------------------- calibration

def calibration_feeds(model: Any, plugin: Any, cfg: dict[str, Any]) -> list[dict[str, np.ndarray]]:
    """Feeds of training data for the activation ranges, with the serving preprocessing.

    Image models: batches (``calibration_batch``, C, H, W) of a seeded subset of
    ``calibration_images`` training images (``plugin.domain_images("train")``). Bag models
    (``images`` + ``mask`` + ``query``): ``calibration_bags`` bags of training-split images
    with their query words (``plugin.calibration_items("val")``), one bag per feed; bags of
    training images with a zero query where the plug-in gives none.
    """
    from export.domain import _load_image, image_feeds, is_bag_model

    rng = np.random.default_rng(int(cfg["seed"]))
    if is_bag_model(model):
        bags, _ = plugin.calibration_items("val")
        if len(bags) and isinstance(bags[0], dict):
            feeds = []
            for i in np.sort(rng.permutation(len(bags))[: int(cfg["calibration_bags"])]):
                x = model.prepare([_load_image(im) for im in bags[i]["images"]])[None]
                f = {"images": x, "mask": np.ones(x.shape[:2], np.float32)}
                if "query" in model.input_names:
                    f["query"] = np.asarray(bags[i]["query"], np.float32)[None]
                feeds.append(f)
            return feeds
    images, _ = plugin.domain_images("train")
    if len(images) == 0:
        raise ValueError("the method gives no training images to calibrate on")
    idx = np.sort(rng.permutation(len(images))[: int(cfg["calibration_images"])])
    bs = int(cfg["calibration_batch"]) if not is_bag_model(model) else 16
    return [image_feeds(model, [_load_image(images[j]) for j in idx[i:i + bs]])
            for i in range(0, len(idx), bs)]


class FeedReader:
    """An onnxruntime ``CalibrationDataReader`` over prepared feeds (dicts name -> array)."""

    def __init__(self, feeds: Sequence[dict[str, np.ndarray]]) -> None:
        self._feeds = list(feeds)
        self._it: Iterator[dict[str, np.ndarray]] = iter(self._feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter(self._feeds)


def _chunk(n_feeds: int, least: int = 6) -> int:
    """Calibration runs kept in memory at once: at least ``least`` and not a divisor of
    ``n_feeds`` (onnxruntime 1.32's MinMax calibrator fails with "No data is collected" when
    the last chunk is empty)."""
    k = least
    while k < n_feeds and n_feeds % k == 0:
        k += 1
    return k


def quantize(src: Path, dst: Path, feeds: Sequence[dict[str, np.ndarray]],
             cfg: dict[str, Any]) -> dict[str, Any]:
    """Write the static QDQ INT8 version of ``src`` to ``dst`` (atomically).

    Returns the manifest's ``quantization`` record (format, types, calibration, tool).
    """
    import onnxruntime as ort
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                          QuantType, quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(FeedReader, CalibrationDataReader):
        pass

    with tempfile.TemporaryDirectory(prefix="replens-int8-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        # symbolic shape inference fails on some exported graphs (the seqfake transformer);
        # onnx's own shape inference, which quantisation needs, still runs
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        with atomic_path(dst) as out:
            quantize_static(str(pre), str(out), Reader(feeds), quant_format=QuantFormat.QDQ,
                            per_channel=bool(cfg["per_channel"]),
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=getattr(CalibrationMethod, cfg["calibrate_method"]),
                            op_types_to_quantize=cfg.get("op_types") or None,
                            extra_options={"CalibMaxIntermediateOutputs": _chunk(len(feeds))})
    n = sum(int(next(iter(f.values())).shape[0]) for f in feeds)
    unit = "bags" if "mask" in feeds[0] else "images"
    return {"format": "QDQ (static)", "activations": "uint8", "weights": "int8" + (
                " per channel" if cfg["per_channel"] else " per tensor"),
            "calibration": f"{cfg['calibrate_method']} on {n} training {unit} (seed "
                           f"{cfg['seed']}), serving preprocessing",
            "op_types": list(cfg.get("op_types") or []) or "every op onnxruntime quantises",
            "tool": f"onnxruntime.quantization {ort.__version__}"}


# ------------------------------------------------------------------------------ timing

def median_ms(runs: dict[str, Callable[[], Any]], warmup: int, repeats: int,
              rounds: int = 3) -> dict[str, float]:
    """Median milliseconds of each callable over ``repeats`` timed calls, taken in
    ``rounds`` blocks per callable in turn (so a load change on a shared machine hits every
    one alike), each block after ``warmup`` untimed calls. Blocks, not single calls in turn:
    onnxruntime's worker threads keep spinning for a while after a run, and slowed the call
    that followed (eager torch 0.7 s instead of 1.5 ms when calls alternated)."""
    times: dict[str, list[float]] = {k: [] for k in runs}
    rounds = max(1, min(rounds, repeats))
    for r in range(rounds):
        n = repeats // rounds + (1 if r < repeats % rounds else 0)
        for k, fn in runs.items():
            for _ in range(warmup):
                fn()
            for _ in range(n):
                t = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - t)
    return {k: 1e3 * statistics.median(v) for k, v in times.items()}


def first_row(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Batch 1 of a feed: its first image (or its first bag)."""
    return {k: v[:1] for k, v in feed.items()}


# ---------------------------------------------------------------------------- one run

def quantize_run(artifacts: Path, entry: dict[str, Any], plugin: Any, headline: str,
                 evaluate: Callable[[Any, Any], tuple[float, int]],
                 cfg: dict[str, Any] | None = None) -> dict[str, Any]:
    """Quantise one exported model, measure both files, decide. Returns ``{"precision",
    "int8"}`` for the manifest entry (which must name the fp32 file already)."""
    import onnxruntime as ort

    from runtime.engine import OnnxModel
    from runtime.manifest import sha256_file

    cfg = cfg or settings()
    t0 = time.time()
    fp32 = OnnxModel(entry["name"], entry, artifacts, precision="fp32")
    feeds = calibration_feeds(fp32, plugin, cfg)
    rel = str(Path(entry["file"]).with_suffix(SUFFIX))
    record: dict[str, Any] = {"file": rel}
    record["quantization"] = quantize(artifacts / entry["file"], artifacts / rel, feeds, cfg)
    record["sha256"] = sha256_file(artifacts / rel)
    int8 = OnnxModel(entry["name"], {**entry, "int8": record}, artifacts, precision="int8")
    m32, n = evaluate(fp32, plugin)
    m8, n8 = evaluate(int8, plugin)
    x1 = first_row(feeds[0])
    ms = median_ms({"fp32": lambda: fp32.run(x1), "int8": lambda: int8.run(x1)},
                   int(cfg["timing_warmup"]), int(cfg["timing_repeats"]))
    one = {p: OnnxModel(entry["name"], {**entry, "int8": record}, artifacts, intra_op_threads=1,
                        precision=p) for p in ("fp32", "int8")}
    ms1 = median_ms({p: (lambda m=m: m.run(x1)) for p, m in one.items()},
                    int(cfg["timing_warmup"]), int(cfg["timing_repeats"]))
    # the rule takes the smaller speed-up: with the app's threads, a machine busy with other
    # work can slow one file's thread pool far more than the other's (seen here: a seqfake
    # fp32 file 5x slower with 2 threads than with 1 under a load of 8)
    worse = min((ms, ms1), key=lambda d: d["fp32"] / d["int8"])
    precision, reason = decide(m32, m8, worse["fp32"], worse["int8"], float(cfg["min_speedup"]),
                               float(cfg["max_loss_points"]), headline)
    record.update({
        "headline": headline, "n_test": int(n), "test_fp32": round(float(m32), 6),
        "test_int8": round(float(m8), 6),
        "loss_points": round(100.0 * (float(m32) - float(m8)), 3),
        "ms_batch1_fp32": round(ms["fp32"], 4), "ms_batch1_int8": round(ms["int8"], 4),
        "ms_batch1_fp32_1thread": round(ms1["fp32"], 4),
        "ms_batch1_int8_1thread": round(ms1["int8"], 4),
        "speedup_batch1": round(worse["fp32"] / worse["int8"], 3),
        "batch1_input": {k: list(v.shape) for k, v in x1.items()},
        "timing": f"median of {cfg['timing_repeats']} calls in 3 blocks per file in turn, "
                  f"{cfg['timing_warmup']} warm-up calls before each block, {fp32.provider}, ORT_ENABLE_ALL, the "
                  f"app's (default) threads and 1 thread; speedup_batch1 is the smaller of "
                  f"the two; {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}",
        "rule": {"min_speedup": float(cfg["min_speedup"]),
                 "max_loss_points": float(cfg["max_loss_points"])},
        "reason": reason, "seconds": round(time.time() - t0, 1),
        "onnxruntime": ort.__version__})
    assert n8 == n, (n, n8)
    return {"precision": precision, "int8": record}
