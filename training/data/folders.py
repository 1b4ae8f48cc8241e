"""Data a user brings: ImageFolder trees (iNaturalist, CUB, ...) and CIFAR-10/100.

ImageFolder layout (class = sub-folder, classes in sorted order)::

    DIR/train/<class>/*.jpg     DIR/val/<class>/*.jpg   (or DIR/test/; with both, test/
                                                         evaluates and val/ is held out
                                                         for the temperature fitted at export)
    DIR/class_counts.json       optional: {"<class>": N, ...}, or a text/CSV file
                                ``class_counts.txt`` / ``.csv`` with "<class>,N" lines

iNaturalist-style list files (as the long-tail literature ships iNaturalist 2018) are read
too: ``DIR/train.txt`` and ``DIR/val.txt`` (or ``test.txt``), one "relative/path label_id"
per line. The class-count file gives N_j for the adaptive matrix (else the training images
are counted).

CIFAR in its python-pickle layout: ``cifar-10-batches-py/{data_batch_1..5, test_batch,
batches.meta}`` and ``cifar-100-python/{train, test, meta}``. These pickles are read with a
restricted unpickler: only dict/list/bytes/str/int containers and numpy arrays rebuilt from
raw bytes by our own code (never numpy's or any other module's unpickling hooks); any other
global in the file is refused.
"""
from __future__ import annotations

import csv
import io
import json
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from training.data.fashion_mnist import ArrayDataset, DatasetNotFoundError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff",
                              ".ppm", ".pgm"})
COUNT_FILES = ("class_counts.json", "class_counts.txt", "class_counts.csv")
EVAL_SPLITS = ("val", "test")


@dataclass
class FileDataset:
    """Image files and their labels.

    Attributes:
        paths: image file paths (str).
        labels: int64 class ids. Shape: (N,).
        class_names: name of each class id.
    """

    paths: list[str]
    labels: np.ndarray
    class_names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, i: int) -> Image.Image:
        """Open image ``i`` (decoded, file closed)."""
        with Image.open(self.paths[i]) as im:
            im.load()
            return im.copy()

    def subset(self, indices: np.ndarray) -> "FileDataset":
        return FileDataset([self.paths[int(i)] for i in indices], self.labels[indices],
                           self.class_names)


def scan_image_folder(root: str | os.PathLike[str],
                      class_names: tuple[str, ...] | None = None) -> FileDataset:
    """Read a tree ``root/<class>/<image>``.

    Args:
        root: the folder whose sub-folders are classes.
        class_names: fix the class ids (e.g. the training classes for a validation tree);
            default: the sorted sub-folder names.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetNotFoundError(f"image folder not found: {root}")
    found = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    names = tuple(class_names) if class_names is not None else tuple(found)
    if not names:
        raise DatasetNotFoundError(f"{root} has no class sub-folders (expected {root}/<class>/*.jpg)")
    unknown = sorted(set(found) - set(names))
    if unknown:
        raise ValueError(f"{root} has classes not in the training set: {', '.join(unknown[:5])}")
    paths: list[str] = []
    labels: list[int] = []
    for idx, name in enumerate(names):
        folder = root / name
        if not folder.is_dir():
            continue
        for f in sorted(folder.rglob("*")):
            if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS:
                paths.append(str(f))
                labels.append(idx)
    if not paths:
        raise DatasetNotFoundError(f"{root} holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    return FileDataset(paths, np.asarray(labels, dtype=np.int64), names)


def read_list_file(root: str | os.PathLike[str], list_file: str | os.PathLike[str],
                   class_names: tuple[str, ...] | None = None) -> FileDataset:
    """Read an iNaturalist-style list file: one "relative/path label_id" per line.

    Class names default to "class_<id>" for ids 0..max id.
    """
    root, list_file = Path(root), Path(list_file)
    paths: list[str] = []
    labels: list[int] = []
    for n, line in enumerate(list_file.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise ValueError(f"{list_file}:{n}: expected 'path label_id', got {line!r}")
        paths.append(str(root / parts[0]))
        labels.append(int(parts[1]))
    if not paths:
        raise DatasetNotFoundError(f"{list_file} lists no images")
    arr = np.asarray(labels, dtype=np.int64)
    if arr.min() < 0:
        raise ValueError(f"{list_file}: negative label id")
    names = class_names or tuple(f"class_{i}" for i in range(int(arr.max()) + 1))
    if arr.max() >= len(names):
        raise ValueError(f"{list_file}: label {arr.max()} but only {len(names)} classes")
    return FileDataset(paths, arr, tuple(names))


def read_class_counts(path: str | os.PathLike[str]) -> dict[str, int]:
    """Read a class-count file: JSON ``{"name": N}`` or text/CSV lines "name,N" / "name N"."""
    path = Path(path)
    text = path.read_text()
    if path.suffix == ".json":
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a JSON object {{class: count}}")
        return {str(k): int(v) for k, v in data.items()}
    counts: dict[str, int] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if "," in line:
            row = next(csv.reader([line]))
        else:
            row = line.rsplit(maxsplit=1)
        if len(row) != 2 or not row[1].strip().isdigit():
            if n == 1:  # header
                continue
            raise ValueError(f"{path}:{n}: expected 'class,count', got {line!r}")
        counts[row[0].strip()] = int(row[1])
    return counts


def counts_for(class_names: tuple[str, ...], counts: dict[str, int],
               source: str = "class-count file") -> list[int]:
    """Class counts in class-id order; every class must be listed, by name or by id."""
    def key(i: int, name: str) -> str | None:
        return name if name in counts else str(i) if str(i) in counts else None

    missing = [c for i, c in enumerate(class_names) if key(i, c) is None]
    if missing:
        raise ValueError(f"{source} lacks counts for: {', '.join(missing[:5])}")
    return [int(counts[key(i, c)]) for i, c in enumerate(class_names)]  # type: ignore[index]


@dataclass
class FolderSplits:
    """Training and evaluation files of a user's folder, and N_j per class."""

    train: FileDataset
    eval: FileDataset
    class_counts: list[int]
    counts_source: str
    val: FileDataset | None = None  # val/ when test/ exists too (then test/ evaluates)


def load_folder_splits(root: str | os.PathLike[str]) -> FolderSplits:
    """Find the training and evaluation splits in ``root`` (see the module docstring)."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetNotFoundError(f"data folder not found: {root}")
    val: FileDataset | None = None
    if (root / "train").is_dir():
        train = scan_image_folder(root / "train")
        if not any((root / s).is_dir() for s in EVAL_SPLITS):
            raise DatasetNotFoundError(f"{root} has train/ but no val/ or test/ folder")
        if (root / "val").is_dir() and (root / "test").is_dir():
            # both: test/ measures the model, val/ is held out for what export fits
            # (the temperature), so the test metrics never see what was fitted on
            val = scan_image_folder(root / "val", class_names=train.class_names)
            evaluation = scan_image_folder(root / "test", class_names=train.class_names)
        else:
            ev_dir = next(root / s for s in EVAL_SPLITS if (root / s).is_dir())
            evaluation = scan_image_folder(ev_dir, class_names=train.class_names)
    elif (root / "train.txt").is_file():
        train = read_list_file(root, root / "train.txt")
        ev_file = next((root / f"{s}.txt" for s in EVAL_SPLITS if (root / f"{s}.txt").is_file()),
                       None)
        if ev_file is None:
            raise DatasetNotFoundError(f"{root} has train.txt but no val.txt or test.txt")
        evaluation = read_list_file(root, ev_file, class_names=train.class_names)
    else:
        raise DatasetNotFoundError(
            f"{root} is neither an ImageFolder tree (train/<class>/..., val/<class>/...) nor "
            f"an iNaturalist-style list (train.txt, val.txt)")
    count_file = next((root / f for f in COUNT_FILES if (root / f).is_file()), None)
    if count_file is not None:
        counts = counts_for(train.class_names, read_class_counts(count_file), str(count_file))
        source = str(count_file.name)
    else:
        counts = np.bincount(train.labels, minlength=len(train.class_names)).tolist()
        source = "counted"
    if min(counts) <= 0:
        empty = [n for n, c in zip(train.class_names, counts) if c <= 0]
        raise ValueError(f"classes without training images: {', '.join(empty[:5])}")
    return FolderSplits(train, evaluation, [int(c) for c in counts], source, val)


# --- CIFAR: restricted unpickling ----------------------------------------------------------
class _ArrayStub:
    """Stands in for numpy.ndarray while unpickling; keeps (shape, dtype, raw bytes)."""

    def __init__(self) -> None:
        self.state: tuple | None = None

    def __setstate__(self, state: tuple) -> None:
        self.state = state

    def to_numpy(self) -> np.ndarray:
        if self.state is None or len(self.state) != 5:
            raise pickle.UnpicklingError("malformed array in CIFAR file")
        _, shape, dtype, fortran, raw = self.state
        if not isinstance(dtype, _DtypeStub) or not isinstance(raw, (bytes, bytearray)):
            raise pickle.UnpicklingError("CIFAR array is not raw bytes with a plain dtype")
        arr = np.frombuffer(bytes(raw), dtype=dtype.to_numpy())
        shape = tuple(int(s) for s in shape)
        return arr.reshape(shape, order="F" if fortran else "C").copy()


class _DtypeStub:
    """Stands in for numpy.dtype while unpickling; only plain numeric dtypes are allowed."""

    _ALLOWED = {"u1", "i1", "u2", "i2", "u4", "i4", "u8", "i8", "f4", "f8", "b1"}

    def __init__(self, name: Any, align: Any = False, copy: Any = True) -> None:
        self.name = name.decode() if isinstance(name, bytes) else str(name)
        if self.name not in self._ALLOWED:
            raise pickle.UnpicklingError(f"dtype {self.name!r} not allowed in CIFAR files")
        self.byteorder = "|"

    def __setstate__(self, state: tuple) -> None:
        order = state[1] if len(state) > 1 else "|"
        self.byteorder = order.decode() if isinstance(order, bytes) else str(order)

    def to_numpy(self) -> np.dtype:
        order = self.byteorder if self.byteorder in "<>" else "="
        return np.dtype(self.name).newbyteorder(order)


def _reconstruct(cls: Any, shape: Any, typecode: Any) -> _ArrayStub:
    if cls is not _ArrayStub:
        raise pickle.UnpicklingError("unexpected array class in CIFAR file")
    return _ArrayStub()


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """What protocol-2 pickles written by Python 3 use for bytes (``_codecs.encode``)."""
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"encoding {encoding!r} not allowed")
    return text.encode("latin1")


class _CifarUnpickler(pickle.Unpickler):
    """Allows builtins dict/list/bytes/str/int, and numpy arrays via the stubs above."""

    _SAFE: dict[tuple[str, str], Any] = {
        ("builtins", "dict"): dict, ("builtins", "list"): list, ("builtins", "bytes"): bytes,
        ("builtins", "str"): str, ("builtins", "int"): int,
        ("__builtin__", "dict"): dict, ("__builtin__", "list"): list,
        ("__builtin__", "str"): str, ("__builtin__", "int"): int,
        ("_codecs", "encode"): _latin1_encode,
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy", "ndarray"): _ArrayStub,
        ("numpy", "dtype"): _DtypeStub,
    }

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._SAFE[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name} from a CIFAR file (only plain data allowed)"
            ) from None


def _finish(obj: Any) -> Any:
    if isinstance(obj, _ArrayStub):
        return obj.to_numpy()
    if isinstance(obj, dict):
        return {(k.decode() if isinstance(k, bytes) else k): _finish(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finish(v) for v in obj]
    return obj


def load_cifar_pickle(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load one CIFAR python-pickle file safely; keys are returned as str."""
    data = Path(path).read_bytes()
    obj = _CifarUnpickler(io.BytesIO(data), encoding="bytes").load()
    if not isinstance(obj, dict):
        raise pickle.UnpicklingError(f"{path}: expected a dict at the top level")
    return _finish(obj)


def _names(values: list[Any]) -> tuple[str, ...]:
    return tuple(v.decode() if isinstance(v, bytes) else str(v) for v in values)


def _images(data: Any, path: Path) -> np.ndarray:
    arr = np.asarray(data)
    if arr.dtype != np.uint8 or arr.ndim != 2 or arr.shape[1] != 3072:
        raise ValueError(f"{path}: 'data' must be uint8 (N, 3072), got {arr.dtype} {arr.shape}")
    return arr.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy()


def find_cifar(root: str | os.PathLike[str]) -> tuple[Path, int]:
    """Locate a CIFAR folder in or at ``root``; returns (folder, 10 or 100)."""
    root = Path(root)
    for folder, n in ((root, 0), (root / "cifar-10-batches-py", 10), (root / "cifar-100-python", 100)):
        if (folder / "batches.meta").is_file() and n in (0, 10):
            return folder, 10
        if (folder / "meta").is_file() and (folder / "train").is_file() and n in (0, 100):
            return folder, 100
    raise DatasetNotFoundError(f"no cifar-10-batches-py/ or cifar-100-python/ in {root}")


def load_cifar(root: str | os.PathLike[str], split: str = "train",
               label_kind: str = "fine") -> ArrayDataset:
    """Load CIFAR-10 or CIFAR-100 from the python-pickle layout.

    Args:
        root: a folder holding ``cifar-10-batches-py/`` or ``cifar-100-python/`` (or one of them).
        split: "train" or "test".
        label_kind: CIFAR-100 only, "fine" (100 classes) or "coarse" (20 super-classes).

    Returns:
        ArrayDataset with images uint8 (N, 32, 32, 3) RGB and labels int64 (N,).
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    folder, n = find_cifar(root)
    if n == 10:
        meta = load_cifar_pickle(folder / "batches.meta")
        names = _names(meta["label_names"])
        files = [folder / f"data_batch_{i}" for i in range(1, 6)] if split == "train" \
            else [folder / "test_batch"]
        key = "labels"
    else:
        if label_kind not in ("fine", "coarse"):
            raise ValueError(f"label_kind must be 'fine' or 'coarse', got {label_kind!r}")
        meta = load_cifar_pickle(folder / "meta")
        names = _names(meta[f"{label_kind}_label_names"])
        files = [folder / split]
        key = f"{label_kind}_labels"
    images, labels = [], []
    for f in files:
        if not f.is_file():
            raise DatasetNotFoundError(f"missing CIFAR file {f}")
        d = load_cifar_pickle(f)
        images.append(_images(d["data"], f))
        labels.append(np.asarray(d[key], dtype=np.int64))
    return ArrayDataset(np.concatenate(images), np.concatenate(labels), names)
