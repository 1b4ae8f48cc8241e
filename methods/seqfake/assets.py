"""Sequential deepfake post-export hook: example faces for the Face tab.

The first generated (or user) test faces of each task, one folder per task:
``examples/faces`` (components) and ``examples/faces_attr`` (attributes).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from export.examples import copy_faces

EXAMPLE_FOLDERS = (("facial_components", "faces"), ("facial_attributes", "faces_attr"))


def write_examples(artifacts: Path, runs: list[str] | None = None,
                   options: dict[str, Any] | None = None) -> None:
    for task_dir, folder in EXAMPLE_FOLDERS:
        for csv_path in sorted((artifacts / "data").glob(f"**/{task_dir}/annotations/test.csv")):
            copy_faces(csv_path, artifacts / "examples" / folder)
            break
