"""MTCNN face detection without torch: the three networks in onnxruntime, the cascade
(image pyramid, non-maximum suppression, box regression, landmarks) in numpy.

The networks are facenet-pytorch's, exported by :mod:`export.mtcnn` to
``<artifacts>/detector/`` with the record ``detector/mtcnn.json`` (sha256 of each file and
the cascade's parameters as facenet-pytorch's ``MTCNN`` has them). The cascade follows
facenet-pytorch 2.6's ``detect_face`` step by step, in float32 as torch computes it:

1. a pyramid of the image, scales ``12 / min_face_size * factor**k`` while the shorter side
   stays >= 12 px, each level resized by area averaging over integer bins (torch's
   ``interpolate(mode="area")`` = adaptive average pooling; done here on an integral image);
2. P-Net on every level; cells with face probability >= ``thresholds[0]`` become 12 px
   boxes (stride 2), NMS (IoU 0.5) per level, then NMS (IoU 0.7) over all levels, box
   regression, squared;
3. each box cropped (clipped to the image), resized to 24 x 24, R-Net; probability >
   ``thresholds[1]`` kept, NMS 0.7, regression, squared;
4. the same at 48 x 48 with O-Net (``thresholds[2]``), which also gives the 5 landmarks;
   regression, then NMS over the smaller area (IoU-of-minimum 0.7).

Pixels are uint8 RGB (H, W, 3); network inputs are ``(x - 127.5) * 0.0078125``, NCHW.
Nothing here imports torch.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from runtime.engine import ModelUnavailableError
from runtime.manifest import ManifestError, inside, sha256_file

RECORD_FORMAT = 1
DETECTOR_DIR = "detector"
RECORD_FILE = f"{DETECTOR_DIR}/mtcnn.json"
NETS = ("pnet", "rnet", "onet")
OUTPUTS = {"pnet": ("reg", "prob"), "rnet": ("reg", "prob"), "onet": ("reg", "points", "prob")}
INPUT_SIDE = {"rnet": 24, "onet": 48}
_STRIDE, _CELL = 2, 12  # P-Net's output stride and receptive field (px)
_F32 = np.float32


class DetectorUnavailableError(ModelUnavailableError):
    """The ONNX MTCNN files are missing, unreadable, or do not match their record (a
    model that cannot be served: one line in the UI and the CLI)."""


def read_record(artifacts: str | Path) -> dict[str, Any]:
    """``<artifacts>/detector/mtcnn.json``.

    Raises:
        DetectorUnavailableError: missing, not JSON, or another format version.
    """
    path = Path(artifacts) / RECORD_FILE
    if not path.is_file():
        raise DetectorUnavailableError(
            f"no ONNX face detector in {Path(artifacts)} ({RECORD_FILE} is missing); export "
            f"it in the full environment with `python -m export.mtcnn --artifacts "
            f"{Path(artifacts)}`")
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DetectorUnavailableError(f"{path} is not valid JSON ({exc}); re-export with "
                                       f"`python -m export.mtcnn --force`") from exc
    if not isinstance(record, dict) or record.get("format_version") != RECORD_FORMAT:
        raise DetectorUnavailableError(f"{path} has another format version; re-export with "
                                       f"`python -m export.mtcnn --force`")
    return record


def check_files(artifacts: str | Path, record: dict[str, Any]) -> dict[str, Path]:
    """The three ONNX files of ``record``, each checked against its sha256.

    Raises:
        DetectorUnavailableError: a file is missing or does not match.
    """
    paths = {}
    for name in NETS:
        info = (record.get("nets") or {}).get(name) or {}
        try:
            path = inside(artifacts, info.get("file", f"{DETECTOR_DIR}/mtcnn_{name}.onnx"),
                          f"nets.{name}.file", Path(artifacts) / RECORD_FILE,
                          "re-export with `python -m export.mtcnn --force`")
        except ManifestError as exc:
            raise DetectorUnavailableError(str(exc)) from exc
        if not path.is_file():
            raise DetectorUnavailableError(f"face detector file {path} is missing; re-export "
                                           f"with `python -m export.mtcnn --force`")
        if sha256_file(path) != info.get("sha256"):
            raise DetectorUnavailableError(
                f"face detector file {path} does not match {RECORD_FILE} (sha256): corrupt "
                f"or replaced; re-export with `python -m export.mtcnn --force`")
        paths[name] = path
    return paths


# --- area resampling (torch's adaptive average pooling) on an integral image -------------

def integral_image(rgb: np.ndarray) -> np.ndarray:
    """Summed-area table of an (H, W, C) uint8 image: (H + 1, W + 1, C) int64, zero first
    row and column, so a box sum is four look-ups (exact for any image size)."""
    out = np.zeros((rgb.shape[0] + 1, rgb.shape[1] + 1, rgb.shape[2]), np.int64)
    np.cumsum(np.cumsum(rgb, axis=0, dtype=np.int64), axis=1, out=out[1:, 1:])
    return out


def _bins(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Adaptive pooling's bins: [floor(i * in / out), ceil((i + 1) * in / out))."""
    i = np.arange(size_out, dtype=np.int64)
    return (i * size_in) // size_out, ((i + 1) * size_in + size_out - 1) // size_out


def area_resize(integral: np.ndarray, y0: int, x0: int, h: int, w: int, out_h: int,
                out_w: int) -> np.ndarray:
    """The region rows [y0, y0 + h), cols [x0, x0 + w) of the image behind ``integral``
    resized to (out_h, out_w) by averaging each output pixel's bin of input pixels, as
    ``torch.nn.functional.interpolate(mode="area")`` does (float32 sum / kh / kw).

    Returns:
        float32 (out_h, out_w, C).
    """
    ys, ye = _bins(h, out_h)
    xs, xe = _bins(w, out_w)
    ys, ye, xs, xe = ys + y0, ye + y0, xs + x0, xe + x0
    s = (integral[ye[:, None], xe[None, :]] - integral[ys[:, None], xe[None, :]]
         - integral[ye[:, None], xs[None, :]] + integral[ys[:, None], xs[None, :]])
    kh = (ye - ys).astype(_F32)[:, None, None]
    kw = (xe - xs).astype(_F32)[None, :, None]
    return s.astype(_F32) / kh / kw


def _normalise(pixels: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) float32 pixels -> (N, 3, H, W) network input."""
    return np.ascontiguousarray(((pixels - _F32(127.5)) * _F32(0.0078125)).transpose(0, 3, 1, 2))


# --- box arithmetic (float32, as facenet-pytorch computes it) -----------------------------

def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Greedy non-maximum suppression as torchvision.ops.nms: boxes (N, 4) x1 y1 x2 y2,
    areas without +1, a box is dropped when its IoU with a kept one is > ``iou``.

    Returns:
        int64 indices of the kept boxes, highest score first.
    """
    if len(boxes) == 0:
        return np.zeros(0, np.int64)
    x1, y1, x2, y2 = (boxes[:, k] for k in range(4))
    areas = (x2 - x1) * (y2 - y1)
    order = np.argsort(-scores, kind="stable")
    dropped = np.zeros(len(boxes), bool)
    keep = []
    for pos, i in enumerate(order):
        if dropped[i]:
            continue
        keep.append(i)
        rest = order[pos + 1:]
        rest = rest[~dropped[rest]]
        w = np.maximum(_F32(0), np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
        h = np.maximum(_F32(0), np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
        inter = w * h
        ratio = inter / (areas[i] + areas[rest] - inter)  # float32, compared in double
        dropped[rest[ratio.astype(np.float64) > iou]] = True
    return np.asarray(keep, np.int64)


def nms_min(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """facenet-pytorch's final NMS (``nms_numpy`` with method "Min"): overlap = intersection
    over the smaller area, areas with +1; a box is dropped when overlap > ``threshold``.

    Returns:
        int64 indices of the kept boxes, highest score first.
    """
    if len(boxes) == 0:
        return np.zeros(0, np.int64)
    x1, y1, x2, y2 = (boxes[:, k] for k in range(4))
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(scores)  # ascending; the last is the best (as facenet-pytorch sorts)
    keep = []
    while order.size:
        i, rest = order[-1], order[:-1]
        keep.append(i)
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        inter = w * h
        order = rest[inter / np.minimum(area[i], area[rest]) <= threshold]
    return np.asarray(keep, np.int64)


def square(boxes: np.ndarray) -> np.ndarray:
    """Boxes (N, >=4) made square around their centres (side = the longer side); a copy."""
    out = boxes.copy()
    h = out[:, 3] - out[:, 1]
    w = out[:, 2] - out[:, 0]
    side = np.maximum(w, h)
    out[:, 0] = out[:, 0] + w * _F32(0.5) - side * _F32(0.5)
    out[:, 1] = out[:, 1] + h * _F32(0.5) - side * _F32(0.5)
    out[:, 2] = out[:, 0] + side
    out[:, 3] = out[:, 1] + side
    return out


def regress(boxes: np.ndarray, reg: np.ndarray) -> np.ndarray:
    """Boxes (N, >=4) moved by the network's offsets reg (N, 4), in units of the box's
    size + 1 (facenet-pytorch's ``bbreg``); a copy."""
    out = boxes.copy()
    w = out[:, 2] - out[:, 0] + 1
    h = out[:, 3] - out[:, 1] + 1
    out[:, 0] = out[:, 0] + reg[:, 0] * w
    out[:, 1] = out[:, 1] + reg[:, 1] * h
    out[:, 2] = out[:, 2] + reg[:, 2] * w
    out[:, 3] = out[:, 3] + reg[:, 3] * h
    return out


def crop_boxes(boxes: np.ndarray, w: int, h: int) -> tuple[np.ndarray, ...]:
    """facenet-pytorch's ``pad``: boxes truncated to int and clipped to the image, as 1-based
    inclusive (y, ey, x, ex); the crop is ``image[y - 1:ey, x - 1:ex]``."""
    b = np.trunc(boxes[:, :4]).astype(np.int32)
    x, y, ex, ey = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    return np.maximum(y, 1), np.minimum(ey, h), np.maximum(x, 1), np.minimum(ex, w)


def pyramid_scales(h: int, w: int, min_face_size: float, factor: float) -> list[float]:
    """Scales of the image pyramid: 12 / min_face_size times factor**k, while the shorter
    side times the scale stays >= 12 px (computed in double, as facenet-pytorch does)."""
    m = 12.0 / min_face_size
    minl = min(h, w) * m
    scales, scale = [], m
    while minl >= 12:
        scales.append(scale)
        scale *= factor
        minl *= factor
    return scales


class MTCNNCascade:
    """The three ONNX networks of ``<artifacts>/detector/`` and the cascade around them.

    Args:
        artifacts: the artifacts folder holding ``detector/mtcnn.json``.
        intra_op_threads: onnxruntime threads per network (None: onnxruntime's default).

    Raises:
        DetectorUnavailableError: the record or a file is missing or does not match.
    """

    def __init__(self, artifacts: str | Path, intra_op_threads: int | None = None) -> None:
        import onnxruntime as ort

        self.record = read_record(artifacts)
        paths = check_files(artifacts, self.record)
        cascade = self.record["cascade"]
        self.min_face_size = float(cascade["min_face_size"])
        self.thresholds = tuple(float(t) for t in cascade["thresholds"])
        self.factor = float(cascade["factor"])
        opts = ort.SessionOptions()
        if intra_op_threads:
            opts.intra_op_num_threads = intra_op_threads
        self._sessions = {}
        for name, path in paths.items():
            try:
                self._sessions[name] = ort.InferenceSession(
                    str(path), sess_options=opts, providers=["CPUExecutionProvider"])
            except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
                raise DetectorUnavailableError(f"onnxruntime cannot load {path}: {exc}") from exc

    def _run(self, name: str, x: np.ndarray) -> dict[str, np.ndarray]:
        outs = self._sessions[name].run(None, {"image": x})
        return dict(zip(OUTPUTS[name], outs))

    def _stage1(self, integral: np.ndarray, h: int, w: int) -> np.ndarray:
        """P-Net over the pyramid: candidate boxes (N, 9) = x1 y1 x2 y2 score + 4 offsets,
        after NMS per level and across levels."""
        picked = []
        for scale in pyramid_scales(h, w, self.min_face_size, self.factor):
            sh, sw = int(h * scale + 1), int(w * scale + 1)
            level = area_resize(integral, 0, 0, h, w, sh, sw)
            out = self._run("pnet", _normalise(level[None]))
            prob, reg = out["prob"][0, 1], out["reg"][0]
            rows, cols = np.nonzero(prob >= _F32(self.thresholds[0]))
            if not len(rows):
                continue
            cells = np.stack([cols, rows], 1).astype(_F32)
            q1 = np.floor((_STRIDE * cells + 1) / _F32(scale))
            q2 = np.floor((_STRIDE * cells + _CELL) / _F32(scale))
            boxes = np.concatenate([q1, q2, prob[rows, cols][:, None], reg[:, rows, cols].T], 1)
            picked.append(boxes[nms(boxes[:, :4], boxes[:, 4], 0.5)])
        if not picked:
            return np.zeros((0, 9), _F32)
        boxes = np.concatenate(picked).astype(_F32)
        boxes = boxes[nms(boxes[:, :4], boxes[:, 4], 0.7)]
        bw, bh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        moved = np.stack([boxes[:, 0] + boxes[:, 5] * bw, boxes[:, 1] + boxes[:, 6] * bh,
                          boxes[:, 2] + boxes[:, 7] * bw, boxes[:, 3] + boxes[:, 8] * bh,
                          boxes[:, 4]], 1)
        return square(moved)

    def _crops(self, integral: np.ndarray, boxes: np.ndarray, w: int, h: int, side: int
               ) -> tuple[np.ndarray, np.ndarray]:
        """Each box's in-image part resized to (side, side): (network input (M, 3, side,
        side), indices of the boxes with a non-empty crop)."""
        y, ey, x, ex = crop_boxes(boxes, w, h)
        ok = np.nonzero((ey > y - 1) & (ex > x - 1))[0]
        pixels = np.stack([area_resize(integral, int(y[k]) - 1, int(x[k]) - 1,
                                       int(ey[k] - y[k] + 1), int(ex[k] - x[k] + 1), side, side)
                           for k in ok]) if len(ok) else np.zeros((0, side, side, 3), _F32)
        return _normalise(pixels), ok

    def detect(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Faces of an RGB uint8 image (H, W, 3).

        Returns:
            boxes float32 (N, 4) x1 y1 x2 y2, scores float32 (N,), landmarks float32
            (N, 5, 2) (x, y), highest score first; N may be 0.
        """
        if rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"expected an RGB image (H, W, 3), got shape {rgb.shape}")
        h, w = rgb.shape[:2]
        integral = integral_image(rgb)
        empty = (np.zeros((0, 4), _F32), np.zeros(0, _F32), np.zeros((0, 5, 2), _F32))
        boxes = self._stage1(integral, h, w)
        if not len(boxes):
            return empty
        # stage 2: R-Net
        x, ok = self._crops(integral, boxes, w, h, INPUT_SIDE["rnet"])
        out = self._run("rnet", x)
        score = out["prob"][:, 1]
        keep = score > _F32(self.thresholds[1])
        boxes = np.concatenate([boxes[ok][keep, :4], score[keep, None]], 1)
        reg = out["reg"][keep]
        pick = nms(boxes[:, :4], boxes[:, 4], 0.7)
        boxes = square(regress(boxes[pick], reg[pick]))
        if not len(boxes):
            return empty
        # stage 3: O-Net, landmarks
        x, ok = self._crops(integral, boxes, w, h, INPUT_SIDE["onet"])
        out = self._run("onet", x)
        score = out["prob"][:, 1]
        keep = score > _F32(self.thresholds[2])
        boxes = np.concatenate([boxes[ok][keep, :4], score[keep, None]], 1)
        reg, pts = out["reg"][keep], out["points"][keep]
        bw = (boxes[:, 2] - boxes[:, 0] + 1)[:, None]
        bh = (boxes[:, 3] - boxes[:, 1] + 1)[:, None]
        marks = np.stack([bw * pts[:, :5] + boxes[:, :1] - 1,
                          bh * pts[:, 5:] + boxes[:, 1:2] - 1], 2)
        boxes = regress(boxes, reg)
        pick = nms_min(boxes[:, :4], boxes[:, 4], 0.7)
        return (boxes[pick, :4].astype(_F32), boxes[pick, 4].astype(_F32),
                marks[pick].astype(_F32))
