"""What every tab shares: the request guard, the answer files, quiet inputs, file paths.

A tab module (``app/tabs/<name>.py``, named by its method's descriptor) builds its
components inside :func:`app.ui.build_ui`'s Blocks with a :class:`TabContext`.

:func:`guard` wraps every endpoint: it runs the request under the time limit
(``request_timeout_s``; a request over it is stopped - its onnxruntime runs are terminated,
batches and video decoding stop at their next file or frame - and answered with a message
once its work has stopped, so its concurrency slot is never given to another request while
the work goes on), turns the user's mistakes into
a one-line log entry and a ``gr.Error`` message, and gives an unexpected failure an error id
that is both in the user's message and beside the traceback in the server log.
"""
from __future__ import annotations

import contextvars
import functools
import logging
import os
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import gradio as gr
from gradio.data_classes import ListFiles

from app.inputs import InputError
from app.outputs import OutputError, OutputStore
from app.settings import current as settings
from runtime.deadline import Deadline, RequestTimeout, using
from runtime.engine import Engine, ModelUnavailableError
from runtime.manifest import trained_on

log = logging.getLogger("replens.ui")

# what a user can cause and fix: one line in the log, the message on the page
EXPECTED = (InputError, ModelUnavailableError, OutputError, RequestTimeout)


@dataclass
class TabContext:
    """What a tab gets: the engine, the face detector (built on first use), the examples
    folder, the manifest names of the models of its method that can be served, and the
    store its answers' files are written to (:mod:`app.outputs`)."""
    engine: Engine
    detector: Callable[[], Any]
    examples: Path
    models: list[str]
    outputs: OutputStore
    method: str = ""
    # (fn, outputs) run on every page load: choices that depend on models exported later
    on_load: list[tuple[Callable[[], Any], list[Any]]] = field(default_factory=list)
    # the background build's status (app.build.read_status), None when there is none
    build_status: Callable[[], dict[str, Any] | None] | None = None
    # (fn, outputs) run on every page load and while the build runs (the model lines)
    live: list[tuple[Callable[[], Any], list[Any]]] = field(default_factory=list)

    def state_markdown(self, model: str | None) -> str:
        """The model line of ``model`` (:func:`model_state_markdown`) with the build's
        status now."""
        return model_state_markdown(self.engine, model,
                                    self.build_status() if self.build_status else None)

    def header(self, subtitle: str, guide: str, default: str | None) -> Any:
        """A tab's first lines: the method and thesis chapter (``subtitle``), a one-line
        guide (what to upload, what comes back, what the model knows) and the model line of
        ``default`` (its state; refreshed on page load and while the build runs). Returns
        the model line's component."""
        gr.Markdown(f"_{subtitle}_\n\n{guide}", elem_classes=["tab-guide"])
        line = gr.Markdown(self.state_markdown(default), elem_classes=["model-line"],
                           elem_id=f"{self.method}-model-line")
        return line

    def served(self) -> list[str]:
        """The servable models of this tab's method now (the manifest can change)."""
        return self.engine.served(self.method)

    def labels(self, model: str) -> list[str]:
        """The class names of ``model`` now ([] while it is not exported)."""
        self.engine.names()
        return list(self.engine.manifest["models"].get(model, {}).get("labels", []))


def api_output(component: Any, name: str) -> Any:
    """``component`` with ``name`` as its name among an endpoint's outputs in
    ``view_api()`` (:class:`app.ui.Page`); the page keeps its label. Returns ``component``."""
    component.api_output_name = name
    return component


def served_models(engine: Engine, method: str) -> list[str]:
    """Manifest names of the servable models of ``method``, in manifest order."""
    return engine.served(method)


def error_id() -> str:
    """A short id that ties a user's error message to its server log line."""
    return uuid.uuid4().hex[:8]


def _answer(endpoint: str, exc: BaseException) -> gr.Error:
    """The message for a failed request (and its log line)."""
    if isinstance(exc, EXPECTED):
        log.info("/%s refused: %s", endpoint, " ".join(str(exc).split()))
        return gr.Error(str(exc), print_exception=False)
    if isinstance(exc, gr.Error):
        log.info("/%s refused: %s", endpoint, " ".join(str(exc.message).split()))
        return gr.Error(exc.message, print_exception=False)
    eid = error_id()
    log.error("/%s failed unexpectedly [error id %s]", endpoint, eid, exc_info=exc)
    return gr.Error(f"Internal error ({type(exc).__name__}) [error id {eid}]; the app is still "
                    f"running. If you report it, give this id: it marks the details in the "
                    f"server log.", print_exception=False)


def guard(fn: Callable) -> Callable:
    """An endpoint under the request time limit, with expected errors as messages.

    ``fn`` runs in a worker thread under a :class:`Deadline` of ``request_timeout_s``. Past
    it the deadline is cancelled (running onnxruntime calls are terminated; batches and video
    decoding check it per file and frame) and the request waits for the worker to stop, at
    most as long again, before it answers: the request holds its concurrency slot until then.
    A batch that stopped at the limit answers with its rows so far; other work answers with
    the time-limit message. A worker still running after that wait is logged as a warning.

    The wrapper keeps ``fn``'s signature, so the API's parameters have its names (``image``,
    ``threshold``, ...) rather than ``param_0``; the endpoint is named after ``fn``."""
    endpoint = fn.__name__

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any):
        limit = settings().request_timeout_s
        deadline = Deadline(limit)
        box: dict[str, Any] = {}
        context = contextvars.copy_context()  # Gradio's request context goes along

        def work() -> None:
            try:
                with using(deadline):
                    box["value"] = fn(*args, **kwargs)
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting request
                box["error"] = exc

        worker = threading.Thread(target=context.run, args=(work,), daemon=True,
                                  name=f"replens-{endpoint}")
        worker.start()
        worker.join(limit)
        if worker.is_alive():  # over the limit: stop the work, keep the slot until it stopped
            deadline.cancel()
            worker.join(limit)
            if worker.is_alive():
                log.warning("/%s still ran %g s after its time limit; its slot is freed while "
                            "it runs on", endpoint, limit)
        if "value" not in box and (worker.is_alive() or deadline.expired()
                                   or isinstance(box.get("error"), RequestTimeout)):
            raise _answer(endpoint, RequestTimeout(
                f"The request took longer than the limit of {limit:g} s and was stopped. Try "
                f"a smaller input (fewer images or frames, a smaller photo); the limit is the "
                f"request_timeout_s setting.")) from None
        if "error" in box:
            raise _answer(endpoint, box["error"]) from None
        return box["value"]
    return wrapper


def _quietly(preprocess: Callable) -> Callable:
    """A component's ``preprocess`` whose own input checks (a slider value out of range, a
    choice not in the list) are logged as one line instead of printed with a traceback."""

    def wrapped(self, payload):  # type: ignore[no-untyped-def]
        try:
            return preprocess(self, payload)
        except gr.Error as exc:
            log.info("input %r refused: %s", getattr(self, "label", "?"),
                     " ".join(str(exc.message).split()))
            raise gr.Error(exc.message, print_exception=False) from None
    return wrapped


# Subclasses render with their Gradio parent's front end (``is_template``, the parent's id).
class Slider(gr.Slider):
    """gr.Slider with quiet range checks."""

    is_template = True
    preprocess = _quietly(gr.Slider.preprocess)

    @classmethod
    def get_component_class_id(cls) -> str:
        return gr.Slider.get_component_class_id()


class Number(gr.Number):
    """gr.Number with quiet range checks."""

    is_template = True
    preprocess = _quietly(gr.Number.preprocess)

    @classmethod
    def get_component_class_id(cls) -> str:
        return gr.Number.get_component_class_id()


class Dropdown(gr.Dropdown):
    """gr.Dropdown with a quiet choice check."""

    is_template = True
    preprocess = _quietly(gr.Dropdown.preprocess)

    @classmethod
    def get_component_class_id(cls) -> str:
        return gr.Dropdown.get_component_class_id()


NOT_UPLOADED = ("This file was not uploaded to this server; upload it with the page or "
                "gradio_client's handle_file.")


def upload_folder() -> Path:
    """This server's upload folder, resolved: where Gradio stores the files a page or
    gradio_client uploads (``GRADIO_TEMP_DIR``, else ``gradio`` in the system temp folder)."""
    from gradio.utils import get_upload_folder

    return Path(get_upload_folder()).resolve()


def uploaded(path: Any) -> str:
    """The file a request names, as a resolved path (symlinks followed, ``..`` normalised),
    if it is a file inside :func:`upload_folder`.

    Raises:
        gr.Error: :data:`NOT_UPLOADED` for anything else (a path elsewhere, a folder, a URL,
            a file that does not exist), the same line whatever the path is, so an answer
            tells nothing about the server's files.
    """
    try:
        resolved = Path(os.fspath(path)).resolve()
        inside = resolved.is_relative_to(upload_folder()) and resolved.is_file()
    except (TypeError, ValueError, OSError, RuntimeError):  # not a path, a link loop
        inside = False
    if not inside:
        log.info("input refused: a file that was not uploaded to this server")
        raise gr.Error(NOT_UPLOADED, print_exception=False)
    return str(resolved)


PLAIN_PATH = ("A file input got a plain path string, which is not uploaded: with "
              "gradio_client, wrap it as handle_file(path) (from gradio_client import "
              "handle_file) so that the file is uploaded; or upload it with the page.")


def _has_plain_path(value: Any) -> bool:
    """True for a request's file value that is a bare string (or a list holding one): a
    path or URL sent without gradio_client's ``handle_file``."""
    return isinstance(value, str) or (isinstance(value, list)
                                      and any(isinstance(v, str) for v in value))


@functools.cache
def _refusing_plain_paths(model: type) -> type:
    """``model`` (a component's Gradio data model) refusing a bare path string with
    :data:`PLAIN_PATH` as the answer (``gr.Error``), before pydantic's own validation
    error, which the API would answer with a generic message. Same name, docstring and
    JSON schema as ``model``."""

    def model_validate(cls: type, obj: Any, *args: Any, **kwargs: Any) -> Any:
        if _has_plain_path(obj):
            log.info("input refused: a plain path instead of an uploaded file")
            raise gr.Error(PLAIN_PATH, print_exception=False)
        return super(refusing, cls).model_validate(obj, *args, **kwargs)

    refusing = type(model.__name__, (model,), {
        "__module__": model.__module__, "__qualname__": model.__qualname__,
        "__doc__": model.__doc__, "model_validate": classmethod(model_validate)})
    return refusing


class _UploadsOnly:
    """What the file inputs share: Gradio never fetches a URL a request names for them
    (it would download it into the upload folder before :func:`uploaded` sees the path),
    and a bare path string is answered with how to upload it (:data:`PLAIN_PATH`)."""

    # rendered by the front end of the Gradio component this is mixed into
    is_template = True

    @classmethod
    def _gradio_base(cls) -> type:
        """The Gradio component this is mixed into (the first Gradio class of the MRO)."""
        return next(c for c in cls.__mro__ if c.__module__.startswith("gradio."))

    def get_block_name(self) -> str:
        """The front end to render with (Gradio names a template after its first base
        class, which is this mixin)."""
        return self._gradio_base().__name__.lower()

    @classmethod
    def get_component_class_id(cls) -> str:
        return cls._gradio_base().get_component_class_id()

    @property
    def data_model(self) -> Any:
        """The component's Gradio data model (gr.Image: ImageData; gr.File sets its own),
        refusing bare path strings (:func:`_refusing_plain_paths`)."""
        model = self.__dict__.get("_data_model")
        if model is None:
            model = getattr(super(), "data_model", None)
        return None if model is None else _refusing_plain_paths(model)

    @data_model.setter
    def data_model(self, model: Any) -> None:
        self.__dict__["_data_model"] = model

    async def async_move_resource_to_block_cache(self, url_or_file_path: Any) -> str | None:
        from gradio_client.utils import is_http_url_like

        if url_or_file_path is not None and is_http_url_like(str(url_or_file_path)):
            log.info("input refused: a URL instead of an uploaded file")
            raise gr.Error(NOT_UPLOADED, print_exception=False)
        parent: Any = super()  # the Gradio component this is mixed into
        return await parent.async_move_resource_to_block_cache(url_or_file_path)


class SafeImage(_UploadsOnly, gr.Image):
    """An image input that hands the endpoint the uploaded file itself: its path in the
    upload folder (:func:`uploaded`), the bytes the user sent, never decoded or re-encoded
    here, so that :func:`app.inputs.load_image` checks its size from the header before any
    decoding and a case report's sha256 is the user's file's. Anything but an upload is
    refused (its value is always that path, whatever ``type`` and ``image_mode`` say). It
    renders with Gradio's own Image front end (``is_template`` + the Image class id), which
    shows the upload as its preview."""

    def preprocess(self, payload):  # type: ignore[override]
        if payload is None:
            return None
        return uploaded(getattr(payload, "path", None))


class SafeFile(_UploadsOnly, gr.File):
    """A file input (one or several files) that takes uploads only (:func:`uploaded`); its
    value is the uploaded files' paths."""

    def preprocess(self, payload):  # type: ignore[override]
        if payload is None:
            return None
        files = list(payload) if isinstance(payload, ListFiles) else [payload]
        for f in files:
            f.path = uploaded(getattr(f, "path", None))
        return super().preprocess(payload)


class SafeVideo(_UploadsOnly, gr.Video):
    """A video input that takes an upload only (:func:`uploaded`), handed on as it was sent
    (no conversion: ``format`` None, sound kept)."""

    def preprocess(self, payload):  # type: ignore[override]
        if payload is None:
            return None
        payload.path = uploaded(getattr(payload, "path", None))
        return super().preprocess(payload)


def headline_metrics(metrics: dict[str, Any], n: int = 4) -> str:
    """The first ``n`` overall test metrics of a manifest entry ("bag_acc 0.941, ...";
    per-class ``a/b`` keys left out)."""
    shown = [(k, v) for k, v in metrics.items() if "/" not in k and isinstance(v, float)][:n]
    return ", ".join(f"{k} {v:.3f}" for k, v in shown)


def model_summary(engine: Engine, name: str | None, max_labels: int = 12) -> str:
    """One paragraph on the model a tab has chosen, from its manifest entry: version,
    variant, what it was trained on, its measured test metrics and its classes (every
    model's card: the Models tab; the generated cards: ``python -m export.model_cards``)."""
    if not name:
        return "No model of this tab is exported yet."
    engine.names()  # refresh the manifest
    e = engine.manifest.get("models", {}).get(name)
    if not e:
        return f"Model `{name}` is not exported yet."
    trained = trained_on(e) or "its training data"
    labels = list(e.get("labels", []))
    more = f" (+{len(labels) - max_labels} more)" if len(labels) > max_labels else ""
    parts = [f"**{name}** (`{e.get('version', '?')}`, variant {e.get('variant', '?')}): "
             f"trained on {trained}"]
    if headline_metrics(e.get("metrics", {})):
        parts.append(f"test {headline_metrics(e.get('metrics', {}))}")
    if labels:
        parts.append(f"{len(labels)} classes: " + ", ".join(labels[:max_labels]) + more)
    learned = e.get("learned") or {}
    if learned.get("at_chance"):
        return (f"> **Warning: this model did not learn: answers are not meaningful** (held-out "
                f"{learned['metric']} {learned['value']:.3f}, chance {learned['chance']:.3f}).\n\n"
                + "; ".join(parts) + ".")
    return "; ".join(parts) + "."


def domain_warning(report: dict[str, Any]) -> str:
    """The warning shown above an answer whose input is out of the model's domain (markdown;
    empty when it is in domain or the model has no domain check)."""
    dom = report.get("domain")
    if dom and "instances" in dom:  # a bag: the bag's answer and the images that are out
        out = [a["instance"] for a in report.get("attention", []) if not a.get("in_domain", True)]
        if dom["in_domain"] and not out:
            return ""
        names = ", ".join(f"#{i}" for i in sorted(out))
        if not dom["in_domain"]:
            return (f"> **Warning: {len(out)} of the {dom['instances']} images of this bag are "
                    f"unlike the data this model was trained on** "
                    f"({dom.get('trained_on') or 'its training data'}): {names}; **the answer "
                    f"below is unreliable.** (median domain score {dom['score']:.3g} > "
                    f"threshold {dom['threshold']:.3g})\n\n")
        return (f"> Note: images {names} are unlike the data this model was trained on "
                f"({dom.get('trained_on') or 'its training data'}); their attention is "
                f"unreliable.\n\n")
    if not dom or dom.get("in_domain", True):
        return ""
    return (f"> **Warning: this image is unlike the data this model was trained on** "
            f"({dom.get('trained_on') or 'its training data'}); **the answer below is "
            f"unreliable.** ({_domain_detail(dom)})\n\n")


def _domain_detail(dom: dict[str, Any]) -> str:
    """Which score of an out-of-domain check is over its threshold: the model's features'
    ("domain score 812 > threshold 316") and/or the generic image statistics'."""
    parts = []
    if dom["score"] > dom["threshold"]:
        parts.append(f"domain score {dom['score']:.3g} > threshold {dom['threshold']:.3g}")
    if dom.get("generic_score") is not None and dom["generic_score"] > dom["generic_threshold"]:
        parts.append(f"generic image score {dom['generic_score']:.3g} > threshold "
                     f"{dom['generic_threshold']:.3g}")
    return "; ".join(parts) or (f"domain score {dom['score']:.3g}, threshold "
                                f"{dom['threshold']:.3g}")


def answer_headline(report: dict[str, Any], finding: str) -> str:
    """The top of an answer (markdown): ``finding`` (the model's answer, e.g. "MANIPULATED
    (fake probability 0.873)") as the heading when the domain check measured the input in
    domain; otherwise the heading says there is no reliable verdict (out of domain, or no
    check for the model: :mod:`app.services.reliability`), the check's details follow, and
    ``finding`` comes below them marked as the model's raw output."""
    from app.services import reliability as rel

    if rel.reliability(report.get("domain")) == rel.IN_DOMAIN:
        return domain_warning(report) + f"## {finding}\n"
    head = report.get("headline") or rel.unreliable_headline(
        rel.reliability(report.get("domain")))
    return (f"## {head}\n\n" + domain_warning(report)
            + f"**{rel.RAW_MARK[0].upper() + rel.RAW_MARK[1:]}:** {finding}\n")


def example_truth(path: Any) -> str | None:
    """The truth an example file is named with (``NN_<truth>.png``, ``-`` for spaces), or
    None for a file that is not named that way: ``03_ankle-boot.png`` -> "ankle boot"."""
    import re

    m = re.fullmatch(r"\d{2}_(.+)", Path(str(path)).stem) if path else None
    return m.group(1).replace("-", " ") if m else None


EXAMPLE_ANSWERS = "answers.json"  # beside the examples, written at export (export.examples)


def example_expected(path: Any) -> str:
    """What the served model answers for a shipped example (a file, or a bag's folder), as
    the examples table shows it: the answer recorded at export in ``answers.json`` beside
    it, with the truth beside it where the two differ (``"sandal (truth: sneaker)"``);
    without a record, the truth of its name (a bag's folder ``0_sneaker_holds``: "yes");
    "" for neither."""
    import json
    import re

    p = Path(str(path))
    try:
        record = json.loads((p.parent / EXAMPLE_ANSWERS).read_text())["examples"][p.name]
    except (OSError, ValueError, KeyError, TypeError):
        record = None
    if not record:
        bag = re.fullmatch(r"\d+_.+_(holds|lacks)", p.name)  # a bag's folder names its truth
        return example_truth(p) or ({"holds": "yes", "lacks": "no"}[bag.group(1)] if bag else "")
    truth, answer = str(record.get("truth", "")), record.get("answer")
    if answer is None:
        return truth
    return str(answer) if record.get("correct") else f"{answer} (truth: {truth})"


def file_path(f: Any) -> Any:
    """Gradio file values may be paths or objects with .name/.path."""
    if f is None:
        return None
    return getattr(f, "path", None) or getattr(f, "name", None) or f


# --- the answer card: a plain-language answer first, rendered from the service's answer ---
CONFIDENCE_WORDS = ((0.9, "high"), (0.7, "moderate"), (0.0, "low"))
PLACEHOLDER = "_The answer appears here._"


def confidence_words(p: float) -> str:
    """How sure an answer is, in words, from the probability of the answer given: "high"
    (0.9 or more), "moderate" (0.7 or more), "low" (less)."""
    return next(word for bound, word in CONFIDENCE_WORDS if p >= bound)


def confidence_line(p: float, detail: str) -> str:
    """The card's confidence line: ``**Confidence: high** (fake probability 0.93)``."""
    return f"**Confidence: {confidence_words(p)}** ({detail})"


def _sentence(text: str) -> str:
    """``text`` with its first letter upper-case."""
    return text[:1].upper() + text[1:]


def model_line(report: dict[str, Any]) -> str:
    """Which model answered and what it was trained on (from the answer itself)."""
    trained = report.get("trained_on") or (report.get("domain") or {}).get("trained_on")
    name = report.get("model", "?")
    return f"**Model:** `{name}`" + (f", trained on {trained}" if trained else "")


def answer_card(report: dict[str, Any], title: str, lines: list[str], raw: str) -> str:
    """An answer's card (markdown). In domain: ``## title``, then ``lines`` (confidence,
    what the answer means), the model and what it was trained on. Without a basis for a
    verdict (``reliable`` false: :mod:`app.services.reliability`): ``## No reliable
    verdict``, why (the answer's ``headline``), the domain warning, and ``raw`` (the model's
    own answer) marked as its raw output."""
    from app.services import reliability as rel

    if report.get("reliable"):
        body = [domain_warning(report).strip()] if domain_warning(report) else []
        body += [*lines, model_line(report)]
        return f"## {title}\n\n" + "\n\n".join(body) + "\n"
    why = str(report.get("headline", ""))
    why = why.split(": ", 1)[1] if why.startswith("no reliable verdict: ") else why
    body = [_sentence(why) + "."]
    if domain_warning(report):
        body.append(domain_warning(report).strip())
    body += [f"**{_sentence(rel.RAW_MARK)}:** {raw}", model_line(report)]
    return "## No reliable verdict\n\n" + "\n\n".join(body) + "\n"


def model_state(engine: Engine, name: str | None,
                build: dict[str, Any] | None = None) -> tuple[str, str]:
    """(state, one line on it) of a tab's model: ``ready``, ``building``, ``failed``,
    ``at chance`` (its training marked it ``learned.at_chance``), ``imported`` (published
    weights, ``imported`` or ``source`` in its manifest entry) or ``not built``.

    ``build`` is the background build's status (:func:`app.build.read_status`), if any."""
    from app.build import describe_run

    if not name:
        return "not built", ("no model of this tab is exported: run `python -m app` (it builds "
                             "the default models) or `python -m export --all` after training")
    run = next((r for r in (build or {}).get("runs", []) if r.get("run") == name), None)
    if run and run["state"] in ("waiting", "training", "exporting"):
        return "building", describe_run(run)
    if run and run["state"] in ("failed", "interrupted"):
        return "failed", (f"{describe_run(run)}; to build it again: "
                          f"`python -m app --build-only --only {name}`")
    try:
        engine.get(name)
    except ModelUnavailableError as exc:
        known = name in engine.manifest.get("models", {})
        fix = (f"re-export it: `python -m export --all`" if known else
               f"build it: `python -m app --build-only --only {name}`")
        return ("failed" if known else "not built"), f"{' '.join(str(exc).split())}; {fix}"
    entry = engine.manifest["models"][name]
    learned = entry.get("learned") or {}
    if learned.get("at_chance"):
        return "at chance", (f"this model did not learn: answers are not meaningful (held-out "
                             f"{learned.get('metric')} {learned.get('value', 0):.3f}, chance "
                             f"{learned.get('chance', 0):.3f})")
    source = _imported_from(entry)
    if source:
        return "imported", f"published weights ({source}), not trained here"
    return "ready", "answers now"


def _imported_from(entry: dict[str, Any]) -> str | None:
    """Where an imported model's weights come from (the ``published`` record that
    ``python -m export.published`` leaves in the entry's ``extra``, or an ``imported`` or
    ``source`` field), or None for a model trained here."""
    for key in ("published", "imported", "source"):
        value = (entry.get(key) or (entry.get("extra") or {}).get(key)
                 or (entry.get("training") or {}).get(key))
        if isinstance(value, dict) and value:
            text = str(value.get("file") or value.get("name") or value.get("source")
                       or value.get("url") or next(iter(value.values())))
            return text if len(text) <= 80 else text[:77] + "..."
        if isinstance(value, str) and value and value not in ("trained", "local"):
            return value
        if value is True:
            return "published"
    return None


STATE_MARK = {"ready": "ready", "imported": "imported", "building": "building",
              "at chance": "at chance - not meaningful", "failed": "FAILED",
              "not built": "not built"}


def model_state_markdown(engine: Engine, name: str | None,
                         build: dict[str, Any] | None = None) -> str:
    """The model line of a tab: the model, its state and, unless it is ready, why and what
    to run (markdown)."""
    state, detail = model_state(engine, name, build)
    head = f"**Model `{name}`: {STATE_MARK[state]}**" if name else f"**Model: {state}**"
    if state in ("ready", "imported"):
        return head + (f" - {detail}; " if state == "imported" else " - ") \
            + model_summary(engine, name).split(": ", 1)[-1]
    return f"{head} - {detail}."
