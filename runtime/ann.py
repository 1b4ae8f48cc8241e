"""The gallery's vector index, chosen by gallery size.

Small galleries get exact search (``faiss.IndexFlatIP``: every query scans every vector,
so its cost grows with N). At ``index.exact_below`` vectors and above the gallery gets an
approximate index whose query cost does not grow with N at a fixed ``nprobe`` / ``ef``:

* ``ivf``: k-means cells (``round(lists_per_sqrt_n * sqrt(N))``), each vector stored as an
  ``encoding`` code (SQ8: one byte per dimension) in its cell's list; a query scans the
  ``nprobe`` nearest cells.
* ``hnsw``: a navigable small-world graph over the full vectors (``m`` links per node).

All on l2-normalised vectors with inner product (= cosine similarity). Settings:
``runtime/gallery_index.yaml``; the defaults there are what ``python -m scripts.bench_index``
measured on 1,000,000 vectors (reports/index_bench.md). numpy and faiss only (no torch).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import faiss
import numpy as np
import yaml

SETTINGS = Path(__file__).with_name("gallery_index.yaml")
KINDS = ("exact", "ivf", "hnsw")


class IndexSettingsError(ValueError):
    """A bad index setting (the message names it)."""

    user_error = True


def load_settings(path: str | Path = SETTINGS) -> dict[str, Any]:
    """``runtime/gallery_index.yaml`` (or ``path``), checked."""
    s = yaml.safe_load(Path(path).read_text())
    ix = s["index"]
    if ix["approximate"] not in ("ivf", "hnsw"):
        raise IndexSettingsError(f"index.approximate must be 'ivf' or 'hnsw', got {ix['approximate']!r}")
    if int(ix["exact_below"]) < 1:
        raise IndexSettingsError(f"index.exact_below must be >= 1, got {ix['exact_below']}")
    return s


@dataclass(frozen=True)
class IndexSpec:
    """What to build: ``kind`` (exact, ivf, hnsw) and its parameters.

    Attributes:
        kind: one of :data:`KINDS`.
        params: ivf: nlist, encoding, nprobe, train_size; hnsw: m, ef_construction,
            ef_search; exact: none. Plus ``seed``.
    """

    kind: str
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def needs_training(self) -> bool:
        return self.kind == "ivf"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **self.params}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "IndexSpec":
        d = dict(d or {"kind": "exact"})  # galleries written before the choice existed
        return cls(d.pop("kind"), d)


def choose(n: int, settings: dict[str, Any] | None = None, kind: str = "auto") -> IndexSpec:
    """The index for a gallery of ``n`` vectors.

    Args:
        n: gallery size.
        settings: :func:`load_settings`'s dict (default: the YAML file).
        kind: "auto" (by size: exact below ``index.exact_below``) or a kind to force.
    """
    s = (settings or load_settings())["index"]
    if kind == "auto":
        kind = "exact" if n < int(s["exact_below"]) else s["approximate"]
    if kind not in KINDS:
        raise IndexSettingsError(f"unknown index kind {kind!r}; choose auto, {', '.join(KINDS)}")
    seed = int(s["seed"])
    if kind == "exact":
        return IndexSpec("exact", {})
    if kind == "hnsw":
        h = s["hnsw"]
        return IndexSpec("hnsw", {"m": int(h["m"]), "ef_construction": int(h["ef_construction"]),
                                  "ef_search": int(h["ef_search"]), "seed": seed})
    v = s["ivf"]
    nlist = max(1, min(int(round(float(v["lists_per_sqrt_n"]) * math.sqrt(max(n, 1)))), n))
    return IndexSpec("ivf", {"nlist": nlist, "encoding": str(v["encoding"]),
                             "nprobe": min(int(v["nprobe"]), nlist),
                             "train_size": min(n, nlist * int(v["train_per_list"])), "seed": seed})


def new_index(spec: IndexSpec, dim: int) -> faiss.Index:
    """An empty index for ``dim``-dimensional unit vectors (inner product)."""
    if spec.kind == "exact":
        return faiss.IndexFlatIP(dim)
    if spec.kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, spec.params["m"], faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = spec.params["ef_construction"]
    else:
        index = faiss.index_factory(dim, f"IVF{spec.params['nlist']},{spec.params['encoding']}",
                                    faiss.METRIC_INNER_PRODUCT)
    apply_search_params(index, spec)
    return index


def apply_search_params(index: faiss.Index, spec: IndexSpec) -> None:
    """Set nprobe (ivf) or efSearch (hnsw) from ``spec`` (after a load, say)."""
    if spec.kind == "ivf":
        faiss.extract_index_ivf(index).nprobe = int(spec.params["nprobe"])
    elif spec.kind == "hnsw":
        index.hnsw.efSearch = int(spec.params["ef_search"])


def train(index: faiss.Index, spec: IndexSpec, sample: np.ndarray) -> None:
    """Train an ivf index on a sample of the gallery. Shape: float32 (S, D), unit rows.

    k-means is seeded (``spec.params['seed']``), so the same sample gives the same cells.
    """
    if not spec.needs_training:
        return
    ivf = faiss.extract_index_ivf(index)
    ivf.cp.seed = int(spec.params.get("seed", 0))
    ivf.cp.max_points_per_centroid = max(int(math.ceil(len(sample) / ivf.nlist)), 1)
    index.train(np.ascontiguousarray(sample, dtype=np.float32))


def sample_rows(n: int, size: int, seed: int) -> np.ndarray:
    """``size`` distinct row numbers of ``n`` (sorted), seeded. Shape: int64 (size,)."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=min(size, n), replace=False)).astype(np.int64)


def build(spec: IndexSpec, dim: int, chunks: Callable[[], Iterable[np.ndarray]],
          sample: np.ndarray | None = None,
          progress: Callable[[int], None] | None = None) -> faiss.Index:
    """Build an index chunk by chunk (memory: the index plus one chunk).

    Args:
        spec: from :func:`choose`.
        dim: vector dimension D.
        chunks: returns an iterable of float32 (n_i, D) unit-row blocks, in gallery order.
        sample: training vectors for ivf (float32 (S, D)); ignored otherwise.
        progress: called with the number of vectors added after each chunk.
    """
    index = new_index(spec, dim)
    if spec.needs_training:
        if sample is None or not len(sample):
            raise IndexSettingsError("an ivf index needs a training sample")
        train(index, spec, sample)
    for block in chunks():
        index.add(np.ascontiguousarray(block, dtype=np.float32))
        if progress:
            progress(int(index.ntotal))
    return index


def vectors(index: faiss.Index, rows: np.ndarray) -> np.ndarray:
    """The stored vectors of ``rows`` (exact for flat and hnsw, decoded codes for ivf).
    Shape: int (R,) -> float32 (R, D)."""
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None and not ivf.direct_map.type:
        ivf.make_direct_map()
    return np.stack([index.reconstruct(int(r)) for r in rows]).astype(np.float32)

