"""What every tab shares: the error guard, JSON downloads, safe image uploads, file paths.

A tab module (``app/tabs/<name>.py``, named by its method's descriptor) builds its
components inside :func:`app.ui.build_ui`'s Blocks with a :class:`TabContext`.
"""
from __future__ import annotations

import functools
import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import gradio as gr

from app.inputs import InputError
from runtime.engine import Engine, ModelUnavailableError

log = logging.getLogger("replens.ui")


@dataclass
class TabContext:
    """What a tab gets: the engine, the face detector (built on first use), the examples
    folder, and the manifest names of the models of its method that can be served."""
    engine: Engine
    detector: Callable[[], Any]
    examples: Path
    models: list[str]


def save_report(report: dict[str, Any], name: str) -> str:
    """Write a JSON report to a temp file for download."""
    fd, path = tempfile.mkstemp(prefix=f"replens-{name}-", suffix=".json")
    with open(fd, "w") as fh:
        json.dump(report, fh, indent=2, default=str)
    return path


def guard(fn: Callable) -> Callable:
    """Turn expected errors into gr.Error messages; log unexpected ones without a traceback
    in the page. The wrapper keeps ``fn``'s signature, so the API's parameters have its
    names (``image``, ``threshold``, ...) rather than ``param_0``."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any):
        try:
            return fn(*args, **kwargs)
        except (InputError, ModelUnavailableError) as exc:
            raise gr.Error(str(exc), print_exception=False) from None
        except gr.Error:
            raise
        except Exception as exc:  # keep serving; details go to the server log only
            log.exception("unexpected error in %s", fn.__name__)
            raise gr.Error(f"Internal error ({type(exc).__name__}); the app is still running. "
                           f"See the server log for details.", print_exception=False) from None
    return wrapper


class SafeImage(gr.Image):
    """An image upload whose bad files reach our validation (and its clear message)
    instead of failing inside Gradio's own decoding with a generic error. It renders with
    Gradio's own Image front end (``is_template`` + the Image class id)."""

    is_template = True

    @classmethod
    def get_component_class_id(cls) -> str:
        return gr.Image.get_component_class_id()

    def preprocess(self, payload):  # type: ignore[override]
        try:
            return super().preprocess(payload)
        except Exception:  # noqa: BLE001 - app.inputs.load_image explains what is wrong
            return getattr(payload, "path", None)


def example_truth(path: Any) -> str | None:
    """The truth an example file is named with (``NN_<truth>.png``, ``-`` for spaces), or
    None for a file that is not named that way: ``03_ankle-boot.png`` -> "ankle boot"."""
    import re

    m = re.fullmatch(r"\d{2}_(.+)", Path(str(path)).stem) if path else None
    return m.group(1).replace("-", " ") if m else None


def file_path(f: Any) -> Any:
    """Gradio file values may be paths or objects with .name/.path."""
    if f is None:
        return None
    return getattr(f, "path", None) or getattr(f, "name", None) or f
