"""Sequential deepfake post-export hook: example faces for the Face tab.

The first generated (or user) test faces of each task, one folder per task:
``examples/faces`` (components) and ``examples/faces_attr`` (attributes), each named with
its true sequence (``00_eye-hair.png``, ``03_real.png``), which the Face tab shows.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from export.examples import copy_faces
from training.data.seqdeepfake import names_for

EXAMPLE_FOLDERS = (("facial_components", "faces", "components"),
                   ("facial_attributes", "faces_attr", "attributes"))


def write_examples(artifacts: Path, runs: list[str] | None = None,
                   options: dict[str, Any] | None = None) -> None:
    for task_dir, folder, task in EXAMPLE_FOLDERS:
        for csv_path in sorted((artifacts / "data").glob(f"**/{task_dir}/annotations/test.csv")):
            copy_faces(csv_path, artifacts / "examples" / folder, names=names_for(task))
            break
