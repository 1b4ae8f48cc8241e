"""Benchmark vectors for the retrieval index: real DCL embeddings of augmented images.

    python -m scripts.index_vectors --artifacts DIR --n 1000000 [--cache DIR]

Each of Fashion-MNIST's 70,000 images (train + test) is augmented with the DCL training
augmentation (``aug`` of ``training/configs/dcl.yaml``: random resized crop, flip,
brightness/contrast jitter; one round per pass, seeded) and embedded by the exported DCL
encoder in onnxruntime, until ``n`` vectors exist. So the vectors are clustered the way a
real gallery is: 70,000 sources, each seen under many views, in the encoder's own
512-dimensional space. Queries are further views (another seed) of random sources.

The vectors are written l2-normalised, float32, to ``<cache>/<encoder sha[:12]>_<n>.npy``
(a memory map, written in chunks, renamed into place when complete), so a second run
reads them back.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

CACHE = Path(os.environ.get("TMPDIR", "/tmp")) / "replens_index_bench"


def _encoder(artifacts: Path):
    from runtime.engine import OnnxModel
    from runtime.manifest import read_manifest

    entry = read_manifest(artifacts)["models"]["dcl"]
    return OnnxModel("dcl", entry, artifacts)


def _views(images: np.ndarray, seed: int) -> np.ndarray:
    """One augmented view per image. Shape: uint8 (B, 28, 28) -> uint8 (B, 28, 28)."""
    import torch
    import yaml

    from training.data.ssl_aug import AugConfig, augment, uint8_to_unit

    cfg_path = Path(__file__).resolve().parents[1] / "training" / "configs" / "dcl.yaml"
    cfg = AugConfig.from_dict(yaml.safe_load(cfg_path.read_text())["aug"])
    gen = torch.Generator().manual_seed(seed)
    out = augment(uint8_to_unit(torch.from_numpy(images)), cfg, gen)
    return (out[:, 0].numpy() * 255 + 0.5).astype(np.uint8)


def _embed(model, images: np.ndarray, batch: int = 1024) -> np.ndarray:
    """l2-normalised embeddings. Shape: uint8 (B, 28, 28) -> float32 (B, D)."""
    parts = [model.run({"image": model.prepare(list(images[s:s + batch]))})["embedding"]
             for s in range(0, len(images), batch)]
    x = np.concatenate(parts).astype(np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _sources() -> np.ndarray:
    """Fashion-MNIST train + test images. Shape: uint8 (70000, 28, 28)."""
    from training.data.fashion_mnist import load_fashion_mnist

    return np.concatenate([load_fashion_mnist(s).images for s in ("train", "test")])


def gallery_vectors(artifacts: Path, n: int, cache: Path = CACHE, chunk: int = 10_000,
                    log=print) -> np.ndarray:
    """``n`` gallery vectors (read-only memory map). Shape: float32 (n, D), unit rows.

    Pass ``r`` (r = 0, 1, ...) augments every source image once with seed ``r``; vector
    ``i`` is view ``i // 70000`` of source ``i % 70000``.
    """
    model = _encoder(artifacts)
    path = cache / f"{model.entry['sha256'][:12]}_{n}.npy"
    if path.is_file():
        return np.load(path, mmap_mode="r")
    cache.mkdir(parents=True, exist_ok=True)
    src = _sources()
    tmp = path.with_suffix(".partial.npy")
    out = None
    t0 = time.time()
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        idx = np.arange(start, stop)
        rounds = idx // len(src)
        vecs = []
        for r in np.unique(rounds):
            sel = idx[rounds == r] % len(src)
            vecs.append(_embed(model, _views(src[sel], seed=int(r) * 7919 + start)))
        x = np.concatenate(vecs)
        if out is None:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, x.shape[1]))
        out[start:stop] = x
        if (stop // chunk) % 10 == 0 or stop == n:
            log(f"[vectors] {stop}/{n} ({time.time() - t0:.0f} s)")
    out.flush()
    del out
    os.replace(tmp, path)
    return np.load(path, mmap_mode="r")


def query_vectors(artifacts: Path, q: int, seed: int = 1_000_003) -> np.ndarray:
    """``q`` queries: fresh views (a seed no gallery pass uses) of random source images.
    Shape: float32 (q, D), unit rows."""
    src = _sources()
    pick = np.random.default_rng(seed).choice(len(src), size=q, replace=False)
    return _embed(_encoder(artifacts), _views(src[pick], seed=seed))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--artifacts", required=True, help="artifacts folder with an exported dcl model")
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--cache", type=Path, default=CACHE)
    args = p.parse_args(argv)
    x = gallery_vectors(Path(args.artifacts), args.n, args.cache)
    print(f"{x.shape} in {args.cache}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
