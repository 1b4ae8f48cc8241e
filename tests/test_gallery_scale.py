"""Galleries at scale: index chosen by size, approximate recall, streamed resumable folder
builds, unreadable files counted, lazy cached thumbnails, format-1 galleries still load."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from PIL import Image

from runtime import ann
from runtime.gallery import GalleryError, GalleryIndex
from runtime.gallery_build import build_from_folder, list_images


def _settings(**index):
    s = copy.deepcopy(ann.load_settings())
    s["index"].update(index)
    s["build"].update(shard_size=16, batch_size=8)
    return s


def _clustered(n: int, dim: int = 32, clusters: int = 50, seed: int = 0) -> np.ndarray:
    """Unit vectors around ``clusters`` random centres. Shape: float32 (n, dim)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    x = centres[rng.integers(0, clusters, n)] + 0.2 * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_index_chosen_by_size():
    s = _settings(exact_below=1000)
    assert ann.choose(999, s).kind == "exact"
    spec = ann.choose(1000, s)
    assert spec.kind == "ivf" and spec.params["nlist"] == round(4 * 1000 ** 0.5)
    assert spec.params["train_size"] == 1000  # capped at N
    assert ann.choose(10_000, s).params["nprobe"] == s["index"]["ivf"]["nprobe"]
    assert ann.choose(5, s, kind="hnsw").kind == "hnsw"
    assert ann.choose(10 ** 6, _settings(approximate="hnsw")).kind == "hnsw"
    with pytest.raises(ann.IndexSettingsError, match="unknown index kind"):
        ann.choose(10, s, kind="lsh")
    # the shipped defaults: exact for the 10k Fashion-MNIST gallery, approximate for 10^6
    assert ann.choose(10_000).kind == "exact" and ann.choose(10 ** 6).kind != "exact"
    assert ann.IndexSpec.from_dict(None).kind == "exact"  # galleries from before the choice


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_recall_against_exact(kind):
    both = _clustered(6200)  # queries: held-out draws around the same centres
    x, q = both[:6000], both[6000:]
    spec = ann.choose(len(x), _settings(exact_below=1), kind)
    sample = x[ann.sample_rows(len(x), spec.params.get("train_size", 0), 0)]
    approx = ann.build(spec, x.shape[1], lambda: np.array_split(x, 4), sample)
    exact = ann.build(ann.IndexSpec("exact"), x.shape[1], lambda: [x])
    _, a = approx.search(q, 10)
    _, e = exact.search(q, 10)
    recall = np.mean([len(set(ai) & set(ei)) / 10 for ai, ei in zip(a, e)])
    assert recall >= 0.95, recall
    assert approx.ntotal == len(x)


def _folder(root, n_per_class=20):
    """Two labelled sub-folders of small distinct images, a loose image, 2 broken files."""
    rng = np.random.default_rng(0)
    for name in ("cats", "dogs"):
        (root / name).mkdir(parents=True)
        for j in range(n_per_class):
            size = (12, 10) if j % 3 else (40, 60)  # mixed shapes
            Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(
                root / name / f"{j:02d}.png")
    Image.fromarray(rng.integers(0, 255, (9, 9), dtype=np.uint8)).save(root / "loose.png")
    (root / "cats" / "broken.jpg").write_bytes(b"not an image")
    (root / "dogs" / "truncated.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    (root / ".hidden.png").write_bytes(b"ignored")
    (root / "notes.txt").write_text("not an image file")


class _Encoder:
    """A toy encoder (per-channel means, a few pixels), counting its calls; it can be told
    to die (as Ctrl-C would) at call ``die_at``."""

    def __init__(self, die_at: int | None = None) -> None:
        self.calls, self.images, self.die_at = 0, 0, die_at

    def __call__(self, batch):
        self.calls += 1
        if self.die_at is not None and self.calls == self.die_at:
            raise KeyboardInterrupt
        self.images += len(batch)
        out = []
        for im in batch:
            a = np.asarray(im, np.float32)
            a = np.repeat(a[..., None], 3, axis=2) if a.ndim == 2 else a
            out.append(np.concatenate([a.mean(axis=(0, 1)), a[:2, :2].reshape(-1)]) + 1.0)
        return np.asarray(out, np.float32)


def _same(a: GalleryIndex, b: GalleryIndex) -> None:
    assert a.ids == b.ids and a.digests == b.digests and a.label_names == b.label_names
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(ann.vectors(a.index, np.arange(len(a))),
                                  ann.vectors(b.index, np.arange(len(b))))
    q = ann.vectors(a.index, np.arange(5))
    for x, y in zip(a.index.search(q, 4), b.index.search(q, 4)):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("kind", ["exact", "ivf"])
def test_interrupted_build_resumes_to_the_same_gallery(tmp_path, kind):
    _folder(tmp_path / "photos")
    s = _settings(exact_below=10 ** 6, ivf={**ann.load_settings()["index"]["ivf"],
                                            "lists_per_sqrt_n": 1, "nprobe": 4})
    kw = dict(settings=s, index_kind=kind, show_progress=False, log=lambda m: None)
    whole, rep = build_from_folder(tmp_path / "photos", tmp_path / "g_whole", _Encoder(), "enc", **kw)
    assert rep.shards_total == 3 and rep.shards_resumed == 0  # 43 files, 16 per shard

    dying = _Encoder(die_at=4)  # shard 0 (2 calls) and shard 1 (2 calls): dies in shard 1
    with pytest.raises(KeyboardInterrupt):
        build_from_folder(tmp_path / "photos", tmp_path / "g", dying, "enc", **kw)
    assert not (tmp_path / "g").exists()
    assert sorted(p.name for p in (tmp_path / "g.build").glob("shard_*.npz")) == ["shard_000000.npz"]
    again = _Encoder()
    resumed, rep2 = build_from_folder(tmp_path / "photos", tmp_path / "g", again, "enc", **kw)
    assert rep2.shards_resumed == 1 and again.images == len(whole) - 16  # shard 0 not redone
    assert not (tmp_path / "g.build").exists()  # shards removed once the gallery is saved
    assert resumed.spec.kind == kind
    _same(resumed, whole)
    _same(GalleryIndex.load(tmp_path / "g"), whole)
    # another encoder hash does not reuse the shards of an unfinished build
    with pytest.raises(KeyboardInterrupt):
        build_from_folder(tmp_path / "photos", tmp_path / "g2", _Encoder(die_at=3), "enc", **kw)
    other = _Encoder()
    _, rep3 = build_from_folder(tmp_path / "photos", tmp_path / "g2", other, "enc-B", **kw)
    assert rep3.shards_resumed == 0 and other.images == len(whole)


def test_folder_build_skips_unreadable_files_with_a_count(tmp_path):
    _folder(tmp_path / "photos")
    assert len(list_images(tmp_path / "photos")) == 43  # 41 images + 2 broken; no .txt, no hidden
    lines = []
    g, rep = build_from_folder(tmp_path / "photos", tmp_path / "g", _Encoder(), "enc",
                               settings=_settings(), show_progress=False, log=lines.append)
    assert len(g) == 41 and len(rep.skipped) == 2
    assert {p for p, _ in rep.skipped} == {"cats/broken.jpg", "dogs/truncated.png"}
    assert any("skipped 2 unreadable" in m for m in lines)
    meta = json.loads((tmp_path / "g" / "meta.json").read_text())
    assert meta["skipped"] == 2 and meta["index"]["kind"] == "exact" and meta["thumbnails"] == "lazy"
    assert g.label_names == ["cats", "dogs"] and g.labels[g.ids.index("loose.png")] == -1
    assert g.labels[g.ids.index("dogs/05.png")] == 1
    with pytest.raises(GalleryError, match="max_images"):
        build_from_folder(tmp_path / "photos", tmp_path / "g3", _Encoder(), "enc",
                          settings={**_settings(), "build": {**_settings()["build"], "max_images": 10}},
                          show_progress=False, log=lines.append)
    (tmp_path / "empty").mkdir()
    with pytest.raises(GalleryError, match="no readable images"):
        build_from_folder(tmp_path / "empty", tmp_path / "g4", _Encoder(), "enc",
                          settings=_settings(), show_progress=False)


def test_lazy_thumbnails_made_on_first_use_and_cached(tmp_path):
    _folder(tmp_path / "photos")
    build_from_folder(tmp_path / "photos", tmp_path / "g", _Encoder(), "enc", settings=_settings(),
                      show_progress=False, log=lambda m: None)
    assert not (tmp_path / "g" / "thumbs.npy").exists() and not (tmp_path / "g" / "thumbs").exists()
    g = GalleryIndex.load(tmp_path / "g")
    i = g.ids.index("cats/00.png")  # a 40 x 60 image: small enough, kept as it is
    t = g.thumbnail(i)
    assert t.shape == (40, 60, 3) and t.dtype == np.uint8
    np.testing.assert_array_equal(t, np.asarray(Image.open(tmp_path / "photos" / "cats" / "00.png")))
    assert len(list((tmp_path / "g" / "thumbs").rglob("*.png"))) == 1  # only what was asked
    with pytest.raises(GalleryError, match="thumbnail"):
        g.thumbnails  # nothing stored
    # the cache serves it once the original is gone; an uncached missing file gives None
    (tmp_path / "photos" / "cats" / "00.png").unlink()
    (tmp_path / "photos" / "cats" / "01.png").unlink()
    h = GalleryIndex.load(tmp_path / "g")
    np.testing.assert_array_equal(h.thumbnail(i), t)
    assert h.thumbnail(h.ids.index("cats/01.png")) is None
    # the folder moved: image_root points the gallery at its new place
    (tmp_path / "photos").rename(tmp_path / "moved")
    Image.fromarray(np.zeros((300, 150, 3), np.uint8)).save(tmp_path / "moved" / "dogs" / "03.png")
    m = GalleryIndex.load(tmp_path / "g", image_root=tmp_path / "moved")
    assert m.thumbnail(m.ids.index("dogs/03.png")).shape == (64, 32, 3)  # large: reduced


def test_format_1_gallery_still_loads(tmp_path):
    ims = [np.full((8, 8), v, np.uint8) for v in (10, 200, 90)]
    g = GalleryIndex.build(lambda b: np.stack([[im.mean() + 1, 1.0] for im in b]), ims,
                           [0, 1, 0], ["a", "b"], "enc")
    assert g.spec.kind == "exact"
    g.save(tmp_path / "g")
    meta = json.loads((tmp_path / "g" / "meta.json").read_text())
    for key in ("index", "thumbnails"):
        meta.pop(key)
    meta["format"] = 1
    (tmp_path / "g" / "meta.json").write_text(json.dumps(meta))
    old = GalleryIndex.load(tmp_path / "g")
    assert old.spec.kind == "exact" and old.thumbnail(1).shape == (8, 8)
    meta["format"] = 99
    (tmp_path / "g" / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(GalleryError, match="format 99"):
        GalleryIndex.load(tmp_path / "g")


def test_missing_file_tile_in_the_retrieval_service():
    from app.services.retrieval import missing_tile

    t = missing_tile(64)
    assert t.shape == (64, 64) and t.dtype == np.uint8 and t[0, 0] == 40 and t[0, 1] == 128


@pytest.mark.slow
def test_folder_gallery_served_by_the_retrieval_tab(smoke_artifacts, tmp_path):
    """A folder gallery built with the exported encoder answers the Retrieval service:
    lazy thumbnails as tiles, the query found as a gallery item, a deleted file flagged."""
    import shutil

    from app.services import retrieval as retrieval_svc
    from export.methods.dcl.assets import build_gallery
    from runtime.engine import Engine
    from training.data.fashion_mnist import load_fashion_mnist

    art = tmp_path / "art"
    art.mkdir()
    shutil.copytree(smoke_artifacts / "onnx", art / "onnx")
    shutil.copy(smoke_artifacts / "manifest.json", art / "manifest.json")
    test = load_fashion_mnist("test")
    photos = tmp_path / "photos"
    for i in range(40):
        d = photos / test.class_names[int(test.labels[i])].replace(" ", "_")
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(test.images[i]).save(d / f"{i:03d}.png")
    g = build_gallery(art, str(photos))
    assert len(g) == 40 and g.lazy_thumbnails and g.spec.kind == "exact"
    query = next(photos.rglob("*.png"))
    res = retrieval_svc.neighbours(Engine(art), str(query), k=5)
    r = res.report
    assert r["query_in_gallery"] and r["query_gallery_id"] == query.relative_to(photos).as_posix()
    assert len(r["neighbours"]) == 5 and all(t.shape == (28, 28) for t, _ in res.tiles)
    assert len(list((art / "gallery" / "thumbs").rglob("*.png"))) == 5  # made now, cached
    retrieval_svc._load_gallery.cache_clear()
    gone = photos / r["neighbours"][0]["id"]
    shutil.rmtree(art / "gallery" / "thumbs")
    gone.unlink()
    res2 = retrieval_svc.neighbours(Engine(art), str(query), k=5)
    assert res2.report["neighbours"][0]["missing"] is True and "file missing" in res2.tiles[0][1]
    retrieval_svc._load_gallery.cache_clear()
