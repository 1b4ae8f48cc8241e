"""Fashion-MNIST IDX reader on fixtures written in the real on-disk format."""
from __future__ import annotations

import numpy as np
import pytest

from training.data.fashion_mnist import (CLASS_NAMES, DatasetNotFoundError, find_root,
                                         load_fashion_mnist, read_idx, write_idx)


def _fixture(folder, n_train=30, n_test=10, gz=True):
    rng = np.random.default_rng(0)
    sfx = ".gz" if gz else ""
    data = {}
    for split, n, stem in (("train", n_train, "train"), ("test", n_test, "t10k")):
        imgs = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) * 7 % 10).astype(np.uint8)
        imgs[:, 0, 0] = np.arange(n)  # a per-sample tag so order can be checked
        write_idx(folder / f"{stem}-images-idx3-ubyte{sfx}", imgs)
        write_idx(folder / f"{stem}-labels-idx1-ubyte{sfx}", labels)
        data[split] = (imgs, labels)
    return data


@pytest.mark.parametrize("gz", [True, False])
def test_reads_idx_exactly(tmp_path, gz):
    data = _fixture(tmp_path, gz=gz)
    for split in ("train", "test"):
        ds = load_fashion_mnist(split, root=tmp_path)
        imgs, labels = data[split]
        assert ds.images.dtype == np.uint8 and ds.images.shape == imgs.shape
        np.testing.assert_array_equal(ds.images, imgs)  # no drop, duplicate or reorder
        np.testing.assert_array_equal(ds.labels, labels)
    assert ds.class_names[9] == "ankle boot" and len(CLASS_NAMES) == 10


def test_bad_magic_and_truncated(tmp_path):
    (tmp_path / "x").write_bytes(b"\x01\x02\x08\x01\x00\x00\x00\x05abc")
    with pytest.raises(ValueError, match="magic"):
        read_idx(tmp_path / "x")
    write_idx(tmp_path / "y", np.zeros((4, 2), np.uint8))
    raw = (tmp_path / "y").read_bytes()
    (tmp_path / "y").write_bytes(raw[:-1])
    with pytest.raises(ValueError, match="expected"):
        read_idx(tmp_path / "y")


def test_missing_folder_gives_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("FASHION_MNIST_DIR", str(tmp_path / "nothing"))
    monkeypatch.setattr("training.data.fashion_mnist.DEBIAN_DIR", tmp_path / "none")
    monkeypatch.chdir(tmp_path)
    assert find_root() is None
    with pytest.raises(DatasetNotFoundError, match="dataset-fashion-mnist"):
        load_fashion_mnist("train")


def test_real_debian_files_when_installed():
    if find_root() is None:
        pytest.skip("Fashion-MNIST not installed")
    ds = load_fashion_mnist("test")
    assert ds.images.shape == (10000, 28, 28)
    assert np.bincount(ds.labels).tolist() == [1000] * 10
