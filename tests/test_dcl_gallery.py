"""Retrieval gallery: build, query, encoder refusal, precision@k, atomic save, image folders."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from runtime import gallery as gallery_mod
from runtime.gallery import (EncoderMismatchError, GalleryError, GalleryIndex, make_thumbnails,
                            read_image_folder)


def _embed(images):
    """A deterministic toy encoder: the mean intensity of the top and bottom halves."""
    out = []
    for im in images:
        a = np.asarray(im, np.float32)
        a = a.mean(axis=2) if a.ndim == 3 else a
        out.append([a[: a.shape[0] // 2].mean() + 1.0, a[a.shape[0] // 2 :].mean() + 1.0])
    return np.asarray(out, np.float32)


def _images():
    """Class 0 bright on top, class 1 bright at the bottom; 3 each (8x8 gray)."""
    ims, labels = [], []
    for c in (0, 1):
        for j in range(3):
            im = np.zeros((8, 8), np.uint8)
            (im[:4] if c == 0 else im[4:])[:] = 200 + 10 * j
            ims.append(im)
            labels.append(c)
    return ims, np.array(labels)


def test_build_query_and_labels():
    ims, labels = _images()
    g = GalleryIndex.build(_embed, ims, labels, ["top", "bottom"], "enc-A", batch_size=4)
    assert len(g) == 6 and g.dim == 2 and g.thumbnails.shape == (6, 8, 8)
    q = _embed([ims[0]])
    scores, idx, lab = g.query(q, k=3, encoder_hash="enc-A")
    assert scores.shape == idx.shape == lab.shape == (1, 3)
    assert list(lab[0]) == [0, 0, 0] and scores[0, 0] == pytest.approx(1.0, abs=1e-5)
    assert np.all(np.diff(scores[0]) <= 1e-7)
    # cosine: hand-check one score. q ~ (201, 1) normalised vs bottom item (1, 201)
    s, i, _ = g.query(q, k=6, encoder_hash="enc-A")
    e = _embed([ims[3]])[0]
    ref = float(q[0] @ e / np.linalg.norm(q[0]) / np.linalg.norm(e))
    assert s[0][list(i[0]).index(3)] == pytest.approx(ref, abs=1e-5)
    # k above the gallery size is capped
    assert g.query(q, k=100, encoder_hash="enc-A")[0].shape == (1, 6)


def test_refuses_other_encoder_and_bad_queries():
    ims, labels = _images()
    g = GalleryIndex.build(_embed, ims, labels, ["top", "bottom"], "enc-A")
    with pytest.raises(EncoderMismatchError, match="rebuild"):
        g.query(_embed([ims[0]]), k=2, encoder_hash="enc-B")
    with pytest.raises(GalleryError, match=r"\(Q, 2\)"):
        g.query(np.ones((1, 3), np.float32), k=2, encoder_hash="enc-A")
    with pytest.raises(GalleryError, match="NaN"):
        g.query(np.array([[np.nan, 1.0]], np.float32), k=2, encoder_hash="enc-A")


def test_precision_at_k_hand_worked():
    ims, labels = _images()
    g = GalleryIndex.build(_embed, ims, labels, ["top", "bottom"], "enc-A")
    # each item's 2 other same-class items are its 2 nearest -> P@2 = 1; at k=3 one of
    # the 3 neighbours is from the other class -> P@3 = 2/3
    assert g.precision_at_k(2) == pytest.approx(1.0)
    assert g.precision_at_k(3) == pytest.approx(2 / 3)
    g2 = GalleryIndex.build(_embed, ims, labels[[0, 3, 1, 4, 2, 5]], ["a", "b"], "x")
    assert g2.precision_at_k(2) < 0.5


def test_save_load_roundtrip_and_atomic_replace(tmp_path, monkeypatch):
    ims, labels = _images()
    g = GalleryIndex.build(_embed, ims, labels, ["top", "bottom"], "enc-A",
                           meta={"source": "toy"})
    g.save(tmp_path / "gal")
    h = GalleryIndex.load(tmp_path / "gal")
    assert h.encoder_hash == "enc-A" and h.label_names == ["top", "bottom"]
    assert h.meta["source"] == "toy"
    np.testing.assert_array_equal(h.labels, labels)
    np.testing.assert_array_equal(h.thumbnails, g.thumbnails)
    q = _embed([ims[4]])
    for a, b in zip(g.query(q, 3, "enc-A"), h.query(q, 3, "enc-A")):
        np.testing.assert_allclose(a, b)

    # a save that dies half-way leaves the old gallery intact and no temp folder behind
    other = GalleryIndex.build(_embed, ims[:2], labels[:2], ["top", "bottom"], "enc-B")
    real_save = np.save

    def dying_save(path, arr, *a, **k):
        if str(path).endswith("thumbs.npy"):
            raise OSError("disk full")
        return real_save(path, arr, *a, **k)

    monkeypatch.setattr(gallery_mod.np, "save", dying_save)
    with pytest.raises(OSError):
        other.save(tmp_path / "gal")
    monkeypatch.undo()
    assert GalleryIndex.load(tmp_path / "gal").encoder_hash == "enc-A"
    assert [p.name for p in tmp_path.iterdir()] == ["gal"]
    # a good save replaces it
    other.save(tmp_path / "gal")
    assert len(GalleryIndex.load(tmp_path / "gal")) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["gal"]


def test_load_rejects_non_gallery(tmp_path):
    with pytest.raises(GalleryError, match="not a gallery"):
        GalleryIndex.load(tmp_path)


def test_read_image_folder_labels_from_subfolders(tmp_path):
    for name, val in (("cats", 10), ("dogs", 240)):
        (tmp_path / name).mkdir()
        for j in range(2):
            Image.fromarray(np.full((10, 12, 3), val + j, np.uint8)).save(tmp_path / name / f"{j}.png")
    (tmp_path / "dogs" / "broken.jpg").write_bytes(b"not an image")
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(tmp_path / "loose.png")
    images, labels, names, paths = read_image_folder(tmp_path)
    assert names == ["cats", "dogs"] and len(images) == 5
    assert sorted(labels.tolist()) == [-1, 0, 0, 1, 1]
    assert "dogs/broken.jpg" not in paths
    g = GalleryIndex.build(_embed, images, labels, names, "e")
    assert g.thumbnails.shape == (5, 64, 64, 3)  # mixed shapes -> letterboxed thumbnails
    assert 0.0 <= g.precision_at_k(1) <= 1.0
    (tmp_path / "empty").mkdir()
    with pytest.raises(GalleryError, match="no readable"):
        read_image_folder(tmp_path / "empty")


def test_thumbnails_keep_small_uniform_images():
    ims = [np.zeros((28, 28), np.uint8)] * 3
    assert make_thumbnails(ims).shape == (3, 28, 28)


def test_gallery_module_does_not_import_torch():
    code = "import sys, runtime.gallery; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_items_have_ids_and_a_query_is_found_by_its_pixels(tmp_path):
    from runtime.gallery import pixel_digest

    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 255, (8, 8), dtype=np.uint8) for _ in range(5)]
    g = GalleryIndex.build(lambda b: np.stack([im.reshape(-1)[:4].astype(np.float32) + 1
                                               for im in b]), imgs, [0, 1, 0, 1, 0], ["a", "b"],
                           encoder_hash="e", ids=[f"img{i}.png" for i in range(5)])
    assert pixel_digest(imgs[2]) == pixel_digest(np.repeat(imgs[2][..., None], 3, axis=2))
    assert pixel_digest(imgs[2]) != pixel_digest(imgs[3])
    back = GalleryIndex.load(g.save(tmp_path / "g"))
    assert back.ids == [f"img{i}.png" for i in range(5)]
    assert back.find(np.repeat(imgs[3][..., None], 3, axis=2)) == 3
    assert back.find(rng.integers(0, 255, (8, 8), dtype=np.uint8)) is None
