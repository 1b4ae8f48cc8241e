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

Files whose name looks like an image but that Pillow cannot read (corrupt, truncated PNG,
not an image) are left out when a tree is scanned, counted in ``FileDataset.skipped``, and
logged with the first few names (:func:`report_skipped`); never a crash.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from training.data.fashion_mnist import ArrayDataset, DatasetNotFoundError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff",
                              ".ppm", ".pgm"})
COUNT_FILES = ("class_counts.json", "class_counts.txt", "class_counts.csv")
EVAL_SPLITS = ("val", "test")
SHOW_SKIPPED = 5  # names of unreadable files shown in the log


def unreadable(path: str | os.PathLike[str]) -> str | None:
    """Why Pillow cannot read ``path`` (None: it can). Checks the header and, for formats
    that allow it (PNG's chunk CRCs), the whole file, without decoding the pixels."""
    try:
        with Image.open(path) as im:
            im.verify()
        return None
    except Exception as exc:  # noqa: BLE001 - any failure means "skip this file"
        return f"{type(exc).__name__}: {exc}"


def report_skipped(where: str, skipped: list[str] | tuple[str, ...]) -> None:
    """Log how many files were left out of ``where`` and the first few names."""
    if not skipped:
        return
    names = ", ".join(Path(p).name for p in skipped[:SHOW_SKIPPED])
    more = f" and {len(skipped) - SHOW_SKIPPED} more" if len(skipped) > SHOW_SKIPPED else ""
    print(f"[data] {where}: skipped {len(skipped)} unreadable file(s): {names}{more}",
          flush=True)


@dataclass
class FileDataset:
    """Image files and their labels.

    Attributes:
        paths: image file paths (str).
        labels: int64 class ids. Shape: (N,).
        class_names: name of each class id.
        skipped: image-named files left out because they could not be read.
    """

    paths: list[str]
    labels: np.ndarray
    class_names: tuple[str, ...]
    skipped: tuple[str, ...] = field(default=())

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
                      class_names: tuple[str, ...] | None = None,
                      check: bool = True) -> FileDataset:
    """Read a tree ``root/<class>/<image>``.

    Args:
        root: the folder whose sub-folders are classes.
        class_names: fix the class ids (e.g. the training classes for a validation tree);
            default: the sorted sub-folder names.
        check: leave out (and log) files Pillow cannot read (:func:`unreadable`).
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
    skipped: list[str] = []
    for idx, name in enumerate(names):
        folder = root / name
        if not folder.is_dir():
            continue
        for f in sorted(folder.rglob("*")):
            if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS \
                    and not any(part.startswith(".") for part in f.relative_to(folder).parts):
                if check and unreadable(f) is not None:
                    skipped.append(str(f))
                    continue
                paths.append(str(f))
                labels.append(idx)
    report_skipped(str(root), skipped)
    if not paths:
        raise DatasetNotFoundError(f"{root} holds no readable images "
                                   f"({', '.join(sorted(IMAGE_EXTENSIONS))})")
    return FileDataset(paths, np.asarray(labels, dtype=np.int64), names, tuple(skipped))


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


def split_by_seed(data: FileDataset, fractions: tuple[float, ...], seed: int
                  ) -> list[FileDataset]:
    """Split ``data`` class by class into a training part and one part per fraction.

    Each class's files are shuffled with ``seed``; part ``j`` takes ``round(n * f_j)`` of
    them (at least one when ``f_j > 0`` and the class has an image to spare), the training
    part keeps the rest (at least one). Same seed and files -> same parts.

    Returns:
        ``[train, part_1, ...]``, each in the original file order.
    """
    if any(not 0.0 <= f < 1.0 for f in fractions) or sum(fractions) >= 1.0:
        raise ValueError(f"split fractions must lie in [0, 1) and sum to less than 1, got "
                         f"{list(fractions)}")
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[] for _ in range(len(fractions) + 1)]
    for c in range(len(data.class_names)):
        idx = rng.permutation(np.flatnonzero(data.labels == c))
        start = 0
        for j, f in enumerate(fractions):
            k = int(round(len(idx) * f))
            if f > 0 and k == 0 and len(idx) - start > 1:
                k = 1
            k = min(k, max(len(idx) - start - 1, 0))
            parts[j + 1].extend(idx[start:start + k].tolist())
            start += k
        parts[0].extend(idx[start:].tolist())
    return [data.subset(np.asarray(sorted(p), dtype=np.int64)) for p in parts]


@dataclass
class ImageFolderSplits:
    """Training, validation and test files of an ImageFolder, and how they were found.

    ``val`` holds images no training step sees (temperature fitting, domain-check
    hold-out); ``test`` the evaluation images. ``layout`` says where each came from."""

    train: FileDataset
    val: FileDataset
    test: FileDataset
    layout: str
    skipped: tuple[str, ...]    # unreadable files left out of the whole folder


def load_image_folder(root: str | os.PathLike[str], val_fraction: float,
                      test_fraction: float, seed: int) -> ImageFolderSplits:
    """An ImageFolder with its three splits.

    ``root/train/<class>/`` with ``val/`` and ``test/`` trees: used as they are; with only
    one of them, that one is the test split and the validation split is drawn from train;
    with train/ alone, both are drawn from it. Without train/, ``root/<class>/`` is one
    tree split by ``seed`` into ``val_fraction``, ``test_fraction`` and the rest
    (:func:`split_by_seed`, per class). Validation and test trees may hold a subset of the
    training classes, never another class.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetNotFoundError(f"image folder not found: {root}")
    if (root / "train").is_dir():
        train = scan_image_folder(root / "train")
        given = {s: scan_image_folder(root / s, class_names=train.class_names)
                 for s in EVAL_SPLITS if (root / s).is_dir()}
        skipped = train.skipped + tuple(p for d in given.values() for p in d.skipped)
        if len(given) == 2:
            return ImageFolderSplits(train, given["val"], given["test"], "train/ val/ test/",
                                     skipped)
        if len(given) == 1:
            (name, test), = given.items()
            train, val = split_by_seed(train, (val_fraction,), seed)
            return ImageFolderSplits(train, val, test,
                                     f"train/ {name}/; validation {val_fraction:g} of train/ "
                                     f"(seed {seed})", skipped)
        train, val, test = split_by_seed(train, (val_fraction, test_fraction), seed)
        return ImageFolderSplits(train, val, test,
                                 f"train/; validation {val_fraction:g} and test "
                                 f"{test_fraction:g} of it (seed {seed})", skipped)
    tree = scan_image_folder(root)
    train, val, test = split_by_seed(tree, (val_fraction, test_fraction), seed)
    return ImageFolderSplits(train, val, test,
                             f"one tree split by seed {seed}: validation {val_fraction:g}, "
                             f"test {test_fraction:g}", tree.skipped)


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
