"""A gallery from an image folder of any size: streamed, resumable, with progress.

The folder is listed once (sorted relative paths; hidden files skipped; the first-level
sub-folder is an image's label). The files are then read in shards of
``build.shard_size`` (``runtime/gallery_index.yaml``): each shard's images are read and
embedded ``build.batch_size`` at a time, and the shard's vectors, ids, labels and pixel
digests are written to ``<work>/shard_NNNNNN.npz`` atomically. An interrupted build (Ctrl-C,
a crash, a reboot) run again with the same folder and encoder continues after the last
complete shard; a changed folder or encoder starts over. Then the index chosen by size
(:mod:`runtime.ann`) is trained on a seeded sample and filled shard by shard, the gallery
is saved atomically, and the work folder is removed.

Memory stays bounded: one batch of images (each reduced to ``build.max_side`` px after its
digest is taken), one shard of vectors, and the index itself (for ivf: 1 byte per
dimension per image). Images are not copied: the gallery keeps their relative paths under
the folder and makes thumbnails on first query (:class:`runtime.gallery.GalleryIndex`).
Unreadable files are skipped and counted.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from runtime import ann
from runtime.gallery import (IMAGE_EXTENSIONS, EmbedFn, GalleryError, GalleryIndex, _l2_normalize,
                            pixel_digest, read_image)
from runtime.artifacts import atomic_path, write_json_atomic

PLAN = "plan.json"


@dataclass
class BuildReport:
    """What a folder build did.

    Attributes:
        count: images in the gallery.
        skipped: files that could not be read, with the reason (all of them).
        shards_total: shards in the plan; shards_resumed: complete ones found at the start.
        seconds: wall time of this call; spec: the index built.
    """

    count: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    shards_total: int = 0
    shards_resumed: int = 0
    seconds: float = 0.0
    spec: ann.IndexSpec | None = None


def list_images(root: str | os.PathLike[str],
                extensions: Sequence[str] = IMAGE_EXTENSIONS) -> list[str]:
    """Image-looking files under ``root`` (recursive, hidden parts skipped), as sorted
    relative posix paths."""
    root = Path(root)
    if not root.is_dir():
        raise GalleryError(f"gallery folder not found: {root}")
    exts = {e.lower() for e in extensions}
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        rel = Path(dirpath).relative_to(root)
        out.extend((rel / f).as_posix() for f in filenames
                   if not f.startswith(".") and os.path.splitext(f)[1].lower() in exts)
    return sorted(p[2:] if p.startswith("./") else p for p in out)


def label_names(paths: Sequence[str]) -> list[str]:
    """Sorted first-level sub-folder names (the labels); images directly under the root
    are unlabelled (-1)."""
    return sorted({p.split("/", 1)[0] for p in paths if "/" in p})


def _plan(root: Path, files: list[str], encoder_hash: str, shard_size: int, max_side: int) -> dict:
    h = hashlib.sha256("\n".join(files).encode())
    return {"root": str(root.resolve()), "files": len(files), "files_sha256": h.hexdigest(),
            "encoder_hash": encoder_hash, "shard_size": shard_size, "max_side": max_side}


def _shard_path(work: Path, k: int) -> Path:
    return work / f"shard_{k:06d}.npz"


def _read(root: Path, rel: str, max_side: int) -> tuple[np.ndarray, str]:
    """An image reduced to ``max_side`` px (aspect kept) and the digest of its full pixels."""
    arr = read_image(root / rel)
    digest = pixel_digest(arr)
    if max(arr.shape[:2]) > max_side:
        pil = Image.fromarray(arr)
        pil.thumbnail((max_side, max_side), Image.BILINEAR)
        arr = np.asarray(pil)
    return arr, digest


def _embed_shard(root: Path, files: list[str], names: dict[str, int], embed_fn: EmbedFn,
                 batch_size: int, max_side: int, bar: tqdm) -> dict[str, np.ndarray]:
    """Read and embed one shard's files, ``batch_size`` images in memory at a time."""
    vecs, ids, labels, digests, skipped, reasons = [], [], [], [], [], []
    for start in range(0, len(files), batch_size):
        batch, batch_ids = [], []
        for rel in files[start:start + batch_size]:
            try:
                arr, digest = _read(root, rel, max_side)
            except GalleryError as exc:
                skipped.append(rel)
                reasons.append(str(exc).split(": ", 1)[-1][:200])
                continue
            batch.append(arr)
            batch_ids.append(rel)
            digests.append(digest)
            labels.append(names.get(rel.split("/", 1)[0], -1) if "/" in rel else -1)
        if batch:
            emb = np.asarray(embed_fn(batch), dtype=np.float32)
            if emb.ndim != 2 or len(emb) != len(batch):
                raise GalleryError(f"embed_fn must return (n, D) for n images, got {emb.shape}")
            if not np.isfinite(emb).all():
                raise GalleryError("embed_fn returned non-finite values")
            vecs.append(_l2_normalize(emb))
            ids.extend(batch_ids)
        bar.update(len(files[start:start + batch_size]))
    dim = vecs[0].shape[1] if vecs else 0
    return {"vectors": np.concatenate(vecs) if vecs else np.zeros((0, dim), np.float32),
            "ids": np.asarray(ids, dtype=str), "labels": np.asarray(labels, np.int64),
            "digests": np.asarray(digests, dtype=str), "skipped": np.asarray(skipped, dtype=str),
            "reasons": np.asarray(reasons, dtype=str)}


@dataclass(frozen=True)
class ShardJob:
    """What embedding a shard takes besides the encoder (picklable: a Ray worker gets it)."""

    root: Path
    names: dict[str, int]
    batch_size: int
    max_side: int

    def embed(self, files: list[str], embed_fn: EmbedFn, bar: tqdm | None = None
              ) -> dict[str, np.ndarray]:
        """One shard's arrays (as written to its ``.npz``)."""
        return _embed_shard(self.root, files, self.names, embed_fn, self.batch_size,
                            self.max_side, bar if bar is not None else tqdm(disable=True))


# embeds the shards (index, files) it is given: (index, arrays) for each, in any order
ShardMap = Callable[[ShardJob, list[tuple[int, list[str]]]],
                    Iterable[tuple[int, dict[str, np.ndarray]]]]


def _load_shard(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def build_from_folder(root: str | os.PathLike[str], out: str | os.PathLike[str],
                      embed_fn: EmbedFn, encoder_hash: str, *, limit: int | None = None,
                      index_kind: str = "auto", settings: dict[str, Any] | None = None,
                      work: str | os.PathLike[str] | None = None, meta: dict[str, Any] | None = None,
                      show_progress: bool = True,
                      log: Callable[[str], None] = lambda m: print(m, flush=True),
                      shard_map: ShardMap | None = None,
                      ) -> tuple[GalleryIndex, BuildReport]:
    """Build (or continue building) the gallery of ``root`` into ``out``.

    Args:
        root: the image folder (``root/<label>/...`` gives labels).
        out: the gallery folder to write (replaced atomically at the end).
        embed_fn: list of uint8 images -> float (n, D).
        encoder_hash: the encoder's identity (stored; part of the resume plan).
        limit: use only the first ``limit`` files (sorted paths).
        index_kind: "auto" (by size) or exact / ivf / hnsw.
        settings: ``runtime/gallery_index.yaml``'s dict (default: the file).
        work: the shard folder (default ``<out>.build`` beside ``out``).
        meta: extra facts for meta.json (source).
        shard_map: embeds the missing shards elsewhere (:func:`app.batch_ray.gallery_shards`:
            on a Ray cluster, in parallel); default: here, one after the other.

    Returns:
        The saved gallery and a :class:`BuildReport`.
    """
    t0 = time.time()
    settings = settings or ann.load_settings()
    b = settings["build"]
    shard_size, batch_size, max_side = int(b["shard_size"]), int(b["batch_size"]), int(b["max_side"])
    root, out = Path(root), Path(out)
    work = Path(work) if work is not None else out.with_name(out.name + ".build")
    files = list_images(root)
    if limit is not None:
        if int(limit) < 1:
            raise GalleryError(f"the gallery limit must be >= 1, got {limit}")
        files = files[:int(limit)]
    if not files:
        raise GalleryError(f"no readable images ({', '.join(IMAGE_EXTENSIONS)}) under {root}")
    if len(files) > int(b["max_images"]):
        raise GalleryError(f"{root} holds {len(files)} image files, more than build.max_images = "
                           f"{b['max_images']} (runtime/gallery_index.yaml); pass a limit to use "
                           f"the first N, or raise the setting")
    names = label_names(files)
    name_id = {n: i for i, n in enumerate(names)}
    plan = _plan(root, files, encoder_hash, shard_size, max_side)
    n_shards = (len(files) + shard_size - 1) // shard_size
    report = BuildReport(shards_total=n_shards)
    old = None
    if (work / PLAN).is_file():
        try:
            old = json.loads((work / PLAN).read_text())
        except ValueError:
            old = None
    if old != plan:
        if work.exists():
            log(f"[gallery] {work}: another folder, file list or encoder; starting over")
            shutil.rmtree(work)
        work.mkdir(parents=True)
        write_json_atomic(work / PLAN, plan)
    done = [k for k in range(n_shards) if _shard_path(work, k).is_file()]
    report.shards_resumed = len(done)
    if done:
        log(f"[gallery] resuming: {len(done)} of {n_shards} shards already embedded")
    first_missing = next((k for k in range(n_shards) if k not in set(done)), n_shards)
    bar = tqdm(total=len(files), desc="embedding gallery", unit="img", disable=not show_progress,
               initial=min(len(done) * shard_size, len(files)))
    job = ShardJob(root, name_id, batch_size, max_side)
    todo = [(k, files[k * shard_size:(k + 1) * shard_size]) for k in range(first_missing, n_shards)
            if not _shard_path(work, k).is_file()]
    shards = (shard_map(job, todo) if shard_map is not None
              else ((k, job.embed(part, embed_fn, bar)) for k, part in todo))
    for k, shard in shards:
        with atomic_path(_shard_path(work, k)) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **shard)
        if shard_map is not None:
            bar.update(len(shard["ids"]) + len(shard["skipped"]))
    bar.close()

    # the index: sizes, a seeded training sample, then shard by shard
    counts, ids, labels, digests, dim = [], [], [], [], 0
    for k in range(n_shards):
        s = _load_shard(_shard_path(work, k))
        counts.append(len(s["ids"]))
        ids.extend(s["ids"].tolist())
        labels.append(s["labels"])
        digests.extend(s["digests"].tolist())
        report.skipped.extend(zip(s["skipped"].tolist(), s["reasons"].tolist()))
        dim = dim or (s["vectors"].shape[1] if len(s["vectors"]) else 0)
    total = int(sum(counts))
    if total == 0:
        raise GalleryError(f"no readable images under {root} ({len(report.skipped)} files skipped)")
    spec = ann.choose(total, settings, index_kind)
    report.spec, report.count = spec, total
    offsets = np.cumsum([0] + counts)
    sample = None
    if spec.needs_training:
        rows = ann.sample_rows(total, spec.params["train_size"], spec.params["seed"])
        parts = []
        for k in range(n_shards):
            sel = rows[(rows >= offsets[k]) & (rows < offsets[k + 1])] - offsets[k]
            if len(sel):
                parts.append(_load_shard(_shard_path(work, k))["vectors"][sel])
        sample = np.concatenate(parts)
    log(f"[gallery] indexing {total} vectors ({spec.kind}"
        + (f", {spec.params}" if spec.params else "") + ")")
    ibar = tqdm(total=total, desc="indexing gallery", unit="vec", disable=not show_progress)
    index = ann.build(spec, dim, lambda: (_load_shard(_shard_path(work, k))["vectors"]
                                          for k in range(n_shards)),
                      sample, progress=lambda n: ibar.update(n - ibar.n))
    ibar.close()
    info = {"built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **(meta or {}),
            "skipped": len(report.skipped),
            "skipped_examples": [f"{p}: {r}" for p, r in report.skipped[:20]]}
    gallery = GalleryIndex(index, np.concatenate(labels), names, None, encoder_hash, info,
                           ids=ids, digests=digests, spec=spec, image_root=root.resolve(),
                           thumb_size=int(b["thumb_size"]))
    gallery.save(out)
    shutil.rmtree(work, ignore_errors=True)
    report.seconds = time.time() - t0
    if report.skipped:
        log(f"[gallery] skipped {len(report.skipped)} unreadable file(s), e.g. "
            f"{report.skipped[0][0]}: {report.skipped[0][1]}")
    return gallery, report
