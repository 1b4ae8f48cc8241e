"""Classifier tab (ABC-Norm, :mod:`methods.abcnorm`): ``/classify``; CLI ``classify``.

The method's first default run is explained beside the other served runs of the method (the
CE baseline by default) for a side-by-side Grad-CAM."""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from runtime.engine import Engine

from app.services import classify as classify_svc
from runtime.engine import ModelUnavailableError

if TYPE_CHECKING:
    from app.ui_common import TabContext

TITLE = "Classify"
SUBTITLE = "Long-tailed classification with ABC-Norm - thesis chapter 4"
GUIDE = ("Upload one image; you get its most likely class, how sure the model is, and where "
         "it looked (Grad-CAM). The default model knows the 10 Fashion-MNIST clothing "
         "classes, small greyscale pictures, some classes seen rarely in training.")


def build(ctx: "TabContext") -> None:
    """The tab's components and events, inside the app's Blocks."""
    import gradio as gr

    from app.ui_common import (PLACEHOLDER, Dropdown, SafeImage, api_output,
                               example_expected, file_path, guard)
    from runtime.engine import pick_model

    def choices() -> list[str]:
        return ctx.served() or [classify_svc.MODEL]

    def compare_default(model: str) -> str:
        """The CE baseline beside ABC-Norm when both are served, else nothing."""
        served = ctx.served()
        return classify_svc.BASELINE if (model == classify_svc.MODEL
                                         and classify_svc.BASELINE in served) else ""

    @guard
    def classify(image, cam_class, model_name=classify_svc.MODEL, compare_with=None):
        """Top-5 classes with frequency groups and Grad-CAM of the chosen classifier, and of
        a second one beside it (``compare_with``; default: the CE baseline beside ABC-Norm,
        "none": no second model)."""
        model = pick_model(ctx.served(), classify_svc.MODEL, model_name)
        other = compare_default(model) if compare_with in (None, "") else (
            "" if str(compare_with).strip().lower() == "none" else str(compare_with).strip())
        res = classify_svc.classify(ctx.engine, file_path(image), model, cam_class or None)
        r = {model: res.report}
        cam_other = None
        if other and other != model:
            try:
                o = classify_svc.classify(ctx.engine, file_path(image), other, cam_class or None)
                r[other], cam_other = o.report, o.cam
            except ModelUnavailableError as exc:
                r[other] = {"error": str(exc)}
            except Exception as exc:  # noqa: BLE001 - e.g. a class name the other lacks
                r[other] = {"error": str(exc)}
        text = classify_card(res.report) + f"\n{compare_line(model, r)}"
        out = ctx.outputs.new("classify")
        return (text, out.image(res.cam, "gradcam"), out.image(cam_other, "gradcam-compare"), r,
                out.json(r, "classify"))

    default = pick_model(ctx.served(), classify_svc.MODEL, None)
    with gr.Tab(TITLE, elem_id="tab-classify"):
        c_card = ctx.header(SUBTITLE, GUIDE, default)
        with gr.Row():
            with gr.Column(scale=2):
                c_img = SafeImage(type="filepath", image_mode=None, label="Image",
                                  elem_id="classify-input")
                c_model = Dropdown(choices(), value=default, label="Model",
                                   allow_custom_value=True, elem_id="classify-model")
                c_cls = Dropdown([""] + ctx.labels(default), value="",
                                 label="Explain class (default: predicted)",
                                 allow_custom_value=True)
                c_cmp = Dropdown(["", "none"] + choices(), value="",
                                 label="Compare with (default: the CE baseline beside "
                                       "ABC-Norm; none: no second model)",
                                 allow_custom_value=True)
                c_btn = gr.Button("Classify", variant="primary", elem_id="classify-btn")
            with gr.Column(scale=3):
                c_text = api_output(gr.Markdown(PLACEHOLDER, elem_id="classify-answer",
                                                elem_classes=["answer-card"]), "answer")
                with gr.Row(visible=False) as c_pics:
                    c_cam = api_output(gr.Image(label="Grad-CAM: the chosen model",
                                                height=240), "gradcam")
                    c_cam_ce = api_output(gr.Image(label="Grad-CAM: the model compared",
                                                   height=240), "gradcam_compared")
                c_caption = gr.Markdown("_Grad-CAM: where each model looked to answer (red = "
                                        "most); right: the model compared beside it._",
                                        elem_classes=["caption"], visible=False)
                with gr.Accordion("Details (JSON)", open=False, elem_id="classify-details"):
                    c_json = api_output(gr.JSON(label="Report", elem_id="classify-json"),
                                        "report")
                    c_file = api_output(gr.File(label="Download JSON"), "json_file")
        if (ctx.examples / "fashion").is_dir():
            # shown: the image and the served model's answer (the class to explain is reset)
            c_expect = gr.Textbox(label="expected answer", visible=False)
            gr.Examples([[str(p), "", example_expected(p)]
                         for p in sorted((ctx.examples / "fashion").glob("*.png"))[:8]],
                        [c_img, c_cls, c_expect], visible_columns=[0, 2],
                        label="Examples (expected answer: the default model's, checked at "
                              "export)")

        def on_model(name):
            return (ctx.state_markdown(name),
                    Dropdown(choices=[""] + ctx.labels(name), value=""))

        c_model.change(on_model, [c_model], [c_card, c_cls], api_name=False)
        ctx.on_load.append((lambda: (Dropdown(choices=choices()),
                                     Dropdown(choices=[""] + ctx.labels(classify_svc.MODEL)),
                                     Dropdown(choices=["", "none"] + choices())),
                            [c_model, c_cls, c_cmp]))
        ctx.live.append((lambda: ctx.state_markdown(default), [c_card]))
        c_btn.click(classify, [c_img, c_cls, c_model, c_cmp],
                    [c_text, c_cam, c_cam_ce, c_json, c_file], api_name="classify"
                    ).success(lambda: (gr.Row(visible=True), gr.Markdown(visible=True)), None,
                              [c_pics, c_caption],
                              api_visibility="private")


def classify_card(r: dict[str, Any]) -> str:
    """The answer card of a classification (markdown), from the service's answer: the most
    likely class, its probability in words and numbers, how often the model saw the class
    in training, what the Grad-CAM shows, the other likely classes, the model."""
    from app.ui_common import answer_card, confidence_line

    top = r["top"][0]
    p = float(top["probability"])
    lines = [confidence_line(p, f"probability {p:.3f}"),
             f"'{top['class']}' is a {top['group']}-shot class ({top['train_count']} training "
             f"images).",
             f"The Grad-CAM picture shows where the model looked for "
             f"'{r.get('cam_class') or top['class']}' (red = most)."]
    rows = "\n".join(f"| {t['class']} | {t['probability']:.3f} | {t['group']} | "
                     f"{t['train_count']} |" for t in r["top"])
    head = "Most likely classes" + ("" if r.get("reliable") else " (the model's raw output)")
    table = (f"\n**{head}**\n\n| class | probability | group | training images |"
             "\n|---|---|---|---|\n" + rows + "\n")
    raw = f"{top['class']} (probability {p:.3f})"
    return answer_card(r, f"Looks like: {top['class']}", lines, raw) + table


def compare_line(model: str, answers: dict[str, Any]) -> str:
    """One line per model compared beside ``model``: its top class, or why it did not
    answer."""
    out = []
    for name, a in answers.items():
        if name == model:
            continue
        if "error" in a:
            out.append(f"**Compared with `{name}`:** no answer ({a['error']})")
        else:
            t = a["top"][0]
            out.append(f"**Compared with `{name}`:** {t['class']} (probability "
                       f"{t['probability']:.3f})" + ("" if a.get("reliable") else
                                                     " - raw output, no reliable verdict"))
    return "\n\n".join(out) + ("\n" if out else "")


# --- CLI and load-test requests ------------------------------------------------------------
def add_cli(sub: argparse._SubParsersAction) -> None:
    from app.batch import add_batch_args

    c = sub.add_parser("classify", help="top-5 classes and Grad-CAM (ABC-Norm); several "
                                        "files or a folder make a batch")
    add_batch_args(c)
    c.add_argument("--model", default=classify_svc.MODEL)
    c.add_argument("--cam-class", help="class to explain (default: predicted)")
    c.add_argument("--cam-out", help="write the Grad-CAM overlay PNG here")


def run_cli(args: argparse.Namespace, engine: Engine) -> dict[str, Any] | None:
    if args.cmd != "classify":
        return None
    from app.batch import cli_batch, is_batch
    from app.case_report import model_info

    if is_batch(args, single_report=False):
        if args.cam_out or args.cam_class:
            from app.inputs import InputError

            raise InputError("--cam-out and --cam-class take one image, not a batch.")
        return cli_batch(args, lambda p: classify_svc.batch_rows(engine, p, args.model),
                         classify_svc.BATCH_COLUMNS, count_key="classified",
                         models=lambda: [model_info(engine.get(args.model, classify_svc.METHOD))])
    if args.cam_out:
        from pathlib import Path

        from app.inputs import InputError

        out = Path(args.cam_out)
        if not out.parent.is_dir():
            raise InputError(f"--cam-out {out}: the folder {out.parent} does not exist")
        if out.suffix.lower() not in (".png", ".jpg", ".jpeg"):
            raise InputError(f"--cam-out {out}: give a .png or .jpg file name")
    res = classify_svc.classify(engine, args.paths[0], args.model, args.cam_class)
    if args.cam_out:
        from PIL import Image

        from app.settings import user_file_mode
        from runtime.artifacts import atomic_path

        # no half-written picture under the name asked for; 0600 unless private_reports false
        with atomic_path(out, user_file_mode()) as tmp:
            Image.fromarray(res.cam).save(tmp, format="PNG" if out.suffix.lower() == ".png"
                                          else "JPEG")
    return res.report


def load_requests(lc: Any) -> list[Any]:
    """What the load test sends: Fashion-MNIST images and a photograph; hostile: a text
    file named .png, a 4 x 4 image."""
    from app.loadmix import Request

    def key(r):
        return {k: v.get("top") for k, v in r[3].items()}

    fashion = sorted((lc.examples / "fashion").glob("*.png"))
    if classify_svc.MODEL not in lc.served or not fashion:
        return []
    return ([Request("/classify", (lc.file(p), ""), key, label=f"classify {p.name}") for p in fashion[:3]]
            + [Request("/classify", (lc.file(lc.photos["coffee"]), ""), key, label="classify a photograph"),
               Request("/classify", (lc.file(lc.hostile["text"]), ""), key, True, "text file named .png"),
               Request("/classify", (lc.file(lc.hostile["tiny"]), ""), key, True, "4 x 4 image")])
