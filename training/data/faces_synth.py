"""Offline generator of sequentially manipulated faces, written in the Seq-DeepFake layout.

No face data set can be downloaded here, so the default sequential-deepfake model trains on
procedurally drawn faces (docs/seqfake.md, "Data"). Each face has the five Seq-FaceComp
components (1 nose, 2 eye, 3 eyebrow, 4 lip, 5 hair). A sample gets a manipulation sequence
of length 0..5 (lengths equally likely, components in a random order). One manipulation
"transplants"
a component from another (virtual) source face: the component is redrawn with new
shape/colour and blended into the image through a feathered region mask. The editing
generator re-synthesises, at every step, the union of all regions edited so far (as a
sequential editor that keeps a running edit mask does), and each pass leaves the same
generator fingerprint (a fixed medium-frequency colour pattern per image) in that union.
After every step the whole image is re-encoded (a mild blur, then a JPEG re-save at a random
quality). Two cues make the order recoverable from pixels:

* an edit made at step j of K has been through K - j + 1 generator passes, so its
  fingerprint is stronger the earlier it was made (the first edit carries the most);
* regions overlap (eyebrow/eye, nose/lip, hair/eyebrow), and the later edit overwrites the
  overlap, resetting the fingerprint there to its own count.

The direction of the first cue matters for the thesis' model, which orders the detected
components by decreasing probability: evidence that grows with how early an edit was made
is what such a decoder can express. (Version 3 of this generator gave each edit fresh grain
that later re-encodings blurred away, i.e. the *last* edit was the most evident; no model
ordered better than chance on it, reports/seqfake.md.)

Faces vary in geometry, skin tone, lighting, hair, and background (gradients or crops of
scikit-image's sample images; train/val and test use disjoint background images, and every
face is drawn from its own seeded random stream, so test faces are not training faces).

Output layout (as the real Seq-DeepFake data, docs/seqfake.md "Data")::

    OUT/facial_components/annotations/{train,val,test}.csv   # file_path,label
    OUT/facial_components/images/{split}/{seq-name|original}/{index:06d}.jpg
    OUT/facial_components/landmarks/{split}.csv              # extra: 5 landmarks + boxes

``file_path`` is relative to ``OUT/facial_components``; ``label`` is a 5-slot list such as
``[1, 2, 4, 0, 0]``. The landmark files are not part of the Seq-DeepFake format; the loader
uses them when present (for landmark-based augmentation) and falls back to canonical ones.

Code: face parameters in :mod:`training.data.faces_params`, drawing, region masks and
backgrounds in :mod:`training.data.faces_render`, manipulation sequences, the editor and the
re-encoding in :mod:`training.data.faces_edits`, the attributes variant in
:mod:`training.data.faces_attrs`; this module writes the data set and re-exports the
generator's public names.

CLI::

    python -m training.data.faces_synth --out DIR --n-train 3000 --n-val 300 --n-test 600
"""
from __future__ import annotations

import argparse
import csv
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import cv2
import numpy as np

from training.data.faces_edits import (MAX_LEN, SynthConfig, make_sample, reencode,
                                       sample_sequence)
from training.data.faces_params import (COMPONENTS, geometry, landmarks, sample_component,
                                        sample_face, task_names)
from training.data.faces_render import (_load_bg_images, component_boxes, component_masks,
                                        noise_field, region_masks, render_face,
                                        sample_background)
from training.data.seqdeepfake import TASK_DIRS

__all__ = ["COMPONENTS", "GENERATOR_VERSION", "LANDMARK_COLUMNS", "MAX_LEN", "TASKS",
           "SynthConfig", "component_boxes", "component_masks", "format_label", "generate",
           "generate_split", "geometry", "is_generated", "iter_preview", "landmarks",
           "make_sample", "noise_field", "reencode", "region_masks", "render_face",
           "sample_background", "sample_component", "sample_face", "sample_sequence",
           "sequence_name", "task_names"]

TASKS = TASK_DIRS
"""Generator task -> the Seq-DeepFake folder it writes (the loader's own table)."""
_SPLIT_STREAM = {"train": 11, "val": 22, "test": 33}
GENERATOR_VERSION = 4  # bump when the pictures change, so stale generated sets are remade
LANDMARK_COLUMNS = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")


# ----------------------------------------------------------------------------------------
# Data set writer
# ----------------------------------------------------------------------------------------
def sequence_name(sequence: list[int], task: str = "components") -> str:
    """Folder name as in Seq-DeepFake: 'eyebrow-eye-hair' or 'original'."""
    names = task_names(task)
    return "-".join(names[c - 1] for c in sequence) or "original"


def format_label(sequence: list[int]) -> str:
    """'[1, 2, 4, 0, 0]' for the sequence (1, 2, 4)."""
    return "[" + ", ".join(str(c) for c in list(sequence) + [0] * (MAX_LEN - len(sequence))) + "]"


def _balanced_lengths(rng: np.random.Generator, n: int) -> np.ndarray:
    """n lengths with each of 0..5 as equally frequent as n allows, shuffled."""
    lengths = np.arange(n) % (MAX_LEN + 1)
    return rng.permutation(lengths)


_BG: dict[str, list[np.ndarray]] = {}  # each split's background images, loaded once per process


def _init_worker() -> None:
    cv2.setNumThreads(1)  # a worker process: the processes are the parallelism


def _sample(args: tuple[int, str, int, int, SynthConfig, str]
            ) -> tuple[int, list[int], bytes, np.ndarray, dict[str, list[int]]]:
    """Sample ``i`` of ``split``: (i, sequence, JPEG bytes, landmarks, boxes). Every sample
    draws from its own stream ``[seed, split, i]``, so the result does not depend on which
    process made it or in what order."""
    i, split, seed, length, cfg, task = args
    if split not in _BG:
        _BG[split] = _load_bg_images(split)
    srng = np.random.default_rng([seed, _SPLIT_STREAM[split], i])
    seq = sample_sequence(srng, length)
    data, lm, face = make_sample(srng, seq, _BG[split], cfg, task)
    return i, seq, data, lm, component_boxes(face, task)


def _write_samples(root: Path, split: str, task: str, results, n: int,
                   progress: Callable[[int, int], None] | None) -> tuple[list, list]:
    """Write each sample's JPEG as it comes (in index order); returns the annotation and
    landmark rows."""
    names = task_names(task)
    rows, lm_rows = [], []
    for i, seq, data, lm, boxes in results:
        rel = f"images/{split}/{sequence_name(seq, task)}/{i:06d}.jpg"
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        rows.append((rel, format_label(seq)))
        lm_rows.append([rel] + [f"{v:.1f}" for v in lm.reshape(-1)] +
                       [" ".join(str(v) for v in boxes[k]) for k in names])
        if progress is not None:
            progress(i + 1, n)
    return rows, lm_rows


def default_workers() -> int:
    """Processes for generation: every core this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def generate_split(out: str | os.PathLike[str], split: str, n: int, seed: int = 0,
                   cfg: SynthConfig = SynthConfig(),
                   progress: Callable[[int, int], None] | None = None,
                   task: str = "components", executor: Any = None) -> Path:
    """Write ``n`` samples of one split; returns the annotations CSV path.

    ``executor`` (a ``concurrent.futures`` process pool, see :func:`generate`) draws the
    samples in its processes; the files are byte-identical to drawing them here.
    """
    names = task_names(task)
    root = Path(out) / TASKS[task]
    rng = np.random.default_rng([seed, _SPLIT_STREAM[split]])
    lengths = _balanced_lengths(rng, n)
    jobs = [(i, split, seed, int(lengths[i]), cfg, task) for i in range(n)]
    if executor is not None:
        chunk = max(1, min(32, n // 8))  # a few chunks per worker, in index order
        results = executor.map(_sample, jobs, chunksize=chunk)
    else:
        results = map(_sample, jobs)
    rows, lm_rows = _write_samples(root, split, task, results, n, progress)
    ann = root / "annotations" / f"{split}.csv"
    ann.parent.mkdir(parents=True, exist_ok=True)
    with open(ann, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file_path", "label"])
        w.writerows(rows)
    lmk = root / "landmarks" / f"{split}.csv"
    lmk.parent.mkdir(parents=True, exist_ok=True)
    with open(lmk, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file_path"] + [f"{p}_{a}" for p in LANDMARK_COLUMNS for a in "xy"] +
                   [f"box_{k}" for k in names])
        w.writerows(lm_rows)
    return ann


def generate(out: str | os.PathLike[str], n_train: int = 3000, n_val: int = 150,
             n_test: int = 600, seed: int = 0, cfg: SynthConfig = SynthConfig(),
             verbose: bool = True, task: str = "components", workers: int | None = None) -> Path:
    """Write the three splits under ``out``; returns ``out/facial_components`` (or
    ``out/facial_attributes`` for ``task="attributes"``). ``workers``: processes
    (None = :func:`default_workers`); the output does not depend on it.

    A ``DONE`` marker (with the sizes and seed) is written last, so a half-written folder is
    regenerated rather than used.
    """
    out = Path(out)
    workers = default_workers() if workers is None else workers
    if workers > 1:
        from concurrent.futures import ProcessPoolExecutor
        from concurrent.futures.process import BrokenProcessPool
        import multiprocessing as mp

        try:  # spawned, so a parent that imported torch (threads) is safe
            with ProcessPoolExecutor(workers, mp.get_context("spawn"), _init_worker) as ex:
                _generate_splits(out, (n_train, n_val, n_test), seed, cfg, verbose, task, ex)
        except BrokenProcessPool as exc:  # e.g. spawned workers cannot import the caller
            print(f"[faces_synth] worker processes failed ({exc}); generating in this process",
                  flush=True)
            workers = 1
    if workers <= 1:
        _generate_splits(out, (n_train, n_val, n_test), seed, cfg, verbose, task, None)
    marker = out / TASKS[task] / "DONE"
    marker.write_text(_marker_text(n_train, n_val, n_test, seed) + "\n")
    return out / TASKS[task]


def _generate_splits(out: Path, sizes: tuple[int, int, int], seed: int, cfg: SynthConfig,
                     verbose: bool, task: str, executor: Any) -> None:
    for split, n in zip(("train", "val", "test"), sizes):
        t0 = time.time()

        def _progress(i: int, total: int, split: str = split) -> None:
            if verbose and (i == total or i % 500 == 0):
                print(f"[faces_synth] {split}: {i}/{total} ({time.time() - t0:.0f} s)", flush=True)

        generate_split(out, split, n, seed, cfg, _progress, task, executor)


def is_generated(out: str | os.PathLike[str], n_train: int, n_val: int, n_test: int,
                 seed: int, task: str = "components") -> bool:
    """True if ``out`` holds a complete generated set with exactly these sizes and seed."""
    marker = Path(out) / TASKS[task] / "DONE"
    return marker.is_file() and marker.read_text().strip() == _marker_text(n_train, n_val, n_test, seed)


def _marker_text(n_train: int, n_val: int, n_test: int, seed: int) -> str:
    return (f"n_train={n_train} n_val={n_val} n_test={n_test} seed={seed} "
            f"version={GENERATOR_VERSION}")


def iter_preview(seed: int = 0, n: int = 6, task: str = "components"
                 ) -> Iterator[tuple[np.ndarray, list[int]]]:
    """Decoded samples (uint8 (256, 256, 3), sequence) of lengths 0..5, for figures/tests."""
    pool = _load_bg_images("train")
    for i in range(n):
        rng = np.random.default_rng([seed, 99, i])
        seq = sample_sequence(rng, i % (MAX_LEN + 1))
        data, _, _ = make_sample(rng, seq, pool, task=task)
        img = cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR),
                           cv2.COLOR_BGR2RGB)
        yield img, seq


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.data.faces_synth",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True,
                   help="output folder (facial_components/ or facial_attributes/ is made in it)")
    p.add_argument("--n-train", type=int, default=3000)
    p.add_argument("--n-val", type=int, default=150)
    p.add_argument("--n-test", type=int, default=600)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--task", choices=tuple(TASKS), default="components",
                   help="facial components (Seq-FaceComp) or attributes (Seq-FaceAttr)")
    p.add_argument("--workers", type=int, default=None,
                   help="processes (default: every core; the files do not depend on it)")
    a = p.parse_args(argv)
    t0 = time.time()
    root = generate(a.out, a.n_train, a.n_val, a.n_test, a.seed, task=a.task,
                    workers=a.workers)
    print(f"[faces_synth] wrote {root} in {time.time() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
