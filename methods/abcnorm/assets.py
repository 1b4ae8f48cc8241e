"""ABC-Norm post-export hook: the Fashion-MNIST class examples of the Classifier tab."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from export.examples import write_class_examples


def write_examples(artifacts: Path, runs: list[str] | None = None,
                   options: dict[str, Any] | None = None) -> None:
    write_class_examples(artifacts)
