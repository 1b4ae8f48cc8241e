"""Retrieval gallery: a FAISS index of l2-normalised embeddings with labels and thumbnails.

numpy, faiss and Pillow only (no torch): the app imports this module.

A gallery folder holds

    index.faiss     faiss.IndexFlatIP over unit vectors (inner product = cosine similarity)
    labels.npy      int64 (N,), -1 where unknown
    thumbs.npy      uint8 (N, h, w) or (N, h, w, 3)
    meta.json       encoder hash, label names, count, dimension, source

and is written atomically: into a temporary sibling folder, then renamed into place, so a
crash never leaves a half-written gallery where a good one was. A gallery remembers the
hash of the encoder that embedded it and refuses queries embedded by another encoder.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import faiss
import numpy as np
from PIL import Image, UnidentifiedImageError

FORMAT_VERSION = 1
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
EmbedFn = Callable[[list[np.ndarray]], np.ndarray]


class GalleryError(ValueError):
    """A gallery cannot be built, read or queried (the message says why)."""


class EncoderMismatchError(GalleryError):
    """The query embeddings come from another encoder than the gallery's."""


def _l2_normalize(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _as_uint8(image: np.ndarray | Image.Image) -> np.ndarray:
    """PIL image or array -> uint8 array (H, W) or (H, W, 3)."""
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("L" if image.mode in ("L", "1", "I", "F") else "RGB"))
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[:, :, :3]
    if arr.ndim not in (2, 3):
        raise GalleryError(f"an image must be (H, W) or (H, W, 3), got shape {arr.shape}")
    return arr


def make_thumbnails(images: Sequence[np.ndarray], size: int = 64) -> np.ndarray:
    """Thumbnails of one shape: kept as they are when all images share a shape no larger
    than ``size``, else fitted (aspect kept) and centred on a ``size`` x ``size`` canvas.

    Returns:
        uint8 (N, h, w) when every image is grayscale, else (N, h, w, 3).
    """
    gray = all(im.ndim == 2 for im in images)
    shapes = {im.shape for im in images}
    if len(shapes) == 1 and max(next(iter(shapes))[:2]) <= size:
        return np.stack(images).astype(np.uint8)
    mode = "L" if gray else "RGB"
    out = []
    for im in images:
        pil = Image.fromarray(im).convert(mode)
        pil.thumbnail((size, size), Image.BILINEAR)
        canvas = Image.new(mode, (size, size), 0)
        canvas.paste(pil, ((size - pil.width) // 2, (size - pil.height) // 2))
        out.append(np.asarray(canvas))
    return np.stack(out).astype(np.uint8)


def pixel_digest(image: np.ndarray | Image.Image) -> str:
    """A short sha256 of an image's pixels (16 hex digits), the same for a gray image and
    its RGB copy: how a query is recognised as a gallery item."""
    arr = _as_uint8(image)
    if arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[..., :3]
    if arr.ndim == 3 and (arr == arr[..., :1]).all():
        arr = arr[..., 0]
    h = hashlib.sha256(repr(arr.shape).encode())
    h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()[:16]


class GalleryIndex:
    """Embeddings of a labelled image set in a FAISS inner-product index.

    Args:
        index: faiss index over l2-normalised vectors.
        labels: int64 label ids (N,), -1 for unknown.
        label_names: name of each label id.
        thumbnails: uint8 (N, h, w[, 3]).
        encoder_hash: identifies the encoder that produced the vectors (e.g. the ONNX sha256).
        meta: extra JSON-able facts (source, build time).
        ids: an id per item users can find the image by (its path in an image folder, or
            ``<source>#<index>``); default: the index as text.
        digests: :func:`pixel_digest` per item (empty strings when unknown).
    """

    def __init__(self, index: faiss.Index, labels: np.ndarray, label_names: Sequence[str],
                 thumbnails: np.ndarray, encoder_hash: str,
                 meta: dict[str, Any] | None = None, ids: Sequence[str] | None = None,
                 digests: Sequence[str] | None = None) -> None:
        if index.ntotal != len(labels) or len(labels) != len(thumbnails):
            raise GalleryError(f"gallery parts disagree: {index.ntotal} vectors, "
                               f"{len(labels)} labels, {len(thumbnails)} thumbnails")
        self.index = index
        self.labels = np.asarray(labels, dtype=np.int64)
        self.label_names = [str(n) for n in label_names]
        self.thumbnails = thumbnails
        self.encoder_hash = str(encoder_hash)
        self.meta = dict(meta or {})
        n = len(self.labels)
        self.ids = [str(i) for i in ids] if ids is not None else [str(i) for i in range(n)]
        self.digests = [str(d) for d in digests] if digests is not None else [""] * n
        if len(self.ids) != n or len(self.digests) != n:
            raise GalleryError(f"gallery parts disagree: {n} items, {len(self.ids)} ids, "
                               f"{len(self.digests)} digests")
        self._by_digest = {d: i for i, d in enumerate(self.digests) if d}

    def find(self, image: np.ndarray | Image.Image) -> int | None:
        """The index of the gallery item with exactly these pixels, or None."""
        return self._by_digest.get(pixel_digest(image))

    def __len__(self) -> int:
        return int(self.index.ntotal)

    @property
    def dim(self) -> int:
        return int(self.index.d)

    # --- build ---------------------------------------------------------------------------
    @classmethod
    def build(cls, embed_fn: EmbedFn, images: Sequence[np.ndarray | Image.Image],
              labels: Sequence[int] | np.ndarray | None, label_names: Sequence[str],
              encoder_hash: str, batch_size: int = 256, thumb_size: int = 64,
              progress: Callable[[int, int], None] | None = None,
              meta: dict[str, Any] | None = None,
              ids: Sequence[str] | None = None) -> "GalleryIndex":
        """Embed ``images`` with ``embed_fn`` and index them.

        Args:
            embed_fn: list of uint8 images -> float array (n, D); normalised here.
            images: uint8 arrays (H, W[, 3]) or PIL images.
            labels: label id per image (None: all unknown, -1).
            label_names: name of each label id.
            encoder_hash: the encoder's identity (queries must present the same).
            batch_size: images per ``embed_fn`` call.
            thumb_size: thumbnail side (see :func:`make_thumbnails`).
            progress: called with (done, total) after each batch.
            ids: an id per image (its path, say); default: the index.
        """
        arrays = [_as_uint8(im) for im in images]
        if not arrays:
            raise GalleryError("a gallery needs at least one image")
        lab = (np.full(len(arrays), -1, np.int64) if labels is None
               else np.asarray(labels, dtype=np.int64))
        if len(lab) != len(arrays):
            raise GalleryError(f"{len(arrays)} images but {len(lab)} labels")
        if len(lab) and lab.max() >= len(label_names):
            raise GalleryError(f"label id {int(lab.max())} has no name ({len(label_names)} names)")
        vecs = []
        for start in range(0, len(arrays), batch_size):
            emb = np.asarray(embed_fn(arrays[start:start + batch_size]), dtype=np.float32)
            if emb.ndim != 2 or len(emb) != len(arrays[start:start + batch_size]):
                raise GalleryError(f"embed_fn must return (n, D) for n images, got {emb.shape}")
            vecs.append(emb)
            if progress:
                progress(min(start + batch_size, len(arrays)), len(arrays))
        x = _l2_normalize(np.concatenate(vecs))
        if not np.isfinite(x).all():
            raise GalleryError("embed_fn returned non-finite values")
        index = faiss.IndexFlatIP(x.shape[1])
        index.add(x)
        info = {"built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **(meta or {})}
        return cls(index, lab, label_names, make_thumbnails(arrays, thumb_size), encoder_hash,
                   info, ids=ids, digests=[pixel_digest(a) for a in arrays])

    # --- query ---------------------------------------------------------------------------
    def check_encoder(self, encoder_hash: str) -> None:
        """Raise :class:`EncoderMismatchError` unless ``encoder_hash`` is the gallery's."""
        if str(encoder_hash) != self.encoder_hash:
            raise EncoderMismatchError(
                f"this gallery was embedded by encoder {self.encoder_hash[:12]}..., but the "
                f"query comes from encoder {str(encoder_hash)[:12]}...; rebuild the gallery "
                f"with the current encoder")

    def query(self, embeddings: np.ndarray, k: int, encoder_hash: str
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Top-k gallery items by cosine similarity.

        Args:
            embeddings: query embeddings (normalised here). Shape: (Q, D) or (D,).
            k: neighbours per query (capped at the gallery size).
            encoder_hash: identity of the encoder that embedded the queries.

        Returns:
            scores float32 (Q, k) in [-1, 1], descending; indices int64 (Q, k);
            labels int64 (Q, k).
        """
        self.check_encoder(encoder_hash)
        q = np.asarray(embeddings, dtype=np.float32)
        if q.ndim == 1:
            q = q[None]
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise GalleryError(f"query embeddings must be (Q, {self.dim}), got {q.shape}")
        if not np.isfinite(q).all():
            raise GalleryError("query embeddings contain NaN or infinity")
        if int(k) < 1:
            raise GalleryError(f"k must be >= 1, got {k}")
        k = min(int(k), len(self))
        scores, idx = self.index.search(_l2_normalize(q), k)
        return scores, idx.astype(np.int64), self.labels[idx]

    def precision_at_k(self, k: int = 10) -> float:
        """Leave-one-out precision@k: the mean fraction of each item's k nearest *other*
        items that share its label (items with unknown label -1 are skipped)."""
        known = np.flatnonzero(self.labels >= 0)
        if len(known) == 0:
            raise GalleryError("precision@k needs labels; this gallery has none")
        k = min(int(k), len(self) - 1)
        if k < 1:
            raise GalleryError("precision@k needs at least two gallery items")
        vecs = self.index.reconstruct_n(0, len(self))
        hits = 0.0
        for start in range(0, len(known), 1024):
            rows = known[start:start + 1024]
            _, idx = self.index.search(vecs[rows], k + 1)
            for r, nb in zip(rows, idx):
                nb = nb[nb != r][:k]  # drop the item itself (wherever ties put it)
                hits += float(np.mean(self.labels[nb] == self.labels[r]))
        return hits / len(known)

    # --- storage -------------------------------------------------------------------------
    def save(self, folder: str | os.PathLike[str]) -> Path:
        """Write the gallery to ``folder`` atomically (temp sibling folder, then rename)."""
        folder = Path(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
        try:
            faiss.write_index(self.index, str(tmp / "index.faiss"))
            np.save(tmp / "labels.npy", self.labels)
            np.save(tmp / "thumbs.npy", self.thumbnails)
            (tmp / "items.json").write_text(json.dumps({"ids": self.ids,
                                                        "digests": self.digests}))
            meta = {"format": FORMAT_VERSION, "encoder_hash": self.encoder_hash,
                    "label_names": self.label_names, "count": len(self), "dim": self.dim,
                    "metric": "cosine (inner product of l2-normalised vectors)", **self.meta}
            (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
            old = None
            if folder.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".old",
                                            dir=folder.parent))
                os.replace(folder, old / folder.name)
            os.replace(tmp, folder)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike[str]) -> "GalleryIndex":
        """Read a gallery written by :meth:`save`; a missing or damaged one raises GalleryError."""
        folder = Path(folder)
        need = ("meta.json", "index.faiss", "labels.npy", "thumbs.npy")
        missing = [n for n in need if not (folder / n).is_file()]
        if missing:
            raise GalleryError(f"{folder} is not a gallery (missing {', '.join(missing)})")
        try:
            meta = json.loads((folder / "meta.json").read_text())
            index = faiss.read_index(str(folder / "index.faiss"))
            labels = np.load(folder / "labels.npy", allow_pickle=False)
            thumbs = np.load(folder / "thumbs.npy", allow_pickle=False)
            items = (json.loads((folder / "items.json").read_text())
                     if (folder / "items.json").is_file() else {})  # older galleries: none
        except (OSError, ValueError, RuntimeError) as exc:
            raise GalleryError(f"gallery {folder} is damaged: {exc}") from exc
        if meta.get("format") != FORMAT_VERSION:
            raise GalleryError(f"gallery {folder} has format {meta.get('format')}, "
                               f"expected {FORMAT_VERSION}")
        extra = {k: v for k, v in meta.items()
                 if k not in ("format", "encoder_hash", "label_names", "count", "dim", "metric")}
        return cls(index, labels, meta["label_names"], thumbs, meta["encoder_hash"], extra,
                   ids=items.get("ids"), digests=items.get("digests"))


def read_image_folder(root: str | os.PathLike[str], extensions: Sequence[str] = IMAGE_EXTENSIONS
                      ) -> tuple[list[np.ndarray], np.ndarray, list[str], list[str]]:
    """Read a user's image folder as a gallery source.

    With sub-folders (``root/<label>/*.png``) the sub-folder names are the labels (sorted);
    images directly in ``root`` then get label -1. A flat folder gives label -1 for all.
    Files that are not readable images are skipped.

    Returns:
        images (uint8 arrays), labels int64 (N,), label names, relative paths.
    """
    root = Path(root)
    if not root.is_dir():
        raise GalleryError(f"gallery folder not found: {root}")
    exts = {e.lower() for e in extensions}
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in exts
                   and not any(part.startswith(".") for part in p.relative_to(root).parts))
    names = sorted({p.relative_to(root).parts[0] for p in files if len(p.relative_to(root).parts) > 1})
    name_id = {n: i for i, n in enumerate(names)}
    images, labels, paths = [], [], []
    for p in files:
        try:
            with Image.open(p) as im:
                im.load()
                images.append(_as_uint8(im))
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
            continue
        rel = p.relative_to(root)
        labels.append(name_id[rel.parts[0]] if len(rel.parts) > 1 else -1)
        paths.append(rel.as_posix())
    if not images:
        raise GalleryError(f"no readable images ({', '.join(sorted(exts))}) under {root}")
    return images, np.asarray(labels, dtype=np.int64), names, paths
