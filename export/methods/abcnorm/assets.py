"""ABC-Norm post-export hook: the Fashion-MNIST class examples of the Classifier tab,
chosen so the served classifier answers them with their class."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from app.services import classify as classify_svc
from export.examples import Judge, served_model, write_class_examples

EXAMPLES = "fashion"  # examples/<folder> the Classifier tab shows


def judge(artifacts: Path) -> Judge | None:
    """The served default classifier as the Classifier tab asks it (its top-1 class), or
    None when no classifier is served."""
    found = served_model(artifacts, classify_svc.METHOD, classify_svc.MODEL)
    if found is None:
        return None
    engine, name = found
    return Judge(name, engine.get(name).version,
                 lambda p: classify_svc.classify(engine, p, name).report["top"][0]["class"])


def write_examples(artifacts: Path, runs: list[str] | None = None,
                   options: dict[str, Any] | None = None) -> None:
    write_class_examples(artifacts, EXAMPLES, judge(artifacts))
