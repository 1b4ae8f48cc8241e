"""Retrieval tab: nearest gallery images under the DCL encoder."""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from runtime.engine import Engine, ModelUnavailableError
from runtime.manifest import inside
from app.inputs import InputError, display_rgb, load_image
from app.results import check
from app.services import reliability

MODEL = "dcl"  # the served encoder (the method's first default run)
GALLERY_DIR = "gallery"
MAX_K = 50

METHOD = "dcl"  # the method whose models this service runs


@functools.lru_cache(maxsize=4)
def _load_gallery(path: str):
    from runtime.gallery import GalleryIndex

    return GalleryIndex.load(path)


@dataclass
class RetrievalResult:
    report: dict[str, Any]
    tiles: list[tuple[np.ndarray, str]]


def neighbours(engine: Engine, source: Any, k: int = 8, query_label: str | None = None,
               model_name: str = MODEL) -> RetrievalResult:
    """The k nearest gallery images to an uploaded image (cosine similarity), in the gallery
    of the chosen encoder (its manifest entry's ``gallery.dir``).

    Args:
        model_name: a DCL encoder of the manifest (default: the method's first default run).
        query_label: the query's true label, if known; then the precision of the
            neighbours' labels is reported.
    """
    try:
        k = int(k)
    except (TypeError, ValueError) as exc:
        raise InputError(f"k must be a whole number, got {k!r}") from exc
    if not 1 <= k <= MAX_K:
        raise InputError(f"k must be between 1 and {MAX_K}, got {k}.")
    rgb = load_image(source, min_side=8)
    model = engine.get(model_name or MODEL, METHOD)
    rel = model.entry.get("gallery", {}).get("dir") or (GALLERY_DIR if model.name == MODEL else "")
    gdir = inside(engine.artifacts, rel, f"models.{model.name}.gallery.dir") if rel else None
    if gdir is None or not gdir.is_dir():
        raise ModelUnavailableError(
            f"no gallery for encoder '{model.name}'"
            + (f" at {gdir}" if gdir else "")
            + f": run `python -m export.methods.dcl.gallery --model {model.name} "
            f"[--folder IMAGES/]` (or `python -m export {model.name}`)")
    gallery = _load_gallery(str(gdir))
    x = model.prepare([rgb])
    out = model.run({"image": x})
    emb, dom = out["embedding"], model.domain_check(out, x)
    self_index = gallery.find(display_rgb(rgb))  # the query is itself a gallery item
    want = min(k + (self_index is not None), len(gallery))
    try:
        scores, idx, labels = gallery.query(emb, k=want, encoder_hash=model.entry["sha256"])
    except ValueError as exc:  # GalleryError: another encoder's gallery, bad shape
        raise ModelUnavailableError(str(exc)) from exc
    names = gallery.label_names
    found = [(s, int(i), int(lab)) for s, i, lab in zip(scores[0], idx[0], labels[0])
             if int(i) != self_index and int(i) >= 0][:k]
    hits = [{"rank": r + 1, "index": i, "id": gallery.ids[i],
             "label": names[lab] if names else lab, "similarity": round(float(s), 4)}
            for r, (s, i, lab) in enumerate(found)]
    report: dict[str, Any] = {
        "model": model.name, "model_version": model.version, "provider": model.provider, "k": k,
        "neighbours": hits,
        # a query with exactly the pixels of a gallery item is that item: it is left out
        # of the neighbours and of precision@k
        "query_in_gallery": self_index is not None,
        "query_gallery_id": gallery.ids[self_index] if self_index is not None else None,
        "gallery": gallery.meta.get("source", ""),
        "domain": dom[0] if dom else None}
    if query_label:
        if names and query_label not in names:
            raise InputError(f"Unknown label {query_label!r}; choose one of: {', '.join(names)}")
        report["query_label"] = query_label
        report["precision_at_k"] = round(sum(h["label"] == query_label for h in hits) / len(hits), 4)
    report = reliability.mark(report, None, "this image", f"{len(hits)} nearest neighbours")
    tiles = []
    for h in hits:
        thumb = gallery.thumbnail(h["index"])  # a folder gallery: made from the file, cached
        if thumb is None:
            h["missing"] = True  # the image file is gone or unreadable since the build
        tiles.append((thumb if thumb is not None else missing_tile(gallery.thumb_size),
                      f"{h['rank']}. {h['label']}  {h['similarity']:.3f}"
                      + ("  (file missing)" if thumb is None else "")))
    return RetrievalResult(check("neighbours", report), tiles)


def missing_tile(size: int) -> np.ndarray:
    """A mid-grey tile with a dark cross, shown for a gallery image whose file is gone.
    Shape: uint8 (size, size)."""
    tile = np.full((size, size), 128, np.uint8)
    d = np.arange(size)
    tile[d, d] = tile[d, size - 1 - d] = 40
    return tile


BATCH_COLUMNS = ["model", "model_version", "k", "nearest_label", "nearest_similarity",
                 "vote_label", "raw_vote_label", "vote_share", "neighbours", "in_domain"]


def vote(report: dict[str, Any]) -> tuple[str | None, float | None]:
    """The majority label of an answer's neighbours (ties: the label of the nearer
    neighbour) and its share of them; (None, None) without neighbours."""
    labels = [str(h["label"]) for h in report["neighbours"]]
    if not labels:
        return None, None
    top = max(dict.fromkeys(labels), key=labels.count)
    return top, round(labels.count(top) / len(labels), 4)


def batch_rows(engine: Engine, path: Any, k: int = 8, model_name: str = MODEL
               ) -> list[dict[str, Any]]:
    """One row for :mod:`app.batch`: the nearest neighbour, the majority label of the k
    neighbours (ties: the label of the nearer neighbour; ``unreliable`` unless the image
    was measured in domain, the majority itself in ``raw_vote_label``) with its share, and
    every neighbour as ``id:label:similarity``."""
    r = neighbours(engine, path, k, model_name=model_name).report
    hits = r["neighbours"]
    labels = [str(h["label"]) for h in hits]
    label, share = vote(r)
    return [{"model": r["model"], "model_version": r["model_version"], "k": k,
             "nearest_label": labels[0] if labels else None,
             "nearest_similarity": hits[0]["similarity"] if hits else None,
             "vote_label": label if r["reliable"] or label is None else reliability.UNRELIABLE,
             "raw_vote_label": label,
             "vote_share": share,
             "neighbours": [f"{h['id']}:{h['label']}:{h['similarity']:.4f}" for h in hits],
             "in_domain": (r.get("domain") or {}).get("in_domain")}]
