"""Pictures of results: heatmap overlays, attention bars, probability bars, timelines.

numpy + OpenCV + matplotlib (Agg) only.
"""
from __future__ import annotations

import io

import cv2
import numpy as np


def normalize_map(m: np.ndarray) -> np.ndarray:
    """Scale a 2-D map to [0, 1] (a constant map becomes zeros)."""
    m = np.asarray(m, dtype=np.float32)
    lo, hi = float(m.min()), float(m.max())
    return np.zeros_like(m) if hi - lo < 1e-12 else (m - lo) / (hi - lo)


def overlay_heatmap(rgb: np.ndarray, heat: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """Min-max scale a map (h, w) to [0, 1] and blend it over an image with
    :func:`runtime.cam.overlay` (the project's one overlay helper)."""
    from runtime.cam import overlay

    h, w = rgb.shape[:2]
    heat = cv2.resize(normalize_map(heat), (w, h), interpolation=cv2.INTER_CUBIC)
    return overlay(rgb, heat, alpha)


def _fig_to_array(fig) -> np.ndarray:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    buf.seek(0)
    from PIL import Image

    return np.asarray(Image.open(buf).convert("RGB"))


def bar_chart(labels: list[str], values: list[float], title: str = "",
              highlight: int | None = None, xlim: tuple[float, float] = (0, 1)) -> np.ndarray:
    """Horizontal bars (first label on top) as an RGB image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 0.35 * len(labels) + 0.8))
    colors = ["#2a9d8f" if i == highlight else "#8ab6d6" for i in range(len(labels))]
    y = np.arange(len(labels))[::-1]
    ax.barh(y, values, color=colors)
    ax.set_yticks(y, labels)
    ax.set_xlim(*xlim)
    for yi, v in zip(y, values):
        ax.text(min(v, xlim[1]) + 0.01 * (xlim[1] - xlim[0]), yi, f"{v:.3f}", va="center", fontsize=8)
    ax.set_title(title, fontsize=10)
    return _fig_to_array(fig)


def timeline(times: list[float], series: dict[str, list[float]], title: str = "",
             threshold: float | None = None) -> np.ndarray:
    """Line plot of per-frame scores against time (seconds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 2.6))
    for name, vals in series.items():
        ax.plot(times, vals, marker="o", ms=3, label=name)
    if threshold is not None:
        ax.axhline(threshold, color="gray", ls="--", lw=1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("probability")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, ncol=3, loc="upper right")
    return _fig_to_array(fig)


def attention_tile(image: np.ndarray, weight: float, max_weight: float, top: bool,
                   size: int = 96) -> np.ndarray:
    """An instance thumbnail with its attention as a bar underneath (top one framed)."""
    img = image if image.ndim == 3 else np.repeat(image[:, :, None], 3, axis=2)
    img = cv2.resize(img, (size, size), interpolation=cv2.INTER_NEAREST
                     if min(image.shape[:2]) < size else cv2.INTER_AREA)
    bar_h = 14
    tile = np.full((size + bar_h, size, 3), 255, np.uint8)
    tile[:size] = img
    frac = 0 if max_weight <= 0 else weight / max_weight
    cv2.rectangle(tile, (0, size + 3), (int(round(frac * (size - 1))), size + bar_h - 2),
                  (42, 157, 143), -1)
    if top:
        cv2.rectangle(tile, (0, 0), (size - 1, size - 1), (230, 57, 70), 3)
    return tile


def side_by_side(images: list[np.ndarray | None], captions: list[str], size: int = 224
                 ) -> np.ndarray:
    """RGB images (H, W, 3) resized to ``size`` and placed in a row, each under its caption
    (None: a grey tile that says there is no map).

    Returns:
        uint8 (size + 28, n * size + (n - 1) * 8, 3), white background.
    """
    import cv2

    band, gap = 28, 8
    out = np.full((size + band, len(images) * size + (len(images) - 1) * gap, 3), 255, np.uint8)
    for i, (img, cap) in enumerate(zip(images, captions)):
        x = i * (size + gap)
        if img is None:
            out[band:, x:x + size] = 225
            cv2.putText(out, "no where-map", (x + 40, band + size // 2), cv2.FONT_HERSHEY_SIMPLEX,
                        0.6, (90, 90, 90), 1, cv2.LINE_AA)
            continue
        out[band:, x:x + size] = cv2.resize(np.ascontiguousarray(img[..., :3]), (size, size),
                                            interpolation=cv2.INTER_AREA)
        cv2.putText(out, cap[:28], (x + 2, band - 9), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (20, 20, 20),
                    1, cv2.LINE_AA)
    return out
