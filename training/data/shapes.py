"""A small ImageFolder of easy colour images (one shape and colour per class), written in
the exact on-disk format a user brings: for the tests, the benchmark of
``scripts/qmil_folder_eval.py`` and for trying the "your own images" commands.

    python -m training.data.shapes DIR [--per-class 150] [--size 64] [--layout tree|splits]

Each class is a shape with its own colour (``circle`` red, ``square`` green, ``triangle``
blue, ``star`` yellow, ...) at a random position and size on a noisy gray background; with
``odd_files`` the tree also holds the file kinds a real folder has: a grayscale PNG, an
RGBA PNG, a palette GIF, a 16-bit PNG, a large JPEG, a corrupt PNG, a truncated JPEG
(its header is valid) and a text file. Seeded: the
same files on every call.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SHAPES = {"circle": (220, 40, 40), "square": (40, 180, 60), "triangle": (50, 80, 220),
          "star": (230, 200, 30), "cross": (200, 60, 200)}
SPLITS = {"train": 0.6, "val": 0.2, "test": 0.2}


def draw(shape: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """One image of ``shape``: uint8 (size, size, 3)."""
    bg = rng.integers(90, 160)
    img = np.clip(rng.normal(bg, 12, (size, size, 3)), 0, 255).astype(np.uint8)
    pil = Image.fromarray(img)
    d = ImageDraw.Draw(pil)
    r = rng.uniform(0.22, 0.38) * size
    cx, cy = rng.uniform(r, size - r, 2)
    colour = tuple(int(np.clip(c + rng.normal(0, 15), 0, 255)) for c in SHAPES[shape])
    if shape == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
    elif shape == "square":
        d.rectangle([cx - r, cy - r, cx + r, cy + r], fill=colour)
    elif shape == "triangle":
        d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
    elif shape == "star":
        pts = [(cx + (r if k % 2 == 0 else r / 2.5) * np.cos(np.pi * k / 5 - np.pi / 2),
                cy + (r if k % 2 == 0 else r / 2.5) * np.sin(np.pi * k / 5 - np.pi / 2))
               for k in range(10)]
        d.polygon(pts, fill=colour)
    else:
        w = r / 3
        d.rectangle([cx - r, cy - w, cx + r, cy + w], fill=colour)
        d.rectangle([cx - w, cy - r, cx + w, cy + r], fill=colour)
    return np.asarray(pil)


def _odd_files(folder: Path, shape: str, size: int, rng: np.random.Generator) -> list[str]:
    """The file kinds of a real folder, one each, in ``folder``; returns the names of the
    files that cannot be read."""
    rgb = draw(shape, size, rng)
    Image.fromarray(rgb).convert("L").save(folder / "odd_gray.png")
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    rgba[:4, :4, 3] = 0
    Image.fromarray(rgba, "RGBA").save(folder / "odd_rgba.png")
    Image.fromarray(rgb).convert("P", palette=Image.ADAPTIVE).save(folder / "odd_palette.gif")
    Image.fromarray(rgb.mean(2).astype(np.uint16) * 257).save(folder / "odd_16bit.png")
    Image.fromarray(draw(shape, size * 2, rng)).save(folder / "odd_large.jpg", quality=90)
    (folder / "odd_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 4)
    jpeg = folder / "odd_truncated.jpg"  # a valid header: only decoding finds the damage
    Image.fromarray(rgb).save(jpeg, quality=90)
    jpeg.write_bytes(jpeg.read_bytes()[: jpeg.stat().st_size // 2])
    (folder / "notes.txt").write_text("not an image\n")
    return ["odd_corrupt.png", "odd_truncated.jpg"]


def write_shapes_folder(root: str | Path, classes: tuple[str, ...] = ("circle", "square", "triangle"),
                        per_class: int = 20, size: int = 64, layout: str = "splits",
                        seed: int = 0, odd_files: bool = False) -> list[str]:
    """Write the folder (see the module docstring).

    Args:
        root: the folder to write (created).
        classes: names among :data:`SHAPES`.
        per_class: images per class in all; ``layout="splits"`` puts 60/20/20 % of them
            in ``train/``, ``val/``, ``test/``; ``"tree"`` writes one ``root/<class>/`` tree.
        odd_files: add the odd file kinds to the first class's (training) folder.

    Returns:
        The paths (relative to ``root``) of the unreadable files written.
    """
    if layout not in ("splits", "tree"):
        raise ValueError(f"layout must be 'splits' or 'tree', got {layout!r}")
    unknown = [c for c in classes if c not in SHAPES]
    if unknown:
        raise ValueError(f"unknown shapes {unknown}; choose from {', '.join(SHAPES)}")
    root = Path(root)
    rng = np.random.default_rng(seed)
    bad: list[str] = []
    for c, name in enumerate(classes):
        if layout == "tree":
            parts = {"": per_class}
        else:
            n_val = max(1, round(per_class * SPLITS["val"]))
            n_test = max(1, round(per_class * SPLITS["test"]))
            parts = {"train": per_class - n_val - n_test, "val": n_val, "test": n_test}
        for split, n in parts.items():
            folder = root / split / name if split else root / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(draw(name, size, rng)).save(folder / f"{i:03d}.png")
            if odd_files and c == 0 and split in ("", "train"):
                bad += [str((folder / f).relative_to(root)) for f in
                        _odd_files(folder, name, size, rng)]
    return bad


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.data.shapes", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root", help="folder to write")
    p.add_argument("--classes", nargs="+", default=["circle", "square", "triangle"],
                   choices=list(SHAPES))
    p.add_argument("--per-class", type=int, default=150,
                   help="images per class (150: DCL's default batch of 256 fits the training split)")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--layout", choices=("splits", "tree"), default="splits")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    write_shapes_folder(args.root, tuple(args.classes), args.per_class, args.size, args.layout,
                        args.seed)
    print(f"wrote {args.root}: {len(args.classes)} classes x {args.per_class} images "
          f"({args.layout})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
