"""Retrieval tab (DCL, :mod:`methods.dcl`): ``/neighbours``; CLI ``neighbours``."""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from runtime.engine import Engine

from app.services import retrieval as retrieval_svc

if TYPE_CHECKING:
    from app.ui_common import TabContext

TITLE = "Similar images"
SUBTITLE = "Dual contrastive learning (DCL), self-supervised embeddings - thesis chapter 3"
GUIDE = ("Upload one image; you get the most similar images of the model's gallery and what "
         "most of them show. The default model and gallery are Fashion-MNIST clothing, "
         "small greyscale pictures.")


def build(ctx: "TabContext") -> None:
    """The tab's components and events, inside the app's Blocks."""
    import gradio as gr

    from app.ui_common import (PLACEHOLDER, Dropdown, SafeImage, Slider, api_output,
                               example_expected, file_path, guard)
    from runtime.engine import pick_model

    def choices() -> list[str]:
        return ctx.served() or [retrieval_svc.MODEL]

    default = pick_model(ctx.served(), retrieval_svc.MODEL, None)
    labels_dcl = ctx.labels(default)

    @guard
    def neighbours(image, k, label, model_name=retrieval_svc.MODEL):
        """The k nearest images in the chosen DCL encoder's gallery."""
        model = pick_model(ctx.served(), retrieval_svc.MODEL, model_name)
        res = retrieval_svc.neighbours(ctx.engine, file_path(image), k=int(k),
                                       query_label=label or None, model_name=model)
        r = res.report
        text = neighbours_card(r)
        out = ctx.outputs.new("neighbours")
        return text, out.gallery(res.tiles, "neighbour"), r, out.json(r, "neighbours")

    with gr.Tab(TITLE, elem_id="tab-retrieval"):
        r_card = ctx.header(SUBTITLE, GUIDE, default)
        with gr.Row():
            with gr.Column(scale=2):
                r_img = SafeImage(type="filepath", image_mode=None, label="Query image",
                                  elem_id="retrieval-input")
                r_k = Slider(1, retrieval_svc.MAX_K, value=8, step=1, label="k",
                             info="how many similar images to show")
                r_model = Dropdown(choices(), value=default, label="Model (its gallery)",
                                   allow_custom_value=True,
                                   elem_id="retrieval-model")
                r_lab = Dropdown([""] + labels_dcl, value="", label="Query label (optional)",
                                 allow_custom_value=True)
                r_btn = gr.Button("Search", variant="primary", elem_id="retrieval-btn")
            with gr.Column(scale=3):
                r_text = api_output(gr.Markdown(PLACEHOLDER, elem_id="retrieval-answer",
                                                elem_classes=["answer-card"]), "answer")
                r_gal = api_output(gr.Gallery(
                    label="The most similar gallery images, nearest first (caption: label "
                          "and similarity)", columns=4, height=360, visible=False),
                    "neighbours")
                with gr.Accordion("Details (JSON)", open=False, elem_id="retrieval-details"):
                    r_json = api_output(gr.JSON(label="Report", elem_id="retrieval-json"),
                                        "report")
                    r_file = api_output(gr.File(label="Download JSON"), "json_file")
        shown = next((ctx.examples / f for f in ("retrieval", "fashion")
                      if (ctx.examples / f).is_dir()), None)
        if shown is not None:
            def label_of(stem: str) -> str:  # "00_t-shirt" -> "t-shirt", "09_ankle-boot" -> "ankle boot"
                part = stem.split("_", 1)[-1]
                return next((lab for lab in ctx.labels(retrieval_svc.MODEL)
                             if lab.replace(" ", "-") == part), "")

            # shown: the image and the majority label of the served encoder's 8 neighbours
            r_expect = gr.Textbox(label="expected answer", visible=False)
            gr.Examples([[str(p), 8, label_of(p.stem), example_expected(p)]
                         for p in sorted(shown.glob("*.png"))[:8]],
                        [r_img, r_k, r_lab, r_expect], visible_columns=[0, 3],
                        label="Examples (expected answer: the majority label of the default "
                              "model's 8 nearest images, checked at export)")
        r_model.change(lambda n: (ctx.state_markdown(n),
                                  Dropdown(choices=[""] + ctx.labels(n), value="")),
                       [r_model], [r_card, r_lab], api_name=False)
        ctx.on_load.append((lambda: (Dropdown(choices=choices()),
                                     Dropdown(choices=[""] + ctx.labels(retrieval_svc.MODEL))),
                            [r_model, r_lab]))
        ctx.live.append((lambda: ctx.state_markdown(default), [r_card]))
        r_btn.click(neighbours, [r_img, r_k, r_lab, r_model], [r_text, r_gal, r_json, r_file],
                    api_name="neighbours").success(lambda: gr.Gallery(visible=True), None,
                                                   [r_gal], api_visibility="private")


def neighbours_card(r: dict[str, Any]) -> str:
    """The answer card of a retrieval (markdown), from the service's answer: what most of
    the nearest gallery images show and how many of them agree, the nearest similarity, the
    precision of a given label, the model."""
    from app.ui_common import answer_card, confidence_line

    hits = r["neighbours"]
    label, share = retrieval_svc.vote(r)
    if not hits:
        return answer_card(r, "No similar images found", [], "no neighbours")
    n = len(hits)
    agree = round((share or 0) * n)
    title = f"Most similar: {label} ({agree} of the {n} nearest images)"
    lines = [confidence_line(share or 0, f"{agree} of {n} nearest images agree; nearest "
                                         f"similarity {hits[0]['similarity']:.3f}")]
    if r.get("query_in_gallery"):
        lines.append(f"This image is in the gallery itself ({r.get('query_gallery_id')}); it "
                     f"is left out of its neighbours.")
    if "precision_at_k" in r:
        lines.append(f"Precision of label '{r['query_label']}': {r['precision_at_k']:.2f}")
    raw = f"the nearest images are mostly {label} ({agree} of {n})"
    return answer_card(r, title, lines, raw)


# --- CLI and load-test requests ------------------------------------------------------------
def add_cli(sub: argparse._SubParsersAction) -> None:
    from app.batch import add_batch_args

    n = sub.add_parser("neighbours", help="nearest gallery images (DCL); several files or a "
                                          "folder make a batch")
    add_batch_args(n)
    n.add_argument("-k", type=int, default=8)
    n.add_argument("--label", help="the query's true label (reports precision)")
    n.add_argument("--model", default=retrieval_svc.MODEL,
                   help="a DCL encoder of the manifest (searches its gallery)")


def run_cli(args: argparse.Namespace, engine: Engine) -> dict[str, Any] | None:
    if args.cmd != "neighbours":
        return None
    from app.batch import cli_batch, is_batch
    from app.case_report import model_info

    if is_batch(args, single_report=False):
        if args.label:
            from app.inputs import InputError

            raise InputError("--label takes one image, not a batch.")
        return cli_batch(args, lambda p: retrieval_svc.batch_rows(engine, p, args.k, args.model),
                         retrieval_svc.BATCH_COLUMNS, count_key="queries",
                         models=lambda: [model_info(engine.get(args.model,
                                                               retrieval_svc.METHOD))])
    return retrieval_svc.neighbours(engine, args.paths[0], args.k, args.label,
                                    model_name=args.model).report


def load_requests(lc: Any) -> list[Any]:
    """What the load test sends: Fashion-MNIST images and a photograph; hostile: an empty
    file."""
    from app.loadmix import Request

    def key(r):
        return [(n["id"], n["similarity"]) for n in r[2]["neighbours"]]

    fashion = (sorted((lc.examples / "retrieval").glob("*.png"))
               or sorted((lc.examples / "fashion").glob("*.png")))
    if retrieval_svc.MODEL not in lc.served or not fashion:
        return []
    return ([Request("/neighbours", (lc.file(p), 8, ""), key, label=f"neighbours {p.name}")
             for p in fashion[1:3]]
            + [Request("/neighbours", (lc.file(lc.photos["chelsea"]), 4, ""), key,
                       label="neighbours of a photograph"),
               Request("/neighbours", (lc.file(lc.hostile["empty"]), 8, ""), key, True, "empty file")])
