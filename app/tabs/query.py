"""Bag query tab (qMIL, :mod:`methods.qmil`): ``/query``; CLI ``query``."""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from runtime.engine import Engine

from app.inputs import IMAGE_EXTENSIONS
from app.services import qmil as qmil_svc

if TYPE_CHECKING:
    from app.ui_common import TabContext

TITLE = "Find a word in a bag of images"
SUBTITLE = "Query-based multiple-instance learning (qMIL) - thesis chapter 2"
GUIDE = ("Upload several images (a bag) or one video, and type a word; you get whether any "
         "image shows it and which one most likely. The default model knows Fashion-MNIST "
         "clothing (t-shirt, trouser, sneaker, bag, ...), small greyscale pictures.")


def example_word(folder: str) -> str:
    """``2_ankle-boot_holds`` -> "ankle boot" (the example bag's query word)."""
    return folder.split("_")[1].replace("-", " ")


def build(ctx: "TabContext") -> None:
    """The tab's components and events, inside the app's Blocks."""
    import gradio as gr

    from app.ui_common import (PLACEHOLDER, Dropdown, SafeFile, api_output, example_expected,
                               example_truth, file_path, guard)
    from runtime.engine import pick_model

    def choices() -> list[str]:
        return ctx.served() or [qmil_svc.MODEL]

    @guard
    def query(files, word, model_name=qmil_svc.MODEL):
        """Does the bag of images hold what the query word names?"""
        model = pick_model(ctx.served(), qmil_svc.MODEL, model_name)
        paths = [file_path(f) for f in (files or [])]
        if len(paths) == 1 and str(paths[0]).lower().endswith((".mp4", ".avi", ".mov", ".mkv", ".webm")):
            from app.services.video import video_bag

            res = qmil_svc.query_bag(ctx.engine, None, word, images=video_bag(paths[0]),
                                     model_name=model)
        else:
            res = qmil_svc.query_bag(ctx.engine, paths, word, model_name=model)
        text = query_card(res.report)
        r = res.report
        classes = [example_truth(p) for p in paths]
        if classes and all(classes):  # example files: each is named with its class
            where = [i + 1 for i, c in enumerate(classes) if c == r["query"]]
            text += (f"\n**Truth (examples' names):** the bag "
                     + (f"holds '{r['query']}' (instance {', '.join(map(str, where))})" if where
                        else f"holds no '{r['query']}'"))
        out = ctx.outputs.new("query")
        return text, out.gallery(res.tiles, "instance"), r, out.json(r, "query")

    default = pick_model(ctx.served(), qmil_svc.MODEL, None)
    with gr.Tab(TITLE, elem_id="tab-query"):
        q_card = ctx.header(SUBTITLE, GUIDE, default)
        with gr.Row():
            with gr.Column(scale=2):
                q_files = SafeFile(file_count="multiple", label="Bag: several images, or one video",
                                   elem_id="query-input")
                q_word = gr.Textbox(label="Query word", placeholder="e.g. sneaker, bag, trouser, boot",
                                    elem_id="query-word")
                q_model = Dropdown(choices(), value=default, label="Model", elem_id="query-model",
                                   allow_custom_value=True)
                q_btn = gr.Button("Ask", variant="primary", elem_id="query-btn")
            with gr.Column(scale=3):
                q_text = api_output(gr.Markdown(PLACEHOLDER, elem_id="query-answer",
                                                elem_classes=["answer-card"]), "answer")
                q_gal = api_output(gr.Gallery(
                    label="The images, most attended first (bar: attention; red frame: the "
                          "image that most likely holds the word)", columns=6, height=360,
                    visible=False), "instances")
                with gr.Accordion("Details (JSON)", open=False, elem_id="query-details"):
                    q_json = api_output(gr.JSON(label="Report", elem_id="query-json"), "report")
                    q_file = api_output(gr.File(label="Download JSON"), "json_file")
        if (ctx.examples / "bags").is_dir():
            bags = sorted(p for p in (ctx.examples / "bags").iterdir() if p.is_dir())[:4]
            q_expect = gr.Textbox(label="expected answer", visible=False)
            gr.Examples([[sorted(str(f) for f in b.glob("*.png")), example_word(b.name),
                          example_expected(b)] for b in bags], [q_files, q_word, q_expect],
                        label="Examples (expected answer: the served model's, checked at "
                              "export; the folder name says whether the bag holds the word)")
        q_model.change(ctx.state_markdown, [q_model], [q_card], api_name=False)
        ctx.on_load.append((lambda: Dropdown(choices=choices()), [q_model]))
        ctx.live.append((lambda: ctx.state_markdown(default), [q_card]))
        q_btn.click(query, [q_files, q_word, q_model], [q_text, q_gal, q_json, q_file],
                    api_name="query").success(lambda: gr.Gallery(visible=True), None, [q_gal],
                                              api_visibility="private")


def query_card(r: dict[str, Any]) -> str:
    """The answer card of a bag query (markdown), from the service's answer: "Yes: image 3
    most likely holds a sneaker" / "No: no image seems to hold a sneaker", the confidence,
    whether the word was a training query (a zero-shot word's caution), the model."""
    from app.ui_common import answer_card, confidence_line

    word, p, top = r["query"], float(r["probability"]), r.get("top_instance")
    yes = r.get("raw_answer", r.get("answer")) == "yes"
    a = f"{'an' if word[:1].lower() in 'aeiou' else 'a'} {word}"
    title = (f"Yes: image {top} most likely holds {a}" if yes
             else f"No: no image seems to hold {a}")
    lines = [confidence_line(p if yes else 1 - p,
                             f"probability that the bag holds {a}: {p:.3f}"),
             f"The word is {r.get('query_kind', '?')}; image {top} of {r.get('bag_size', '?')} "
             f"got the most attention."]
    if r.get("warning"):
        near = ", ".join(f"'{c['query']}' ({c['cosine']:.2f})"
                         for c in r.get("closest_training_queries", []))
        lines.append(f"**Caution:** {r['warning']} Closest training queries (cosine): {near}.")
    raw = (f"{'YES' if yes else 'NO'}: P(bag holds '{word}') = {p:.3f}; image {top} got the "
           f"most attention")
    card = answer_card(r, title, lines, raw)
    if not r.get("reliable") and r.get("warning"):
        card += "\n" + lines[-1] + "\n"
    return card


# --- CLI and load-test requests ------------------------------------------------------------
VIDEO_EXT = (".mp4", ".avi", ".mov", ".mkv", ".webm")


def add_cli(sub: argparse._SubParsersAction) -> None:
    q = sub.add_parser("query", help="ask whether a bag holds a query word")
    q.add_argument("--bag", required=True, help="folder of images, or a video file")
    q.add_argument("--word", required=True)
    q.add_argument("--model", default=qmil_svc.MODEL, help="a qMIL model of the manifest")


def run_cli(args: argparse.Namespace, engine: Engine) -> dict[str, Any] | None:
    if args.cmd != "query":
        return None
    from pathlib import Path

    from app.inputs import InputError

    bag = Path(args.bag)
    if bag.is_file() and bag.suffix.lower() in VIDEO_EXT:
        from app.services.video import video_bag

        return qmil_svc.query_bag(engine, None, args.word, images=video_bag(bag),
                                  model_name=args.model).report
    if not bag.is_dir():
        raise InputError(f"--bag must be a folder of images or a video file: {bag}")
    files = sorted(p for p in bag.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    return qmil_svc.query_bag(engine, files, args.word, model_name=args.model).report


def load_requests(lc: Any) -> list[Any]:
    """What the load test sends: the example bags with their words, a bag of photographs;
    hostile: a bag holding a text file, a query that is not a word."""
    from app.loadmix import Request

    def key(r):
        return r[2]["answer"], r[2]["probability"], r[2]["attention"]

    bags = sorted(p for p in (lc.examples / "bags").iterdir() if p.is_dir()) \
        if (lc.examples / "bags").is_dir() else []
    if qmil_svc.MODEL not in lc.served or not bags:
        return []
    out = [Request("/query", ([lc.file(p) for p in sorted(b.glob("*.png"))], example_word(b.name)),
                   key, label=f"bag {b.name}") for b in bags[:3]]
    out.append(Request("/query", ([lc.file(lc.photos[n]) for n in ("china", "flower", "coffee")],
                                  "sneaker"), key, label="bag of photographs"))
    first = [lc.file(p) for p in sorted(bags[0].glob("*.png"))][:3]
    out += [Request("/query", (first + [lc.file(lc.hostile["text"])], "sneaker"), key, True,
                    "bag with a text file"),
            Request("/query", (first, "zqxjv"), key, True, "query that is not a word")]
    return out
