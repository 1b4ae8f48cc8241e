"""What the load test and the soak send: each tab's requests on real files, and hostile
files that must be refused with a message.

Each tab module names its own requests (``load_requests(lc: LoadContext) -> list[Request]``);
this module gives them the files and walks them. A :class:`Request` names its endpoint, its
arguments (gradio_client ``handle_file`` values), the part of the answer that must not
change under load (``key``), and whether it is hostile: a hostile request must be refused
with the user-facing message (never "Internal error").

Files (nothing is downloaded): scikit-image's bundled photographs (astronaut: a face;
coffee, chelsea), scikit-learn's bundled photographs (china, flower), the artifacts'
examples (generated faces, Fashion-MNIST images, bags), a short video made from face
crops, and hostile files written here (text named .png, a truncated PNG, an empty file, a
4 x 4 image).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image


@dataclass
class Request:
    """One request of the mix."""
    api: str
    args: tuple
    key: Callable[[Any], Any] = field(repr=False)  # the answer's part that must not change
    hostile: bool = False                           # must be refused with a message
    label: str = ""


@dataclass
class LoadContext:
    """What a tab's ``load_requests`` gets: the artifacts' examples folder, gradio_client's
    ``handle_file``, the served model names, bundled photographs and hostile files by name,
    and a folder for files of its own (a video, say)."""
    examples: Path
    handle_file: Callable[[str], Any]
    served: list[str]
    photos: dict[str, Path]
    hostile: dict[str, Path]
    work: Path

    def file(self, path: Path) -> Any:
        return self.handle_file(str(path))


def _photos(folder: Path) -> dict[str, Path]:
    """Bundled photographs written as files (JPEG for sklearn's, PNG for skimage's)."""
    from skimage import data
    from sklearn.datasets import load_sample_image

    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name in ("astronaut", "coffee", "chelsea"):
        p = folder / f"{name}.png"
        Image.fromarray(getattr(data, name)()).save(p)
        out[name] = p
    for name in ("china.jpg", "flower.jpg"):
        p = folder / name
        Image.fromarray(load_sample_image(name)).save(p, quality=90)
        out[p.stem] = p
    return out


def _video(frames: list[Path], path: Path) -> Path | None:
    """A short MP4 from face crops (None when OpenCV cannot write one here)."""
    import cv2

    imgs = [np.asarray(Image.open(f).convert("RGB").resize((128, 128))) for f in frames]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 4, (128, 128))
    if not writer.isOpened():
        return None
    for im in imgs * 2:
        writer.write(cv2.cvtColor(im, cv2.COLOR_RGB2BGR))
    writer.release()
    return path if path.is_file() and path.stat().st_size > 0 else None


def _hostile(folder: Path, good_png: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    text = folder / "notes.png"
    text.write_text("this is a text file with an image's name\n")
    trunc = folder / "truncated.png"
    trunc.write_bytes(good_png.read_bytes()[: max(64, good_png.stat().st_size // 3)])
    empty = folder / "empty.png"
    empty.write_bytes(b"")
    tiny = folder / "tiny.png"
    Image.new("RGB", (4, 4), (120, 30, 200)).save(tiny)
    return {"text": text, "truncated": trunc, "empty": empty, "tiny": tiny}


def video_from(frames: list[Path], path: Path) -> Path | None:
    """A short MP4 from image files (None when OpenCV cannot write one here)."""
    return _video(frames, path)


def build_mix(examples: Path, work: Path, handle_file: Any, served: list[str]
              ) -> tuple[list[Request], list[Request]]:
    """(real requests, hostile requests) of every tab, for the models that are ``served``,
    plus ``/status``."""
    from app.tabs import tabs

    photos = _photos(work / "photos")
    fashion = sorted((examples / "fashion").glob("*.png"))
    lc = LoadContext(examples, handle_file, served, photos,
                     _hostile(work / "hostile", fashion[0] if fashion else photos["coffee"]), work)
    reqs = [Request("/status", (), lambda r: {k: v["status"] for k, v in r["models"].items()},
                    label="status")]
    for _, tab in tabs():
        reqs += tab.load_requests(lc)
    return [r for r in reqs if not r.hostile], [r for r in reqs if r.hostile]


def interleave(real: list[Request], hostile: list[Request], hostile_every: int) -> list[Request]:
    """The cycle the clients walk: the real requests, with one hostile request after every
    ``hostile_every`` of them (about 100 / hostile_every percent)."""
    out: list[Request] = []
    h = 0
    n = max(len(real), hostile_every * max(1, len(hostile)))
    for i in range(n):
        out.append(real[i % len(real)])
        if hostile and (i + 1) % hostile_every == 0:
            out.append(hostile[h % len(hostile)])
            h += 1
    return out
