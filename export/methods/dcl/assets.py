"""DCL's post-export hook: the retrieval gallery (embedded with the exported encoder in
onnxruntime) and the Fashion-MNIST example images of the Retrieval tab, chosen so the
majority label of the served encoder's nearest gallery images is their class."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from app.services import retrieval as retrieval_svc
from export.commit import commit_entry, discard, fresh_name
from export.examples import Judge, served_model, write_class_examples
from methods.dcl import DESCRIPTOR
from runtime.gallery import GalleryIndex
from runtime.gallery_build import build_from_folder
from runtime.engine import OnnxModel
from runtime.manifest import read_manifest
from training.data.fashion_mnist import load_fashion_mnist

GALLERY_DIR = "gallery"          # the default encoder's gallery
OTHER_GALLERIES = "galleries"    # every other encoder's: galleries/<run>
# the default encoder: the method's first default run
SERVED = DESCRIPTOR.default_runs[0].run
EXAMPLES = "retrieval"  # examples/<folder> the Retrieval tab shows
EXAMPLE_K = 8           # the neighbours an example asks for (the tab's default k)


def gallery_dir(run: str) -> str:
    """The gallery folder name of encoder ``run``, relative to the artifacts folder; each
    build writes a fresh folder (this name, else ``<name>.2``, ... :func:`export.commit.fresh_name`),
    recorded in its manifest entry's ``gallery.dir``, which the retrieval tab reads."""
    return GALLERY_DIR if run == SERVED else f"{OTHER_GALLERIES}/{run}"


def served_gallery(entry: dict[str, Any], run: str) -> str:
    """The gallery folder a manifest entry names (:func:`gallery_dir` when it names none)."""
    return (entry.get("gallery") or {}).get("dir") or gallery_dir(run)


def stage_gallery(artifacts: Path, entry: dict[str, Any], options: dict[str, Any]) -> None:
    """The encoder variant's ``assets`` hook: embed the gallery with the just-exported ONNX
    file (``entry``, not in the manifest yet) into a fresh folder recorded in ``entry``,
    so the manifest switches to the encoder and its gallery at once. ``gallery_dir``
    (``--gallery-dir``) names the image folder, ``gallery_limit`` keeps the first N;
    ``gallery`` False (``--no-gallery``): none."""
    if options.get("gallery", True):
        _embed(artifacts, entry, options.get("gallery_dir"), limit=options.get("gallery_limit"))


def post_export(artifacts: Path, runs: list[str], options: dict[str, Any]) -> None:
    """Rebuild the gallery of every exported encoder not exported now whose saved gallery
    is missing or was embedded by another encoder (each encoder has its own gallery, so
    several DCL models are served side by side; those exported now got theirs with their
    export, :func:`stage_gallery`); write examples."""
    manifest = read_manifest(artifacts)
    encoders = [n for n, e in manifest["models"].items() if e.get("method") == DESCRIPTOR.name]
    if options.get("gallery", True):
        for run in encoders:
            if run not in runs and not _gallery_matches(artifacts, manifest, run):
                build_gallery(artifacts, None, limit=options.get("gallery_limit"), run=run)
    write_class_examples(artifacts, EXAMPLES, example_judge(artifacts))


def example_judge(artifacts: Path) -> Judge | None:
    """The served default encoder as the Retrieval tab asks it: the majority label of the
    ``EXAMPLE_K`` nearest gallery images; None when no encoder or no gallery is served."""
    found = served_model(artifacts, DESCRIPTOR.name, SERVED)
    if found is None:
        return None
    engine, name = found
    if not (artifacts / served_gallery(engine.manifest["models"][name], name)
            / "meta.json").is_file():
        return None
    def answer(p: Path) -> str:  # the model's own majority label, in domain or not
        return retrieval_svc.batch_rows(engine, p, EXAMPLE_K, name)[0]["raw_vote_label"]

    return Judge(name, engine.get(name).version, answer)


def _gallery_matches(artifacts: Path, manifest: dict[str, Any], run: str = SERVED) -> bool:
    """True when the saved gallery of ``run`` was embedded by that encoder."""
    try:
        meta = artifacts / served_gallery(manifest["models"][run], run) / "meta.json"
        return json.loads(meta.read_text()).get("encoder_hash") == manifest["models"][run]["sha256"]
    except (OSError, ValueError, KeyError):
        return False


def build_gallery(artifacts: Path, image_dir: str | None = None, k_eval: int = 10,
                  limit: int | None = None, index_kind: str = "auto",
                  run: str = SERVED, shards: Any = None) -> GalleryIndex:
    """Embed the gallery of the exported encoder ``run`` (Fashion-MNIST test by default, or
    ``image_dir``) into a fresh folder and switch its manifest entry to it (one rename of
    the manifest, :func:`export.commit.commit_entry`; the old folder is removed after).

    The index stores the DCL ONNX file's sha256 as its encoder hash, so a gallery built by
    one encoder refuses queries from another. Precision@k of the gallery against its own
    labels (leave-one-out; at most 10,000 queries) is recorded in the manifest's DCL entry.
    ``limit`` keeps the first N images (quick builds). An image folder is read in shards
    (:mod:`runtime.gallery_build`): bounded memory, progress, resumable after an
    interruption (run the same command again), images referenced by path with thumbnails
    made on first query; the index (exact or approximate) is chosen by size
    (``runtime/gallery_index.yaml``) unless ``index_kind`` names one. ``shards``: the
    encoder -> the folder's shard map (:func:`app.batch_ray.gallery_shards`: on Ray).
    """
    entry = dict(read_manifest(artifacts)["models"][run])
    try:
        gallery = _embed(artifacts, entry, image_dir, k_eval, limit, index_kind, shards)
        commit_entry(artifacts, run, entry)
    except BaseException:  # stopped: the served gallery stays, the new folder goes
        discard(artifacts, [served_gallery(entry, run)])
        raise
    return gallery


def _embed(artifacts: Path, entry: dict[str, Any], image_dir: str | None = None,
           k_eval: int = 10, limit: int | None = None, index_kind: str = "auto",
           shards: Any = None) -> GalleryIndex:
    """Embed and save the gallery of the encoder ``entry`` (a manifest entry) in a fresh
    folder, recorded with its precision@k in ``entry["gallery"]`` (:func:`build_gallery`)."""
    run = entry["name"]
    model = OnnxModel(run, entry, artifacts)
    base = gallery_dir(run)
    rel = fresh_name(artifacts, base)
    entry["gallery"] = {"dir": rel}  # named before it is written: removed if stopped
    out_dir = artifacts / rel

    def embed(batch):
        return model.run({"image": model.prepare(batch)})["embedding"]

    t0 = time.time()
    if image_dir:
        source = f"image folder {image_dir}"
        gallery, report = build_from_folder(image_dir, out_dir, embed,
                                            entry["sha256"], limit=limit, index_kind=index_kind,
                                            work=artifacts / f"{base}.build",
                                            meta={"source": source},
                                            shard_map=shards(model) if shards else None)
        labels = gallery.labels
    else:
        test = load_fashion_mnist("test")
        images, labels, names = list(test.images), test.labels, list(test.class_names)
        source = "Fashion-MNIST test split"
        ids = [f"fashion-mnist-test#{i}" for i in range(len(images))]
        if limit:
            images, labels, ids = images[:limit], labels[:limit], ids[:limit]
        bar = tqdm(total=len(images), desc="embedding gallery", leave=False)

        def progress(done: int, total: int) -> None:
            bar.update(done - bar.n)

        gallery = GalleryIndex.build(embed, images, labels, names, encoder_hash=entry["sha256"],
                                     progress=progress, meta={"source": source}, ids=ids,
                                     index_kind=index_kind)
        bar.close()
        gallery.save(out_dir)
    p_at_k = (gallery.precision_at_k(k_eval, max_queries=10_000)
              if (labels >= 0).sum() >= 2 else None)
    entry["gallery"] = {"source": source, "count": len(gallery), f"precision_at_{k_eval}": p_at_k,
                        "dir": rel, "index": gallery.spec.kind}
    print(f"[export] gallery of {run}: {len(gallery)} images from {source} ({gallery.spec.kind} index), "
          f"precision@{k_eval} = {p_at_k if p_at_k is None else round(p_at_k, 4)} "
          f"({time.time() - t0:.0f} s)", flush=True)
    return gallery
