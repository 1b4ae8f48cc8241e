"""The Gradio UI: one tab per registered method (``app/tabs/``) plus the Models tab.

Stable endpoint names (callable with gradio_client) are declared by the tabs: ``/face``,
``/face_video``, ``/query``, ``/neighbours``, ``/classify``; this module adds ``/status``.
Their outputs have names in ``view_api()`` (``answer``, ``report``, ``json_file``, ...:
:class:`Page`, docs/api.md).
Each returns its JSON report (and pictures); bad input raises ``gr.Error`` with a clear
message, never a traceback.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import gradio as gr

from app import __version__
from app.tabs import tabs
from app.outputs import OutputStore
from app.settings import current as settings, limits as limits_of
from app.ui_common import TabContext, api_output, served_models
from methods import get_method
from runtime.engine import Engine
from runtime.manifest import trained_on

EXAMPLES_DIR = "examples"
INTRO = (
    "# RepLens\n"
    "Check whether a face was edited, find a word in a bag of images, find similar images "
    "and classify an image, with the four methods of Yen-Chi Hsu's thesis *Representation "
    "Learning for Challenging Visual Classification Problems*.\n\n"
    "**What the default models can and cannot do:** they are trained on generated faces "
    "(\"Check a face\") and on Fashion-MNIST clothing, small greyscale pictures (the other "
    "tabs). They answer pictures like those; their answer on a real photograph is not a "
    "finding: a domain check heads an answer on a picture unlike their training data with "
    "**\"No reliable verdict\"** (it misses some: reports/domain.md). For real photographs, "
    "train them on your own data (README, \"Train on your own images\").")


class Page(gr.Blocks):
    """The app's Blocks: an endpoint's outputs are named in ``view_api()`` by the
    ``api_output_name`` of their components (:func:`app.ui_common.api_output`) instead of
    their labels, which the page shows."""

    def get_api_info(self, all_endpoints: bool = False, page: str | None = None) -> Any:
        info = super().get_api_info(all_endpoints=all_endpoints, page=page)
        for fn in self.fns.values():
            endpoint = info["named_endpoints"].get(f"/{fn.api_name}") \
                if isinstance(fn.api_name, str) else None
            if endpoint is None:
                continue
            outputs = [o for o in fn.outputs if not getattr(o, "skip_api", False)]
            if len(outputs) != len(endpoint["returns"]):
                continue
            for out, ret in zip(outputs, endpoint["returns"]):
                ret["label"] = getattr(out, "api_output_name", ret["label"])
        return info


def model_card_markdown(engine: Engine) -> str:
    """A model card per exported model, from the manifest and the method's descriptor."""
    limits = ", ".join(f"{k} {v:g}" for k, v in limits_of(settings()).items())
    lines = [f"**RepLens {__version__}** - artifacts: `{engine.artifacts}`\n",
             f"Serving limits in force (app/serve.yaml, REPLENS_<KEY>, flags): {limits}\n"]
    if engine.manifest_error:
        return "\n".join(lines) + f"\n**No models:** {engine.manifest_error}"
    for name, st in engine.status().items():
        entry = engine.manifest["models"][name]
        lines.append(f"### {name}")
        if st["status"] != "ok":
            lines.append(f"- **unavailable:** {st['error']}")
            continue
        try:
            desc = get_method(entry.get("method", ""))
        except KeyError:
            desc = None
        variant = entry.get("variant")
        lines.append(f"- version `{entry.get('version')}`, provider **{st['provider']}**, "
                     f"opset {entry.get('opset')}, exporter {entry.get('exporter')}"
                     + (f", variant `{variant}`" if variant else ""))
        lines.append(f"- trained on: {trained_on(entry) or '?'}; data config: "
                     f"{entry.get('training', {}).get('data', '?')}")
        metrics = entry.get("metrics", {})
        if metrics:
            lines.append("- test metrics: " + ", ".join(
                f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items()))
        data = entry.get("training", {}).get("data")
        lines.append(f"- limits: {desc.limits_for(data, trained_on(entry)) if desc else 'see docs/'}")
        lines.append(f"- model card: `{desc.docs if desc and desc.docs else 'docs/'}`")
    return "\n".join(lines)


def answer_store() -> OutputStore:
    """Where the answers' files go: inside Gradio's upload/cache folder (served in place),
    bounded by the ``answer_cache_*`` settings."""
    from gradio.utils import get_upload_folder

    s = settings()
    return OutputStore(Path(get_upload_folder()) / "replens-answers", s.answer_cache_answers,
                       s.answer_cache_age_s)


def build_markdown(st: dict[str, Any] | None) -> str:
    """The build queue as Markdown: one line per model, elapsed time and the time left."""
    from app.build import _about, describe_run, optional_runs

    if not st:
        return ""
    done = sum(r["state"] == "ready" for r in st["runs"])
    head = (f"**Building the default models** ({done} of {len(st['runs'])} ready"
            + (f", {_about(st['eta_s'])} in all" if st.get("eta_s") else "") + "). "
            "Tabs answer as soon as their model is ready; no restart needed."
            if st.get("running") else
            f"**Build finished** ({done} of {len(st['runs'])} ready).")
    rows = ["| model | state | elapsed | now |", "|---|---|---|---|"]
    for r in st["runs"]:
        el = f"{r['elapsed_s']:.0f} s" if r.get("elapsed_s") is not None else ""
        rows.append(f"| {r['run']} | {r['state']} | {el} | {describe_run(r)} |")
    listed = {r["run"] for r in st["runs"]}
    extra = [r for r in optional_runs() if r not in listed]
    more = ("\n\nBuilt on request only: " + ", ".join(f"`{r}`" for r in extra)
            + f" (`python -m app --build-only --only {extra[0]}`)") if extra else ""
    return head + "\n\n" + "\n".join(rows) + more


def build_ui(engine: Engine, detector_factory: Callable[[], Any] | None = None,
             banner: str | None = None, outputs: OutputStore | None = None,
             build_status: Callable[[], dict[str, Any] | None] | None = None) -> gr.Blocks:
    """Build the Blocks app. ``detector_factory`` builds the face detector on first use;
    ``banner`` is a warning shown on top of every page (e.g. serving without a login);
    ``outputs`` is where answers' files are written (default :func:`answer_store`);
    ``build_status`` reads the background build's status (:func:`app.build.read_status`):
    while it runs, a panel on top of every page shows the queue, refreshed every 2 s."""
    outputs = outputs or answer_store()
    detector_box: dict[str, Any] = {}

    def detector():
        if detector_factory is None:
            return None
        if "d" not in detector_box:
            detector_box["d"] = detector_factory()
        return detector_box["d"]

    def status():
        """Active provider, versions and availability of every model."""
        models = engine.status()
        return {"app_version": __version__, "artifacts": str(engine.artifacts),
                "manifest_error": engine.manifest_error,
                "manifest_warning": engine.manifest_warning, "limits": limits_of(settings()),
                "build": build_status() if build_status else None, "models": models}

    examples = Path(engine.artifacts) / EXAMPLES_DIR
    with Page(title="RepLens") as demo:
        gr.Markdown(INTRO, elem_id="intro")
        if banner:
            gr.Markdown(f"**{banner}**", elem_id="banner")
        first = build_status() if build_status else None
        queue_md = gr.Markdown(build_markdown(first), elem_id="build-status",
                               visible=bool(first and first.get("running")))
        contexts = []
        for desc, tab in tabs():
            ctx = TabContext(engine, detector, examples, served_models(engine, desc.name),
                             outputs, desc.name, build_status=build_status)
            tab.build(ctx)
            contexts.append(ctx)
        with gr.Tab("Models"):
            cards = gr.Markdown(model_card_markdown(engine))
            s_btn = gr.Button("Status")
            s_json = api_output(gr.JSON(label="Status"), "status")
            s_btn.click(status, None, s_json, api_name="status")
        live = [item for ctx in contexts for item in ctx.live]
        for ctx in contexts:  # model-dependent choices, fresh on every page load
            for fn, outs in ctx.on_load + ctx.live:
                demo.load(fn, None, outs, queue=False, api_visibility="private")
        if build_status is not None:
            timer = gr.Timer(2.0, active=bool(first and first.get("running")))

            def tick():
                st = build_status()
                running = bool(st and st.get("running"))
                return (gr.Markdown(build_markdown(st), visible=running),
                        gr.Markdown(model_card_markdown(engine)), gr.Timer(active=running))

            timer.tick(tick, None, [queue_md, cards, timer], queue=False, api_visibility="private",
                       show_progress="hidden")
            for fn, outs in live:  # the tabs' model lines follow the build
                timer.tick(fn, None, outs, queue=False, api_visibility="private",
                           show_progress="hidden")
            demo.load(tick, None, [queue_md, cards, timer], queue=False, api_visibility="private")
    return demo
