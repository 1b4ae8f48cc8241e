"""The shared data sources of a user's images (training/data/), each on a fixture written in
its exact on-disk format: ImageFolder trees (with train/ val/ test/ or one tree split by a
seed), files in every mode (gray, RGB, RGBA, palette, 16-bit) and unreadable ones, a folder
of unlabelled images (nested or flat), a bag manifest CSV, and format detection."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from runtime.preprocess import PreprocessSpec, to_uint8
from training.data.bag_manifest import label_word, read_bag_manifest, split_bags
from training.data.fashion_mnist import DatasetNotFoundError, write_idx
from training.data.folders import load_image_folder, scan_image_folder, split_by_seed
from training.data.images import data_channels, decode_files, user_spec
from training.data.shapes import write_shapes_folder
from training.data.sources import detect_format
from training.data.unlabeled import scan_unlabeled_folder


def test_one_tree_split_by_seed_skips_unreadable_files_with_a_count(tmp_path, capsys):
    bad = write_shapes_folder(tmp_path, per_class=10, layout="tree", odd_files=True)
    s = load_image_folder(tmp_path, 0.2, 0.2, seed=3)
    log = capsys.readouterr().out
    assert "skipped 1 unreadable file(s): odd_corrupt.png" in log   # header check at the scan
    assert [p.split("/")[-1] for p in s.skipped] == ["odd_corrupt.png"]
    assert s.train.class_names == ("circle", "square", "triangle")
    # circle: 10 + 6 readable odd files (the truncated JPEG passes the header check)
    assert [len(d) for d in (s.train, s.val, s.test)] == [10 + 6 + 6, 3 + 2 + 2, 3 + 2 + 2]
    every = sorted(s.train.paths + s.val.paths + s.test.paths)
    assert len(set(every)) == len(every) == 36                       # disjoint, complete
    for d in (s.val, s.test):                                        # stratified
        assert np.bincount(d.labels, minlength=3).min() >= 2
    again = load_image_folder(tmp_path, 0.2, 0.2, seed=3)
    assert again.test.paths == s.test.paths                          # same seed, same split
    assert load_image_folder(tmp_path, 0.2, 0.2, seed=4).test.paths != s.test.paths
    # decoding finds the truncated JPEG: left out, logged, no crash
    spec = user_spec(32, data_channels(s.train.paths), None, None)
    pools = [decode_files(d, spec, "split") for d in (s.train, s.val, s.test)]
    assert spec.channels == 3 and all(p.data.images.shape[1:] == (32, 32, 3) for p in pools)
    assert sum(len(p.data.images) for p in pools) == 35
    assert [f.split("/")[-1] for p in pools for f in p.skipped] == ["odd_truncated.jpg"]
    assert "skipped 1 unreadable file(s): odd_truncated.jpg" in capsys.readouterr().out
    assert sorted(b.split("/")[-1] for b in bad) == ["odd_corrupt.png", "odd_truncated.jpg"]


def test_train_val_test_trees_are_used_as_given(tmp_path):
    write_shapes_folder(tmp_path, per_class=10, layout="splits")
    s = load_image_folder(tmp_path, 0.5, 0.5, seed=0)   # fractions unused: the trees exist
    assert s.layout == "train/ val/ test/"
    assert [len(d) for d in (s.train, s.val, s.test)] == [18, 6, 6]
    assert all("/test/" in p for p in s.test.paths)
    (tmp_path / "val").rename(tmp_path / "held")      # train/ + test/: val drawn from train/
    s = load_image_folder(tmp_path, 0.25, 0.0, seed=0)
    assert len(s.val) == 6 and len(s.train) == 12 and all("/train/" in p for p in s.val.paths)
    (tmp_path / "test" / "square").rename(tmp_path / "test" / "hexagon")
    with pytest.raises(ValueError, match="not in the training set: hexagon"):
        load_image_folder(tmp_path, 0.25, 0.0, seed=0)
    with pytest.raises(ValueError, match="fractions"):
        split_by_seed(scan_image_folder(tmp_path / "train"), (0.6, 0.5), 0)


def test_every_image_mode_decodes_to_the_models_channels(tmp_path):
    rgb = np.zeros((20, 24, 3), np.uint8)
    rgb[:, :12] = (200, 30, 30)
    ramp = np.tile(np.linspace(0, 65535, 24).astype(np.uint16), (20, 1))
    files = {"rgb.png": Image.fromarray(rgb), "gray.png": Image.fromarray(rgb).convert("L"),
             "rgba.png": Image.fromarray(np.dstack([rgb, np.full((20, 24), 255, np.uint8)])),
             "pal.gif": Image.fromarray(rgb).convert("P", palette=Image.ADAPTIVE),
             "deep.png": Image.fromarray(ramp)}
    for name, im in files.items():
        im.save(tmp_path / name)
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    spec = PreprocessSpec(size=(10, 12), channels=1, mean=(0.5,), std=(0.5,))
    deep = to_uint8(Image.open(tmp_path / "deep.png"), spec)
    # 16-bit: the range is stretched to 0..255 (Pillow's own convert clips it at 255)
    assert deep.shape == (10, 12) and deep[:, 0].max() < 20 and deep[:, -1].min() > 235
    assert deep.mean() == pytest.approx(127.5, abs=12)
    colour = PreprocessSpec(size=(10, 12), channels=3, mean=(0.5,) * 3, std=(0.5,) * 3)
    for name in files:
        a = to_uint8(Image.open(tmp_path / name), colour)
        assert a.shape == (10, 12, 3) and a.dtype == np.uint8
    for name in ("rgb.png", "rgba.png", "pal.gif"):   # the red half stays red
        a = to_uint8(Image.open(tmp_path / name), colour)
        assert (a[:, 2, 0] > 150).all() and (a[:, 2, 1] < 80).all()
    # channels from the files: all gray -> 1, any colour -> 3
    assert data_channels([tmp_path / "gray.png", tmp_path / "deep.png"]) == 1
    assert data_channels([tmp_path / "gray.png", tmp_path / "pal.gif"]) == 3
    assert user_spec(64, 1, None, None).mean == (0.449,)
    with pytest.raises(ValueError, match="3 value"):
        user_spec(64, 3, [0.5], None)


def test_unlabelled_folder_nested_or_flat(tmp_path):
    for rel in ("a.png", "trip/day1/b.png", "trip/c.jpg", "cats/d.png", ".hidden/e.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((8, 8, 3), 9, np.uint8)).save(tmp_path / rel)
    (tmp_path / "trip" / "broken.png").write_bytes(b"nope")
    d = scan_unlabeled_folder(tmp_path)
    assert [p.split(str(tmp_path) + "/")[1] for p in d.paths] == [
        "a.png", "cats/d.png", "trip/c.jpg", "trip/day1/b.png"]
    assert d.class_names == ("cats", "trip") and d.labels.tolist() == [-1, 0, 1, 1]
    assert len(d.skipped) == 1
    flat = scan_unlabeled_folder(tmp_path / "trip" / "day1")
    assert flat.class_names == () and flat.labels.tolist() == [-1]
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetNotFoundError, match="no readable images"):
        scan_unlabeled_folder(tmp_path / "empty")


def _png(path, value=100):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(path)


def test_bag_manifest_csv(tmp_path, capsys):
    for i in range(6):
        _png(tmp_path / "img" / f"{i}.png", 20 * i)
    (tmp_path / "img" / "bad.png").write_bytes(b"broken")
    (tmp_path / "bags.csv").write_text(
        "bag_id,path,labels\n"
        "beach,img/0.png,sea;Sky\n"
        "beach,img/1.png,\n"               # labels on one row are the bag's
        "city,img/2.png,tall_building\n"
        "city,img/3.png,tall_building\n"
        "empty,img/4.png,\n"               # a bag with none of the words
        "gone,img/bad.png,sea\n"           # its only image is unreadable: dropped
        f"abs,{tmp_path / 'img' / '5.png'},sky\n")
    m = read_bag_manifest(tmp_path / "bags.csv")
    assert m.words == ("sea", "sky", "tall building")       # underscores read as spaces
    assert m.bag_ids == ["beach", "city", "empty", "abs"] and m.dropped_bags == ("gone",)
    assert m.labels == [(0, 1), (2,), (), (1,)] and [len(x) for x in m.members] == [2, 2, 1, 1]
    assert len(m.paths) == 6 and len(m.skipped) == 1
    assert "dropped 1 bag(s) with no readable image: gone" in capsys.readouterr().out
    parts = split_bags(m, 0.25, 0.25, seed=0)
    assert sorted(np.concatenate(list(parts.values())).tolist()) == [0, 1, 2, 3]
    assert len(parts["test"]) == 1 and len(parts["val"]) == 1
    (tmp_path / "split.csv").write_text("bag_id,path,labels,split\na,img/0.png,sea,train\n"
                                        "b,img/1.png,sky,test\nb,img/2.png,,test\n")
    p = split_bags(read_bag_manifest(tmp_path / "split.csv"), 0.5, 0.5, 0)
    assert p["train"].tolist() == [0] and p["test"].tolist() == [1] and len(p["val"]) == 0
    (tmp_path / "nohead.csv").write_text("a,img/0.png,sea\n")
    with pytest.raises(ValueError, match="missing bag_id, path, labels"):
        read_bag_manifest(tmp_path / "nohead.csv")
    (tmp_path / "badsplit.csv").write_text("bag_id,path,labels,split\na,img/0.png,sea,dev\n")
    with pytest.raises(ValueError, match="split must be one of"):
        read_bag_manifest(tmp_path / "badsplit.csv")
    assert label_word(" Ankle-boot_x ") == "ankle boot x"


def test_format_detection(tmp_path):
    write_shapes_folder(tmp_path / "tree", per_class=2, layout="tree")
    write_shapes_folder(tmp_path / "splits", per_class=5, layout="splits")
    _png(tmp_path / "flat" / "x.png")
    idx = tmp_path / "idx"
    idx.mkdir()
    for name in ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte"):
        write_idx(idx / name, np.zeros((2, 28, 28), np.uint8))
    for name in ("train-labels-idx1-ubyte", "t10k-labels-idx1-ubyte"):
        write_idx(idx / name, np.zeros(2, np.uint8))
    (tmp_path / "bags.csv").write_text("bag_id,path,labels\n")
    assert detect_format(tmp_path / "tree") == "image_folder"
    assert detect_format(tmp_path / "splits") == "image_folder"
    assert detect_format(tmp_path / "flat") == "unlabeled"
    assert detect_format(idx) == "idx"
    assert detect_format(tmp_path / "bags.csv") == "bag_csv"
    assert detect_format(tmp_path / "tree", ("idx", "unlabeled")) == "unlabeled"
    with pytest.raises(DatasetNotFoundError, match="bag_csv"):
        detect_format(tmp_path / "flat", ("bag_csv",))
    with pytest.raises(DatasetNotFoundError, match="not found"):
        detect_format(tmp_path / "nope")
