"""What a ``--data PATH`` is: one name per on-disk format, shared by the methods.

:func:`detect_format` looks at the path (``data.format: auto``); a method that reads
several formats calls it and then the loader of that format. A path that fits more than
one format (say an ImageFolder whose images could also be read as one unlabelled
collection) takes the first that fits; ``--set data.format=NAME`` picks another.

    idx           a folder with the four Fashion-MNIST IDX files
    bag_csv       a bag manifest CSV (``bag_id,path,labels``: :mod:`training.data.bag_manifest`)
    image_folder  ``DIR/<class>/*`` or ``DIR/{train,val,test}/<class>/*``
                  (:func:`training.data.folders.load_image_folder`)
    unlabeled     images anywhere under ``DIR`` (:mod:`training.data.unlabeled`); a flat
                  folder of images is read this way
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from training.config import default_config_path, load_config
from training.data.fashion_mnist import DatasetNotFoundError, find_root
from training.data.folders import IMAGE_EXTENSIONS

FORMATS = ("idx", "bag_csv", "image_folder", "unlabeled")
USER_FORMATS = ("bag_csv", "image_folder", "unlabeled")   # a user's images (not a built-in set)


def _loose_images(root: Path) -> bool:
    return any(f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS and not f.name.startswith(".")
               for f in root.iterdir())


def detect_format(path: str | os.PathLike[str], allowed: Sequence[str] = FORMATS) -> str:
    """The format of ``path`` among ``allowed`` (see the module docstring).

    Raises:
        DatasetNotFoundError: the path does not exist, or fits none of ``allowed``.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise DatasetNotFoundError(f"data path not found: {p}")
    fits: list[str] = []
    if p.is_file():
        if p.suffix.lower() == ".csv":
            fits.append("bag_csv")
    else:
        if find_root(p) == p:
            fits.append("idx")
        subdirs = [d for d in p.iterdir() if d.is_dir() and not d.name.startswith(".")]
        if subdirs and not _loose_images(p):
            fits.append("image_folder")
        fits.append("unlabeled")
    for f in fits:
        if f in allowed:
            return f
    raise DatasetNotFoundError(
        f"{p} is not data this method reads: it looks like {' or '.join(fits) or 'nothing known'}"
        f"; expected {', '.join(allowed)} (set data.format to one of them if the guess is wrong)")


def with_user_defaults(method: str, values: dict[str, Any], section: str = "data"
                       ) -> dict[str, Any]:
    """A config section (``data`` or ``model``) with its ``user_data`` values for a user's
    images: each replaces the key of the same name where that key is still at its default
    in the method's YAML file (a value the user set, by ``--set`` or ``--config``, is kept).
    A ``model`` section is returned without ``user_data`` (its keys are the network's
    keyword arguments)."""
    defaults = load_config(default_config_path(method)).get(section, {})
    out = dict(values)
    for key, value in (values.get("user_data") or {}).items():
        if values.get(key) == defaults.get(key):
            out[key] = value
    if section == "model":
        out.pop("user_data", None)
    return out
