"""Bag query tab (qMIL, :mod:`methods.qmil`): ``/query``; CLI ``query``."""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from runtime.engine import Engine

from app.inputs import IMAGE_EXTENSIONS
from app.services import qmil as qmil_svc

if TYPE_CHECKING:
    from app.ui_common import TabContext

TITLE = "Bag query (qMIL)"


def example_word(folder: str) -> str:
    """``2_ankle-boot_holds`` -> "ankle boot" (the example bag's query word)."""
    return folder.split("_")[1].replace("-", " ")


def build(ctx: "TabContext") -> None:
    """The tab's components and events, inside the app's Blocks."""
    import gradio as gr

    from app.ui_common import (Dropdown, SafeFile, answer_headline, example_expected,
                               example_truth, file_path, guard, model_summary)
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
        r = res.report
        finding = f"{r['raw_answer'].upper()}: P(bag holds '{r['query']}') = {r['probability']:.3f}"
        text = answer_headline(r, finding) + (
            f"Query is {r['query_kind']}. Top instance: #{r['top_instance']} of {r['bag_size']}.")
        if r.get("warning"):
            near = ", ".join(f"'{c['query']}' ({c['cosine']:.2f})" for c in r["closest_training_queries"])
            text += f"\n\n**Caution:** {r['warning']} Closest training queries (cosine): {near}."
        classes = [example_truth(p) for p in paths]
        if classes and all(classes):  # example files: each is named with its class
            where = [i + 1 for i, c in enumerate(classes) if c == r["query"]]
            text += (f"\n\n**Truth (examples' names):** the bag "
                     + (f"holds '{r['query']}' (instance {', '.join(map(str, where))})" if where
                        else f"holds no '{r['query']}'"))
        out = ctx.outputs.new("query")
        return text, out.gallery(res.tiles, "instance"), r, out.json(r, "query")

    with gr.Tab("Bag query (qMIL)"):
        with gr.Row():
            with gr.Column():
                q_files = SafeFile(file_count="multiple", label="Bag: several images, or one video",
                                   elem_id="query-input")
                q_word = gr.Textbox(label="Query word", placeholder="e.g. sneaker, bag, trouser, boot",
                                    elem_id="query-word")
                default = pick_model(ctx.served(), qmil_svc.MODEL, None)
                q_model = Dropdown(choices(), value=default, label="Model", elem_id="query-model",
                                   allow_custom_value=True)
                q_card = gr.Markdown(model_summary(ctx.engine, default))
                q_btn = gr.Button("Ask", variant="primary", elem_id="query-btn")
            with gr.Column():
                q_text = gr.Markdown()
                q_gal = gr.Gallery(label="Instances by attention (bar = beta, red frame = top)",
                                   columns=6, height=360)
                q_json = gr.JSON(label="Report", elem_id="query-json")
                q_file = gr.File(label="Download JSON")
        if (ctx.examples / "bags").is_dir():
            bags = sorted(p for p in (ctx.examples / "bags").iterdir() if p.is_dir())[:4]
            q_expect = gr.Textbox(label="expected answer", visible=False)
            gr.Examples([[sorted(str(f) for f in b.glob("*.png")), example_word(b.name),
                          example_expected(b)] for b in bags], [q_files, q_word, q_expect],
                        label="Examples (expected answer: the served model's, checked at "
                              "export; the folder name says whether the bag holds the word)")
        q_model.change(lambda n: model_summary(ctx.engine, n), [q_model], [q_card],
                       api_name=False)
        ctx.on_load.append((lambda: Dropdown(choices=choices()), [q_model]))
        q_btn.click(query, [q_files, q_word, q_model], [q_text, q_gal, q_json, q_file],
                    api_name="query")


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
