"""Retrieval gallery: a FAISS index of l2-normalised embeddings with labels and thumbnails.

numpy, faiss and Pillow only (no torch): the app imports this module.

A gallery folder holds

    index.faiss     faiss index over unit vectors (inner product = cosine similarity):
                    exact (IndexFlatIP) for small galleries, approximate (IVF or HNSW) for
                    large ones, chosen by size (:mod:`runtime.ann`; ``index`` in meta.json)
    labels.npy      int64 (N,), -1 where unknown
    thumbs.npy      uint8 (N, h, w) or (N, h, w, 3) -- only for galleries that store their
                    thumbnails (built from arrays, e.g. Fashion-MNIST)
    items.json      an id per item (its path relative to ``image_root`` for folder galleries)
                    and a pixel digest
    meta.json       encoder hash, label names, count, dimension, index, source; a folder
                    gallery also ``image_root`` and ``thumbnails: "lazy"``

A folder gallery (:mod:`runtime.gallery_build`) copies no images: its items are paths under
``image_root``, and a thumbnail is made from the file the first time a query shows it, then
cached under ``thumbs/`` in the gallery folder (and in memory). Format 1 galleries (exact
index, stored thumbnails) still load.

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

from runtime import ann
from runtime.manifest import ManifestError, inside

FORMAT_VERSION = 2
READ_FORMATS = (1, 2)  # 1: before the index choice and lazy thumbnails (flat, stored thumbs)
THUMB_CACHE = "thumbs"
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


def fit_thumbnail(image: np.ndarray, size: int = 64) -> np.ndarray:
    """One image reduced (aspect kept) so its longer side is at most ``size``; smaller
    images are kept as they are. Shape: uint8 (H, W[, 3]) -> uint8 (h, w[, 3])."""
    if max(image.shape[:2]) <= size:
        return np.ascontiguousarray(image, dtype=np.uint8)
    pil = Image.fromarray(image)
    pil.thumbnail((size, size), Image.BILINEAR)
    return np.asarray(pil)


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """An image file as uint8 (H, W) or (H, W, 3); GalleryError when it cannot be read."""
    try:
        with Image.open(path) as im:
            im.load()
            return _as_uint8(im)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise GalleryError(f"cannot read image {path}: {exc}") from exc


class GalleryIndex:
    """Embeddings of a labelled image set in a FAISS inner-product index.

    Args:
        index: faiss index over l2-normalised vectors (exact or approximate, see ``spec``).
        labels: int64 label ids (N,), -1 for unknown.
        label_names: name of each label id.
        thumbnails: uint8 (N, h, w[, 3]), or None for a folder gallery whose thumbnails are
            made lazily from ``image_root / ids[i]``.
        encoder_hash: identifies the encoder that produced the vectors (e.g. the ONNX sha256).
        meta: extra JSON-able facts (source, build time).
        ids: an id per item users can find the image by (its path in an image folder, or
            ``<source>#<index>``); default: the index as text.
        digests: :func:`pixel_digest` per item (empty strings when unknown).
        spec: the index kind and its parameters (:mod:`runtime.ann`); default exact.
        image_root: the folder ``ids`` are relative to (lazy thumbnails).
        thumb_size: side of lazily made thumbnails.
    """

    def __init__(self, index: faiss.Index, labels: np.ndarray, label_names: Sequence[str],
                 thumbnails: np.ndarray | None, encoder_hash: str,
                 meta: dict[str, Any] | None = None, ids: Sequence[str] | None = None,
                 digests: Sequence[str] | None = None, spec: ann.IndexSpec | None = None,
                 image_root: str | os.PathLike[str] | None = None, thumb_size: int = 64) -> None:
        if thumbnails is None and image_root is None:
            raise GalleryError("a gallery needs stored thumbnails or an image_root to make them from")
        n_thumbs = len(labels) if thumbnails is None else len(thumbnails)
        if index.ntotal != len(labels) or len(labels) != n_thumbs:
            raise GalleryError(f"gallery parts disagree: {index.ntotal} vectors, "
                               f"{len(labels)} labels, {n_thumbs} thumbnails")
        self.index = index
        self.spec = spec or ann.IndexSpec("exact")
        ann.apply_search_params(index, self.spec)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.label_names = [str(n) for n in label_names]
        self._thumbs = thumbnails
        self.image_root = Path(image_root) if image_root is not None else None
        self.thumb_size = int(thumb_size)
        self.folder: Path | None = None  # set by load/save: where thumbnails are cached
        self._thumb_memo: dict[int, np.ndarray] = {}
        self.encoder_hash = str(encoder_hash)
        self.meta = dict(meta or {})
        n = len(self.labels)
        self.ids = [str(i) for i in ids] if ids is not None else [str(i) for i in range(n)]
        self.digests = [str(d) for d in digests] if digests is not None else [""] * n
        if len(self.ids) != n or len(self.digests) != n:
            raise GalleryError(f"gallery parts disagree: {n} items, {len(self.ids)} ids, "
                               f"{len(self.digests)} digests")
        self._by_digest: dict[str, int] | None = None

    def find(self, image: np.ndarray | Image.Image) -> int | None:
        """The index of the gallery item with exactly these pixels, or None."""
        if self._by_digest is None:  # built on first use (a million ids: ~1 s)
            self._by_digest = {d: i for i, d in enumerate(self.digests) if d}
        return self._by_digest.get(pixel_digest(image))

    def __len__(self) -> int:
        return int(self.index.ntotal)

    @property
    def dim(self) -> int:
        return int(self.index.d)

    # --- thumbnails ----------------------------------------------------------------------
    @property
    def lazy_thumbnails(self) -> bool:
        return self._thumbs is None

    @property
    def thumbnails(self) -> np.ndarray:
        """All stored thumbnails, uint8 (N, h, w[, 3]); a folder gallery has none stored."""
        if self._thumbs is None:
            raise GalleryError("this gallery makes its thumbnails on demand; use thumbnail(i)")
        return self._thumbs

    def thumbnail(self, i: int) -> np.ndarray | None:
        """Item ``i``'s thumbnail: stored, or made from its file on first use and cached
        (memory, then ``<gallery>/thumbs/``). None when the file is gone or unreadable.

        Returns:
            uint8 (h, w) or (h, w, 3), or None.
        """
        i = int(i)
        if self._thumbs is not None:
            return self._thumbs[i]
        if i in self._thumb_memo:
            return self._thumb_memo[i]
        cached = self._thumb_path(i)
        thumb = None
        if cached is not None and cached.is_file():
            try:
                thumb = read_image(cached)
            except GalleryError:
                thumb = None
        if thumb is None:
            try:
                thumb = fit_thumbnail(read_image(self.image_root / self.ids[i]), self.thumb_size)
            except GalleryError:
                return None
            self._write_thumb(cached, thumb)
        if len(self._thumb_memo) >= 4096:
            self._thumb_memo.pop(next(iter(self._thumb_memo)))
        self._thumb_memo[i] = thumb
        return thumb

    def _thumb_path(self, i: int) -> Path | None:
        if self.folder is None:
            return None
        key = hashlib.sha256(f"{self.ids[i]}|{self.digests[i]}".encode()).hexdigest()[:20]
        return self.folder / THUMB_CACHE / key[:2] / f"{key}.png"

    @staticmethod
    def _write_thumb(path: Path | None, thumb: np.ndarray) -> None:
        """Cache a thumbnail atomically; a read-only gallery folder just keeps it in memory."""
        if path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".thumb.", suffix=".png", dir=path.parent)
            os.close(fd)
            try:
                Image.fromarray(thumb).save(tmp, format="PNG")
                os.replace(tmp, path)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        except OSError:
            pass

    # --- build ---------------------------------------------------------------------------
    @classmethod
    def build(cls, embed_fn: EmbedFn, images: Sequence[np.ndarray | Image.Image],
              labels: Sequence[int] | np.ndarray | None, label_names: Sequence[str],
              encoder_hash: str, batch_size: int = 256, thumb_size: int = 64,
              progress: Callable[[int, int], None] | None = None,
              meta: dict[str, Any] | None = None,
              ids: Sequence[str] | None = None, index_kind: str = "auto",
              settings: dict[str, Any] | None = None) -> "GalleryIndex":
        """Embed ``images`` with ``embed_fn`` and index them (thumbnails stored).

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
            index_kind: "auto" (by size, :func:`runtime.ann.choose`) or a kind to force.
            settings: index settings (default ``runtime/gallery_index.yaml``).
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
        spec = ann.choose(len(x), settings, index_kind)
        sample = x[ann.sample_rows(len(x), spec.params.get("train_size", 0),
                                   spec.params.get("seed", 0))] if spec.needs_training else None
        index = ann.build(spec, x.shape[1], lambda: [x], sample)
        info = {"built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **(meta or {})}
        return cls(index, lab, label_names, make_thumbnails(arrays, thumb_size), encoder_hash,
                   info, ids=ids, digests=[pixel_digest(a) for a in arrays], spec=spec)

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
        """Top-k gallery items by cosine similarity (approximate for an ivf/hnsw index).

        Args:
            embeddings: query embeddings (normalised here). Shape: (Q, D) or (D,).
            k: neighbours per query (capped at the gallery size).
            encoder_hash: identity of the encoder that embedded the queries.

        Returns:
            scores float32 (Q, k) in [-1, 1], descending; indices int64 (Q, k);
            labels int64 (Q, k). An approximate index that finds fewer than k items
            (rare: too few cells probed) pads with index -1, score -inf, label -1.
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
        idx = idx.astype(np.int64)
        labels = np.where(idx >= 0, self.labels[np.maximum(idx, 0)], -1)
        return scores, idx, labels

    def precision_at_k(self, k: int = 10, max_queries: int | None = None, seed: int = 0) -> float:
        """Leave-one-out precision@k: the mean fraction of each item's k nearest *other*
        items that share its label (items with unknown label -1 are skipped).

        Args:
            max_queries: use a seeded random sample of at most this many labelled items as
                queries (large galleries); None: all of them.
        """
        known = np.flatnonzero(self.labels >= 0)
        if len(known) == 0:
            raise GalleryError("precision@k needs labels; this gallery has none")
        k = min(int(k), len(self) - 1)
        if k < 1:
            raise GalleryError("precision@k needs at least two gallery items")
        if max_queries is not None and len(known) > max_queries:
            known = known[ann.sample_rows(len(known), max_queries, seed)]
        hits = 0.0
        for start in range(0, len(known), 1024):
            rows = known[start:start + 1024]
            _, idx = self.index.search(ann.vectors(self.index, rows), k + 1)
            for r, nb in zip(rows, idx):
                nb = nb[(nb != r) & (nb >= 0)][:k]  # drop the item itself (wherever ties put it)
                hits += float(np.mean(self.labels[nb] == self.labels[r])) if len(nb) else 0.0
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
            if self._thumbs is not None:
                np.save(tmp / "thumbs.npy", self._thumbs)
            (tmp / "items.json").write_text(json.dumps({"ids": self.ids,
                                                        "digests": self.digests}))
            meta = {"format": FORMAT_VERSION, "encoder_hash": self.encoder_hash,
                    "label_names": self.label_names, "count": len(self), "dim": self.dim,
                    "metric": "cosine (inner product of l2-normalised vectors)",
                    "index": self.spec.to_dict(),
                    "thumbnails": "lazy" if self._thumbs is None else "stored", **self.meta}
            if self._thumbs is None:
                meta.update(image_root=str(self.image_root), thumb_size=self.thumb_size)
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
        self.folder = folder
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike[str],
             image_root: str | os.PathLike[str] | None = None) -> "GalleryIndex":
        """Read a gallery written by :meth:`save`; a missing or damaged one raises GalleryError.

        Args:
            image_root: where a folder gallery's images are now (default: where they were
                when it was built, ``image_root`` in meta.json).
        """
        folder = Path(folder)
        missing = [n for n in ("meta.json", "index.faiss", "labels.npy") if not (folder / n).is_file()]
        if missing:
            raise GalleryError(f"{folder} is not a gallery (missing {', '.join(missing)})")
        try:
            meta = json.loads((folder / "meta.json").read_text())
        except (OSError, ValueError) as exc:
            raise GalleryError(f"gallery {folder} is damaged: {exc}") from exc
        if meta.get("format") not in READ_FORMATS:
            raise GalleryError(f"gallery {folder} has format {meta.get('format')}, expected one of "
                               f"{', '.join(map(str, READ_FORMATS))}; rebuild it")
        lazy = meta.get("thumbnails") == "lazy"
        if not lazy and not (folder / "thumbs.npy").is_file():
            raise GalleryError(f"{folder} is not a gallery (missing thumbs.npy)")
        try:
            index = faiss.read_index(str(folder / "index.faiss"))
            labels = np.load(folder / "labels.npy", allow_pickle=False)
            thumbs = None if lazy else np.load(folder / "thumbs.npy", allow_pickle=False)
            items = (json.loads((folder / "items.json").read_text())
                     if (folder / "items.json").is_file() else {})  # older galleries: none
        except (OSError, ValueError, RuntimeError) as exc:
            raise GalleryError(f"gallery {folder} is damaged: {exc}") from exc
        if lazy:  # thumbnails are read from image_root / id: no id may leave that folder
            root = image_root or meta.get("image_root") or "."
            for i, item in enumerate(items.get("ids") or []):
                try:
                    inside(root, item, f"ids[{i}]", folder / "items.json", "rebuild the gallery")
                except ManifestError as exc:
                    raise GalleryError(str(exc)) from exc
        known = ("format", "encoder_hash", "label_names", "count", "dim", "metric", "index",
                 "thumbnails", "image_root", "thumb_size")
        extra = {k: v for k, v in meta.items() if k not in known}
        g = cls(index, labels, meta["label_names"], thumbs, meta["encoder_hash"], extra,
                ids=items.get("ids"), digests=items.get("digests"),
                spec=ann.IndexSpec.from_dict(meta.get("index")),
                image_root=image_root or meta.get("image_root"),
                thumb_size=int(meta.get("thumb_size", 64)))
        g.folder = folder
        return g


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
