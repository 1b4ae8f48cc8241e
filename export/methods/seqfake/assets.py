"""Sequential deepfake post-export hook: example faces for the Face tab.

Test faces of the generated (or user) data of each task, one folder per task:
``examples/faces`` (components) and ``examples/faces_attr`` (attributes), each named with
its true sequence (``00_eye-hair.png``, ``03_real.png``), which the Face tab shows. The
faces the served model of the task answers with their true sequence come first; where
fewer are, ``answers.json`` records the model's answer (``export.examples.copy_faces``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from app.services import face as face_svc
from export.examples import Judge, copy_faces, sequence_text, served_model
from training.data.seqdeepfake import names_for

# (data folder, examples folder, task, the model the Face tab shows those examples with)
EXAMPLE_FOLDERS = (("facial_components", "faces", "components", "seqfake"),
                   ("facial_attributes", "faces_attr", "attributes", "seqfake_attr"))


def judge(artifacts: Path, model: str) -> Judge | None:
    """``model`` as the Face tab asks it about an example (a face crop, its own threshold):
    the manipulated components in order, ``real`` for none; None when it is not served."""
    found = served_model(artifacts, face_svc.METHOD, model)
    if found is None or found[1] != model:
        return None
    engine = found[0]

    def answer(path: Path) -> str:
        report = face_svc.analyze_face(engine, None, path, is_crop=True, model_name=model).report
        return sequence_text([s["component"] for s in report["sequence"]])

    return Judge(model, engine.get(model).version, answer)


def write_examples(artifacts: Path, runs: list[str] | None = None,
                   options: dict[str, Any] | None = None) -> None:
    for task_dir, folder, task, model in EXAMPLE_FOLDERS:
        for csv_path in sorted((artifacts / "data").glob(f"**/{task_dir}/annotations/test.csv")):
            copy_faces(csv_path, artifacts / "examples" / folder, names=names_for(task),
                       judge=judge(artifacts, model))
            break
