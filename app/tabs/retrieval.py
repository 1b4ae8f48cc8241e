"""Retrieval tab (DCL, :mod:`methods.dcl`): ``/neighbours``; CLI ``neighbours``."""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from runtime.engine import Engine

from app.services import retrieval as retrieval_svc

if TYPE_CHECKING:
    from app.ui_common import TabContext

TITLE = "Retrieval (DCL)"


def build(ctx: "TabContext") -> None:
    """The tab's components and events, inside the app's Blocks."""
    import gradio as gr

    from app.ui_common import (Dropdown, SafeImage, Slider, answer_headline, example_expected,
                               file_path, guard, model_summary)
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
        text = answer_headline(r, f"{len(r['neighbours'])} nearest neighbours")
        if "precision_at_k" in r:
            text += f"\nPrecision of label '{r['query_label']}': {r['precision_at_k']:.2f}"
        out = ctx.outputs.new("neighbours")
        return text, out.gallery(res.tiles, "neighbour"), r, out.json(r, "neighbours")

    with gr.Tab("Retrieval (DCL)"):
        with gr.Row():
            with gr.Column():
                r_img = SafeImage(type="filepath", image_mode=None, label="Query image",
                                  elem_id="retrieval-input")
                r_k = Slider(1, retrieval_svc.MAX_K, value=8, step=1, label="k")
                r_model = Dropdown(choices(), value=default, label="Model (its gallery)",
                                   allow_custom_value=True,
                                   elem_id="retrieval-model")
                r_card = gr.Markdown(model_summary(ctx.engine, default))
                r_lab = Dropdown([""] + labels_dcl, value="", label="Query label (optional)",
                                 allow_custom_value=True)
                r_btn = gr.Button("Search", variant="primary", elem_id="retrieval-btn")
            with gr.Column():
                r_text = gr.Markdown()
                r_gal = gr.Gallery(label="Nearest gallery images", columns=4, height=360)
                r_json = gr.JSON(label="Report", elem_id="retrieval-json")
                r_file = gr.File(label="Download JSON")
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
        r_model.change(lambda n: (model_summary(ctx.engine, n),
                                  Dropdown(choices=[""] + ctx.labels(n), value="")),
                       [r_model], [r_card, r_lab], api_name=False)
        ctx.on_load.append((lambda: (Dropdown(choices=choices()),
                                     Dropdown(choices=[""] + ctx.labels(retrieval_svc.MODEL))),
                            [r_model, r_lab]))
        r_btn.click(neighbours, [r_img, r_k, r_lab, r_model], [r_text, r_gal, r_json, r_file],
                    api_name="neighbours")


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
