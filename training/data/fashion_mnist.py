"""Fashion-MNIST from IDX files (Debian's ``dataset-fashion-mnist`` or a user folder).

Search order for the folder: explicit ``root`` > ``FASHION_MNIST_DIR`` > Debian's
``/usr/share/datasets/fashion-mnist``. If none holds the files and ``download=True``,
torchvision's downloader is used (needs internet).
"""
from __future__ import annotations

import gzip
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CLASS_NAMES: tuple[str, ...] = (
    "t-shirt", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle boot",
)
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
ENV_VAR = "FASHION_MNIST_DIR"
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class DatasetNotFoundError(FileNotFoundError):
    """The data set's files are not where they were looked for."""


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (optionally gzip-compressed) into a numpy array.

    The header is two zero bytes, a type code, the number of dimensions, then one
    big-endian uint32 per dimension.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        data = fh.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path} is not an IDX file (bad magic number)")
    code, ndim = data[2], data[3]
    if code not in _DTYPES:
        raise ValueError(f"{path}: unknown IDX type code {code:#x}")
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    dtype = np.dtype(_DTYPES[code])
    expected = int(np.prod(shape)) * dtype.itemsize
    body = data[4 + 4 * ndim :]
    if len(body) != expected:
        raise ValueError(f"{path}: expected {expected} bytes of data, found {len(body)}")
    return np.frombuffer(body, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file (gzip if the name ends in .gz). Used by tests."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as fh:
        fh.write(header + array.tobytes())


def _find(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).exists():
            return folder / name
    return None


def find_root(root: str | os.PathLike[str] | None = None) -> Path | None:
    """Return the first folder holding all four IDX files, or None."""
    candidates = [Path(root)] if root else []
    if os.environ.get(ENV_VAR):
        candidates.append(Path(os.environ[ENV_VAR]))
    candidates += [DEBIAN_DIR, Path("data/fashion-mnist"), Path("data/FashionMNIST/raw")]
    for c in candidates:
        if all(_find(c, s) for pair in _FILES.values() for s in pair):
            return c
    return None


@dataclass
class ArrayDataset:
    """Images and labels in memory.

    Attributes:
        images: uint8 array (N, H, W) or (N, H, W, 3).
        labels: int64 array (N,).
        class_names: name of each class id.
    """

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: np.ndarray) -> "ArrayDataset":
        return ArrayDataset(self.images[indices], self.labels[indices], self.class_names)


def load_fashion_mnist(split: str = "train", root: str | os.PathLike[str] | None = None,
                       download: bool = False) -> ArrayDataset:
    """Load a Fashion-MNIST split.

    Args:
        split: "train" (60k) or "test" (10k).
        root: folder with the IDX files (raw or .gz); see the module docstring.
        download: fall back to torchvision's downloader into ``./data`` (needs internet).

    Returns:
        ArrayDataset with images uint8 (N, 28, 28) and labels int64 (N,).
    """
    if split not in _FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if root and find_root(root) != Path(root):  # a folder was named: never fall back
        raise DatasetNotFoundError(
            f"{root} holds no Fashion-MNIST IDX files (train-images-idx3-ubyte, "
            "train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, raw or "
            ".gz); this data option reads a Fashion-MNIST IDX folder, not an image folder. "
            "Leave it unset to use the installed Fashion-MNIST.")
    folder = find_root(root)
    if folder is None and download:
        from torchvision.datasets import FashionMNIST

        FashionMNIST("data", train=split == "train", download=True)
        folder = find_root("data/FashionMNIST/raw")
    if folder is None:
        raise DatasetNotFoundError(
            "Fashion-MNIST IDX files not found. Install Debian's dataset-fashion-mnist "
            f"(apt-get install dataset-fashion-mnist), set {ENV_VAR} to a folder with the "
            "four IDX files, or pass download=True with internet access."
        )
    img_stem, lbl_stem = _FILES[split]
    images = read_idx(_find(folder, img_stem))  # type: ignore[arg-type]
    labels = read_idx(_find(folder, lbl_stem)).astype(np.int64)  # type: ignore[arg-type]
    if images.ndim != 3 or len(images) != len(labels):
        raise ValueError(f"{folder}: images {images.shape} and labels {labels.shape} disagree")
    return ArrayDataset(images, labels, CLASS_NAMES)
