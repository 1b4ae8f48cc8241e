"""Example inputs for the app's tabs, written under ``<artifacts>/examples``.

Generic helpers used by the methods' post-export hooks
(``export/methods/<name>/assets.py``): one Fashion-MNIST test image per class
(``examples/<folder>``), test faces of a Seq-DeepFake-layout data set copied as PNG, and any
example made by a hook (a bag).

Each example is named with its truth (``NN_<truth>.png``). With a :class:`Judge` (the
served default model, asked through the same service the app uses), the examples are
chosen so that model answers them correctly: the candidates are tried in order and the
first one answered correctly is kept; where no candidate is, the first candidate is kept
and its label records the model's actual answer. ``answers.json`` beside the examples
records, for each example, the truth and the model's answer (:func:`write_answers`); the
tabs show that answer as the examples' "expected answer".
"""
from __future__ import annotations

import csv
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence, TypeVar

import numpy as np
from PIL import Image

from runtime.artifacts import write_json_atomic
from runtime.engine import Engine, ModelUnavailableError, pick_model
from runtime.manifest import ManifestError
from training.data.fashion_mnist import DatasetNotFoundError, load_fashion_mnist

ANSWERS = "answers.json"  # beside the examples: truth and the served model's answer of each
REAL = "real"             # the truth of a face with no manipulation
CLASS_TRIES = 20          # test images tried per class before keeping one answered wrongly
FACE_TRIES = 64           # test faces tried for the face examples

C = TypeVar("C")


@dataclass(frozen=True)
class Judge:
    """The served model that checks examples.

    Attributes:
        model: its manifest name; ``version`` its manifest version.
        answer: its answer for one example (a file, or a bag's folder), in the words of the
            truth the example is named with (a class name, ``"eye -> hair"``, ``"yes"``).
    """
    model: str
    version: str
    answer: Callable[[Path], str]


def served_model(artifacts: Path, method: str, default: str) -> tuple[Engine, str] | None:
    """The engine of ``artifacts`` and the model of ``method`` its tab serves by default
    (``default`` when served, else the first served one), or None when none is served."""
    try:
        engine = Engine(artifacts)
        served = engine.served(method)
    except (OSError, ValueError, ManifestError, ModelUnavailableError):
        return None
    return (engine, pick_model(served, default, None)) if served else None


def slug(name: str) -> str:
    """A name as it is written in an example's file name (spaces as hyphens)."""
    return name.replace(" ", "-")


def same_answer(a: str | None, b: str | None) -> bool:
    """Whether two answers name the same thing (case, spaces and hyphens aside)."""
    def norm(s: str | None) -> str:
        return " ".join(str(s or "").lower().replace("-", " ").split())

    return a is not None and b is not None and norm(a) == norm(b)


def sequence_text(names: Sequence[str]) -> str:
    """A manipulation sequence as the examples' truth and answers write it:
    ``eye -> hair``; ``real`` for none."""
    return " -> ".join(names) if names else REAL


def write_answers(folder: Path, judge: Judge | None, records: dict[str, dict[str, Any]]) -> None:
    """``folder/answers.json``: ``{"model", "model_version", "examples": {name: {"truth",
    "answer", "correct"}}}``, the judge's answers; without a judge, no file (an old one is
    removed)."""
    path = folder / ANSWERS
    if judge is None or not records:
        path.unlink(missing_ok=True)
        return
    write_json_atomic(path, {"model": judge.model, "model_version": judge.version,
                             "examples": records})


def read_answers(folder: Path) -> dict[str, dict[str, Any]]:
    """The examples' records of ``folder/answers.json`` ({} without one)."""
    try:
        return dict(json.loads((folder / ANSWERS).read_text()).get("examples", {}))
    except (OSError, ValueError, AttributeError):
        return {}


def judged(truth: str, answer: str | None) -> dict[str, Any]:
    """An example's record: its truth, the model's answer (None: the model refused it) and
    whether the two agree."""
    return {"truth": truth, "answer": answer, "correct": same_answer(answer, truth)}


_REFUSED: set[str] = set()  # judges whose first refusal was printed (one line each)


def ask(judge: Judge, path: Path) -> str | None:
    """The judge's answer, or None where the model refuses the example (the first refusal
    of each model is printed: an example the model cannot answer is not shipped as
    answered)."""
    try:
        return judge.answer(path)
    except Exception as exc:  # noqa: BLE001 - any refusal makes the candidate unusable
        if judge.model not in _REFUSED:
            _REFUSED.add(judge.model)
            print(f"[examples] {judge.model} could not answer the example {path.name} "
                  f"({exc}); examples it refuses are kept without its answer", flush=True)
        return None


def keep_answered(target: Path, truth: str, candidates: Iterable[C],
                  save: Callable[[C, Path], None], judge: Judge | None,
                  tries: int) -> dict[str, Any]:
    """Write at ``target`` the first of ``candidates`` (at most ``tries``) that ``judge``
    answers with ``truth``; where none is, the first candidate. Returns the example's
    record: ``{"truth"}``, and with a judge its answer (:func:`judged`)."""
    first: C | None = None
    first_answer: str | None = None
    for k, cand in enumerate(candidates):
        if k >= tries:
            break
        if k == 0:
            first = cand
        save(cand, target)
        if judge is None:
            return {"truth": truth}
        answer = ask(judge, target)
        if k == 0:
            first_answer = answer
        if same_answer(answer, truth):
            return judged(truth, answer)
    if first is None:
        raise ValueError(f"no candidate for the example {target.name}")
    save(first, target)
    return judged(truth, first_answer) if judge is not None else {"truth": truth}


def write_class_examples(artifacts: Path, folder: str = "fashion",
                         judge: Judge | None = None) -> None:
    """``examples/<folder>/NN_<class>.png``: one Fashion-MNIST test image of each class
    (nothing when the data set is not installed). With ``judge``, the first of the class's
    test images (up to :data:`CLASS_TRIES`) that the model answers with the class; the
    answers go to ``answers.json``."""
    try:
        test = load_fashion_mnist("test")
    except DatasetNotFoundError:
        return
    out = artifacts / "examples" / folder
    out.mkdir(parents=True, exist_ok=True)

    def save(i: int, path: Path) -> None:
        Image.fromarray(test.images[i]).save(path, format="PNG")

    records = {}
    for c, name in enumerate(test.class_names):
        target = out / f"{c:02d}_{slug(name)}.png"
        candidates = [int(i) for i in np.flatnonzero(test.labels == c)[:CLASS_TRIES]]
        records[target.name] = keep_answered(target, name, candidates, save, judge, CLASS_TRIES)
    write_answers(out, judge, records)


def _face_rows(csv_path: Path, names: Sequence[str] | None) -> list[tuple[Path, str, str]]:
    """(image file, file-name label, truth) of each test face whose file exists, in CSV
    order: the label ``<name>-<name>`` in sequence order or ``real`` with ``names``, else the
    label's numbers."""
    root = csv_path.parent.parent
    with open(csv_path) as fh:
        rows = list(csv.DictReader(fh))
    found = []
    for row in rows:
        src = root / row["file_path"]
        if not src.is_file():
            src = root.parent / row["file_path"]
        if not src.is_file():
            continue
        ids = [int(v) for v in row["label"].strip("[]").split(",") if v.strip()]
        if names is not None:
            seq = [names[i - 1] for i in ids if i > 0]
            found.append((src, "-".join(slug(s) for s in seq) if seq else REAL,
                          sequence_text(seq)))
        else:
            label = "-".join(str(i) for i in ids)
            found.append((src, label, label))
    return found


def copy_faces(csv_path: Path, faces_out: Path, n: int = 8,
               names: tuple[str, ...] | list[str] | None = None,
               judge: Judge | None = None) -> None:
    """Save ``n`` test faces of a Seq-DeepFake CSV as PNG, named by their label: with
    ``names`` (class names of ids 1..L), ``NN_<name>-<name>.png`` in sequence order or
    ``NN_real.png``; without, the label's numbers. Without ``judge``, the first ``n``; with
    one, the first ``n`` of the first :data:`FACE_TRIES` that the model answers with their
    true sequence, then (where fewer are) the first ones it answers wrongly, whose answers
    ``answers.json`` records."""
    if faces_out.is_dir():  # faces of an earlier data set must not linger
        shutil.rmtree(faces_out)
    faces_out.mkdir(parents=True)
    rows = _face_rows(csv_path, names)
    chosen: list[tuple[Path, str, dict[str, Any]]] = []
    if judge is None:
        chosen = [(src, label, {"truth": truth}) for src, label, truth in rows[:n]]
    else:
        right, wrong = [], []
        with tempfile.TemporaryDirectory(dir=faces_out) as tmp:
            for src, label, truth in rows[:FACE_TRIES]:
                probe = Path(tmp) / f"00_{label}.png"
                Image.open(src).convert("RGB").save(probe, format="PNG")
                answer = ask(judge, probe)
                record = judged(truth, answer)
                (right if record["correct"] else wrong).append((src, label, record))
                if len(right) >= n:
                    break
        chosen = right[:n] + wrong[:max(0, n - len(right))]
        order = {src: k for k, (src, _, _) in enumerate(rows)}
        chosen.sort(key=lambda c: order[c[0]])
    records = {}
    for k, (src, label, record) in enumerate(chosen):
        name = f"{k:02d}_{label}.png"
        Image.open(src).convert("RGB").save(faces_out / name, format="PNG")
        records[name] = record
    write_answers(faces_out, judge, records)

