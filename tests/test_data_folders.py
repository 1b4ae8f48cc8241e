"""ImageFolder / list-file / CIFAR readers on tiny fixtures written in the real layouts."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
from PIL import Image

from training.data.fashion_mnist import DatasetNotFoundError
from training.data.folders import (load_cifar, load_cifar_pickle, load_folder_splits,
                                   read_class_counts, scan_image_folder)


def _png(path, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((6, 5, 3), value, dtype=np.uint8)).save(path)


def _tree(root, spec):
    for split, classes in spec.items():
        for cls, n in classes.items():
            for i in range(n):
                _png(root / split / cls / f"{i}.png", 10 * i)


def test_image_folder_tree_and_count_file(tmp_path):
    _tree(tmp_path, {"train": {"owl": 3, "cat": 2}, "val": {"owl": 1, "cat": 1}})
    (tmp_path / "train" / "cat" / "notes.txt").write_text("not an image")
    s = load_folder_splits(tmp_path)
    assert s.train.class_names == ("cat", "owl")
    assert s.train.labels.tolist() == [0, 0, 1, 1, 1]
    assert all("/cat/" in p for p in s.train.paths[:2])
    assert s.class_counts == [2, 3] and s.counts_source == "counted"
    assert s.eval.labels.tolist() == [0, 1]
    assert np.asarray(s.train.load(2)).shape == (6, 5, 3)
    (tmp_path / "class_counts.json").write_text('{"owl": 300, "cat": 7}')
    s2 = load_folder_splits(tmp_path)
    assert s2.class_counts == [7, 300] and s2.counts_source == "class_counts.json"


def test_text_count_file_and_missing_class(tmp_path):
    f = tmp_path / "class_counts.csv"
    f.write_text("class,count\nsnowy owl,12\ncat,3\n")
    assert read_class_counts(f) == {"snowy owl": 12, "cat": 3}
    g = tmp_path / "class_counts.txt"
    g.write_text("snowy owl 12\ncat 3\n")
    assert read_class_counts(g) == {"snowy owl": 12, "cat": 3}
    _tree(tmp_path, {"train": {"cat": 1, "dog": 1}, "test": {"cat": 1, "dog": 1}})
    (tmp_path / "class_counts.txt").write_text("cat 5\n")
    with pytest.raises(ValueError, match="dog"):
        load_folder_splits(tmp_path)


def test_list_files_inaturalist_style(tmp_path):
    for i in range(5):
        _png(tmp_path / "images" / f"{i}.png", i)
    (tmp_path / "train.txt").write_text("images/0.png 0\nimages/1.png 2\nimages/2.png 2\n"
                                        "images/4.png 1\n")
    (tmp_path / "val.txt").write_text("images/3.png 1\n")
    s = load_folder_splits(tmp_path)
    assert s.train.labels.tolist() == [0, 2, 2, 1] and len(s.train.class_names) == 3
    assert s.train.paths[1].endswith("images/1.png")
    assert s.class_counts == [1, 1, 2]
    assert s.eval.labels.tolist() == [1]
    (tmp_path / "class_counts.txt").write_text("0 500\n1 50\n2 5\n")  # counts by class id
    assert load_folder_splits(tmp_path).class_counts == [500, 50, 5]
    (tmp_path / "class_counts.txt").unlink()
    # a class id with no training image is reported, not silently given N_j = 0
    (tmp_path / "train.txt").write_text("images/0.png 0\nimages/1.png 2\n")
    with pytest.raises(ValueError, match="classes without training images: class_1"):
        load_folder_splits(tmp_path)


def test_bad_folders_give_clear_errors(tmp_path):
    with pytest.raises(DatasetNotFoundError):
        load_folder_splits(tmp_path / "nope")
    with pytest.raises(DatasetNotFoundError, match="neither"):
        load_folder_splits(tmp_path)
    _tree(tmp_path, {"train": {"a": 1}})
    with pytest.raises(DatasetNotFoundError, match="val"):
        load_folder_splits(tmp_path)
    with pytest.raises(ValueError, match="not in the training set"):
        _tree(tmp_path, {"val": {"zzz": 1}})
        scan_image_folder(tmp_path / "val", class_names=("a",))


# --- CIFAR ---------------------------------------------------------------------------------
def _cifar_images(n, seed):
    """(N, 3072) rows: R plane, G plane, B plane, as the CIFAR files store them."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)


def _dump(path, obj):
    with open(path, "wb") as fh:
        pickle.dump(obj, fh, protocol=2)


def _write_cifar10(root):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse",
             b"ship", b"truck"]
    _dump(folder / "batches.meta", {b"num_cases_per_batch": 4, b"label_names": names,
                                    b"num_vis": 3072})
    rows = {}
    for i in range(1, 6):
        data = _cifar_images(4, i)
        labels = [(i + k) % 10 for k in range(4)]
        rows[i] = (data, labels)
        _dump(folder / f"data_batch_{i}", {b"batch_label": f"training batch {i} of 5".encode(),
                                           b"labels": labels, b"data": data,
                                           b"filenames": [b"x.png"] * 4})
    test = _cifar_images(3, 99)
    _dump(folder / "test_batch", {b"batch_label": b"testing batch 1 of 1", b"labels": [7, 8, 9],
                                  b"data": test, b"filenames": [b"t.png"] * 3})
    return rows, test


def test_cifar10_layout(tmp_path):
    rows, test = _write_cifar10(tmp_path)
    tr = load_cifar(tmp_path, "train")
    assert tr.images.shape == (20, 32, 32, 3) and tr.images.dtype == np.uint8
    assert tr.class_names[0] == "airplane" and len(tr.class_names) == 10
    assert tr.labels.tolist() == [lab for i in range(1, 6) for lab in rows[i][1]]
    data = rows[1][0]
    # pixel (row 2, col 5) of image 0: R at 2*32+5, G at 1024 + that, B at 2048 + that
    assert tr.images[0, 2, 5].tolist() == [data[0, 69], data[0, 1024 + 69], data[0, 2048 + 69]]
    te = load_cifar(tmp_path / "cifar-10-batches-py", "test")  # the folder itself works too
    assert te.labels.tolist() == [7, 8, 9] and np.array_equal(
        te.images[2].transpose(2, 0, 1).reshape(-1), test[2])


def test_cifar100_layout(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    fine = [f"fine{i}".encode() for i in range(100)]
    coarse = [f"coarse{i}".encode() for i in range(20)]
    _dump(folder / "meta", {b"fine_label_names": fine, b"coarse_label_names": coarse})
    for split, n in (("train", 5), ("test", 2)):
        _dump(folder / split, {b"filenames": [b"a.png"] * n, b"batch_label": split.encode(),
                               b"fine_labels": list(range(n)), b"coarse_labels": [1] * n,
                               b"data": _cifar_images(n, n)})
    tr = load_cifar(tmp_path, "train")
    assert tr.images.shape == (5, 32, 32, 3) and tr.labels.tolist() == [0, 1, 2, 3, 4]
    assert tr.class_names[3] == "fine3" and len(tr.class_names) == 100
    co = load_cifar(tmp_path, "test", label_kind="coarse")
    assert co.labels.tolist() == [1, 1] and len(co.class_names) == 20


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_restricted_unpickler_refuses_code(tmp_path, capsys):
    path = tmp_path / "data_batch_1"
    _dump(path, {b"data": _Evil(), b"labels": [0]})
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        load_cifar_pickle(path)
    assert "must never run" not in capsys.readouterr().out
    _dump(path, {b"data": np.zeros(3, dtype=object), b"labels": [0]})
    with pytest.raises(pickle.UnpicklingError):
        load_cifar_pickle(path)


def test_missing_cifar_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="cifar"):
        load_cifar(tmp_path, "train")
