"""Build the retrieval gallery with the exported DCL encoder (onnxruntime)."""
from __future__ import annotations

import time
from pathlib import Path

from tqdm.auto import tqdm

from app.engine import OnnxModel
from models.gallery import GalleryIndex, read_image_folder
from models.manifest import read_manifest, update_manifest
from training.data.fashion_mnist import load_fashion_mnist

GALLERY_DIR = "gallery"


def build_gallery(artifacts: Path, image_dir: str | None = None, k_eval: int = 10,
                  limit: int | None = None) -> GalleryIndex:
    """Embed the gallery (Fashion-MNIST test by default, or ``image_dir``) and save it.

    The index stores the DCL ONNX file's sha256 as its encoder hash, so a gallery built by
    one encoder refuses queries from another. Precision@k of the gallery against its own
    labels (leave-one-out) is recorded in the manifest's DCL entry. ``limit`` keeps the
    first N images (quick builds).
    """
    manifest = read_manifest(artifacts)
    entry = manifest["models"]["dcl"]
    model = OnnxModel("dcl", entry, artifacts)
    if image_dir:
        images, labels, names, _ = read_image_folder(image_dir)
        source = f"image folder {image_dir}"
    else:
        test = load_fashion_mnist("test")
        images, labels, names = list(test.images), test.labels, list(test.class_names)
        source = "Fashion-MNIST test split"
    if limit:
        images, labels = images[:limit], labels[:limit]
    bar = tqdm(total=len(images), desc="embedding gallery", leave=False)

    def embed(batch):
        return model.run({"image": model.prepare(batch)})["embedding"]

    def progress(done: int, total: int) -> None:
        bar.update(done - bar.n)

    t0 = time.time()
    gallery = GalleryIndex.build(embed, images, labels, names, encoder_hash=entry["sha256"],
                                 progress=progress, meta={"source": source})
    bar.close()
    gallery.save(artifacts / GALLERY_DIR)
    p_at_k = gallery.precision_at_k(k_eval) if (labels >= 0).any() else None
    entry = dict(entry)
    entry["gallery"] = {"source": source, "count": len(gallery), f"precision_at_{k_eval}": p_at_k,
                        "dir": GALLERY_DIR}
    update_manifest(artifacts, "dcl", entry)
    print(f"[export] gallery: {len(gallery)} images from {source}, precision@{k_eval} = "
          f"{p_at_k if p_at_k is None else round(p_at_k, 4)} ({time.time() - t0:.0f} s)", flush=True)
    return gallery
