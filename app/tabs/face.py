"""Face tab (sequential deepfake detection, :mod:`methods.seqfake`): ``/face``, ``/face_video``;
CLI ``face`` and ``video``. Serves every exported model of the method (a model switch)."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runtime.engine import Engine

from app.services import face as face_svc

if TYPE_CHECKING:
    from app.ui_common import TabContext

TITLE = "Check a face"
SUBTITLE = "Sequential deepfake detection (Seq-DeepFake, SeqFakeFormer) - thesis chapter 5"
GUIDE = ("Upload a photo with a face, or a face crop; you get whether the face was edited, "
         "which parts in what order, and where. The default model knows generated faces "
         "only: its answer on a real photograph is not a finding.")
# component names as a sentence says them ("eye" -> "eyes")
PLURAL = {"eye": "eyes", "eyebrow": "eyebrows", "lip": "lips"}


def build(ctx: "TabContext") -> None:
    """The tab's components and events, inside the app's Blocks."""
    import gradio as gr

    from app import case_report
    from app.inputs import InputError
    from app.ui_common import (Dropdown, Number, SafeFile, SafeImage, SafeVideo, Slider,
                               PLACEHOLDER, api_output, domain_warning, example_expected,
                               example_truth, file_path, guard)
    from app.viz import side_by_side

    seq_models = ctx.models or ["seqfake"]

    def model_infos(models: list[str]) -> list[dict[str, Any]]:
        return [case_report.model_info(ctx.engine.get(m, face_svc.METHOD)) for m in models]

    def model_choices() -> list[str]:
        served = ctx.served() or seq_models
        return served + ([face_svc.ALL] if len(served) > 1 else [])

    @guard
    def face(image, threshold, face_number, is_crop, model_name):
        """Sequential deepfake analysis of the face in an image (``all``: every model)."""
        models = face_svc.resolve_models(ctx.engine, model_name or seq_models[0])
        results = face_svc.analyze_face_models(
            ctx.engine, ctx.detector(), file_path(image), models, threshold=threshold,
            face_index=int(face_number or 1) - 1, is_crop=bool(is_crop))
        res, out = results[0], ctx.outputs.new("face")  # the answer's own files, never rewritten
        truth = example_truth(file_path(image))
        if model_name == face_svc.ALL:
            cards = [face_svc.model_card_line(ctx.engine, m) for m in models]
            text = (f"## {len(results)} models answered\n\n"
                    + "".join(dict.fromkeys(domain_warning(r.report) for r in results))
                    + "".join(f"- **{r.report['model']}:** {face_title(r.report)}"
                              + ("" if r.report["reliable"] else f" ({r.report['headline']})")
                              + "\n" for r in results)
                    + "\n" + compare_markdown(cards, [r.report for r in results]))
            where = side_by_side([r.where for r in results], [r.report["model"] for r in results])
            report: dict[str, Any] = {"models": cards, "answers": [r.report for r in results]}
        else:
            text = face_card(res.report)
            where, report = res.where, res.report
        if truth:  # an example: its true sequence is in its name
            text += f"\n**Truth (example's name):** {truth.replace(' ', ' -> ')}\n"
        name, digest = upload_identity(file_path(image))
        html = case_report.face_report(name, digest, results, model_infos(models))
        return (text, out.image(res.annotated if res.annotated is not None else res.crop, "faces"),
                out.image(res.crop, "crop"), out.image(where, "where"), report,
                out.json(report, "face"), out.text(html, "case_report.html"))

    @guard
    def face_batch(files, threshold, is_crop, model_name, progress=gr.Progress()):
        """Every face of every uploaded file: a table, a CSV download and a summary."""
        from app.batch import csv_text, run_batch
        from app.settings import current as limits

        paths = [Path(file_path(f)) for f in (files or [])]
        if not paths:
            raise InputError("No files were given: upload one or more images.")
        if len(paths) > limits().max_batch_files:
            raise InputError(f"{len(paths)} files: the limit is {limits().max_batch_files} per "
                             f"batch (max_batch_files); the CLI takes any number: "
                             f"python -m app.cli face FOLDER --out results.csv")
        models = face_svc.resolve_models(ctx.engine, model_name or seq_models[0])
        columns = face_svc.batch_columns(ctx.engine, models)
        det = None if is_crop else ctx.detector()
        progress(0, desc="analysing")
        res = run_batch(paths, lambda p: face_svc.batch_rows(ctx.engine, det, p, models, threshold,
                                                             bool(is_crop)),
                        columns, count_key="faces", flag=lambda r: r["verdict"] == "manipulated",
                        progress=lambda i, n, _: progress(i / n, desc=f"{i}/{n} files"),
                        show_bar=False)
        for row in res.rows:  # the upload cache's folders mean nothing to the user
            row["file"] = Path(row["file"]).name
        all_cols = ["file", "sha256", *columns, "status", "error"]
        sm = res.summary
        text = (f"**{sm['files']} files, {sm['faces']} faces, {sm.get('manipulated', 0)} "
                f"manipulated, {sm.get('unreliable', 0)} without a reliable verdict (out of "
                f"domain or no domain check), {sm['errors']} errors"
                + (f", {sm['no_face']} without a face" if sm.get("no_face") else "")
                + f"** in {sm['seconds']:.1f} s"
                + (f"\n\n**{sm['stopped']}**" if sm.get("stopped") else ""))
        shown = [c for c in all_cols if c not in ("sha256", "box", "model_version")]
        table = [[_table_cell(r.get(c)) for c in shown] for r in res.rows]
        out = ctx.outputs.new("face_batch")
        html = case_report.batch_report(res.rows, sm, model_infos(models))
        return (text, {"headers": shown, "data": table},
                out.text(csv_text(res.rows, all_cols), "results.csv"),
                {"summary": sm, "rows": res.rows}, out.text(html, "case_report.html"))

    @guard
    def face_video(video, threshold, max_frames, is_crop, model_name=None):
        """Sequential deepfake analysis of every person (one track each) over sampled frames."""
        from app.services.video import analyze_video

        res = analyze_video(ctx.engine, None if is_crop else ctx.detector(), file_path(video),
                            threshold=threshold, max_frames=int(max_frames or 16),
                            is_crop=bool(is_crop), model_name=model_name or seq_models[0])
        out = ctx.outputs.new("face_video")
        crops = [(c, f"person {t.track_id}: {t.report['fake_probability']:.2f} {t.report['verdict']}"
                     f" (t = {top['time']:.1f} s)")
                 for t in res.tracks for c, top in zip(t.top_crops, t.report["top_frames"])]
        plots = [(t.timeline, f"person {t.track_id}") for t in res.tracks]
        name, digest = upload_identity(file_path(video))
        html = case_report.video_report(name, digest, res, model_infos([res.report["model"]]))
        return (out.image(res.timeline, "timeline"), res.report, out.json(res.report, "video"),
                out.gallery(crops, "top-crop"), out.gallery(plots, "track-timeline"),
                out.text(html, "case_report.html"))

    with gr.Tab(TITLE, elem_id="tab-face"):
        f_state = ctx.header(SUBTITLE, GUIDE, seq_models[0])
        with gr.Row():
            with gr.Column(scale=2):
                f_img = SafeImage(type="filepath", image_mode=None,
                                  label="Image with a face", elem_id="face-input")
                f_model = Dropdown(model_choices(), value=seq_models[0],
                                   label="Model ('all': every model side by side)")
                with gr.Accordion("Settings", open=False):
                    f_thr = Slider(0.05, 0.95, value=0.5, step=0.01, label="Threshold")
                    f_idx = Number(value=1, precision=0, minimum=1, label="Face # (1 = largest)")
                f_crop = gr.Checkbox(value=False, label="Image is already a face crop (skip detection)",
                                     elem_id="face-crop")
                f_btn = gr.Button("Analyse", variant="primary", elem_id="face-btn")
            with gr.Column(scale=3):
                f_text = api_output(gr.Markdown(PLACEHOLDER, elem_id="face-answer",
                                                elem_classes=["answer-card"]), "answer")
                with gr.Column(visible=False) as f_pics:
                    with gr.Row():
                        f_annot = api_output(gr.Image(label="Faces found", height=220),
                                             "faces_image")
                        f_cropimg = api_output(gr.Image(label="Aligned face", height=220),
                                               "crop")
                        f_where = api_output(gr.Image(label="Where edited", height=220),
                                             "where_map")
                    gr.Markdown("_Faces found: the face analysed is outlined. Aligned face: "
                                "what the model reads. Where edited: brighter where the face "
                                "differs most from an unedited one._", elem_classes=["caption"])
                    f_html = api_output(gr.File(
                        label="Case report (HTML, one file to keep or send)",
                        elem_id="face-report"), "case_report")
                with gr.Accordion("Details (JSON)", open=False, elem_id="face-details"):
                    f_json = api_output(gr.JSON(label="Report", elem_id="face-json"), "report")
                    f_file = api_output(gr.File(label="Download JSON"), "json_file")
        # the examples are face crops (detection skipped), asked at their model's threshold,
        # as export checked them; shown: the image, the model and that model's answer
        def model_threshold(model: str) -> float:
            extra = ctx.engine.manifest["models"].get(model, {}).get("extra", {})
            return float(extra.get("threshold", f_thr.value))

        f_expect = gr.Textbox(label="expected answer", visible=False)
        # component faces go with seqfake, attribute faces with seqfake_attr (if served)
        face_examples = [[str(p), model_threshold(model), 1, True, model, example_expected(p)]
                         for folder, model, n in (("faces", "seqfake", 6),
                                                  ("faces_attr", "seqfake_attr", 3))
                         if model in seq_models
                         for p in sorted((ctx.examples / folder).glob("*.png"))[:n]]
        if face_examples:
            gr.Examples(face_examples, [f_img, f_thr, f_idx, f_crop, f_model, f_expect],
                        visible_columns=[0, 4, 5],
                        label="Examples (aligned face crops: detection is skipped, as "
                              "--crop does in the CLI; expected answer: the model's, "
                              "checked at export)")
        ctx.on_load.append((lambda: Dropdown(choices=model_choices()), [f_model]))
        ctx.live.append((lambda: ctx.state_markdown(seq_models[0]), [f_state]))
        f_model.change(lambda n: ctx.state_markdown(n if n != face_svc.ALL else seq_models[0]),
                       [f_model], [f_state], api_name=False)
        f_btn.click(face, [f_img, f_thr, f_idx, f_crop, f_model],
                    [f_text, f_annot, f_cropimg, f_where, f_json, f_file, f_html], api_name="face"
                    ).success(lambda: gr.Column(visible=True), None, [f_pics],
                              api_visibility="private")
        with gr.Accordion("Several files (batch)", open=False):
            b_files = SafeFile(file_count="multiple", type="filepath", label="Images",
                               elem_id="face-batch-files")
            b_btn = gr.Button("Analyse all", elem_id="face-batch-btn")
            b_text = api_output(gr.Markdown(), "summary")
            b_table = api_output(gr.Dataframe(label="One row per face (click a column to sort)",
                                              interactive=False, wrap=True,
                                              elem_id="face-batch-table"), "table")
            with gr.Row():
                b_csv = api_output(gr.File(label="Download CSV"), "csv_file")
                b_html = api_output(gr.File(label="Case report (HTML)"), "case_report")
            b_json = api_output(gr.JSON(label="Rows", visible=False), "rows")
            b_btn.click(face_batch, [b_files, f_thr, f_crop, f_model],
                        [b_text, b_table, b_csv, b_json, b_html], api_name="face_batch")
        with gr.Accordion("Video", open=False):
            gr.Markdown("Every face of the sampled frames is followed over the clip (one track "
                        "per person); a person's score is the mean of their frames' fake "
                        "probabilities, the video's the highest person's. Threshold and model: "
                        "as above.")
            v_in = SafeVideo(label="Video with faces")
            v_frames = Slider(2, 64, value=16, step=1, label="Frames to sample")
            v_crop = gr.Checkbox(value=False, label="Frames are face crops")
            v_btn = gr.Button("Analyse video")
            v_plot = api_output(gr.Image(label="Fake probability per person over time"),
                                "timeline")
            v_crops = api_output(gr.Gallery(label="Each person's highest-scoring frames",
                                            columns=6, height=240, elem_id="face-video-crops"),
                                 "top_crops")
            v_tracks = api_output(gr.Gallery(
                label="Per-person timelines (fake probability and components)", columns=2,
                height=300, elem_id="face-video-tracks"), "track_timelines")
            v_html = api_output(gr.File(label="Case report (HTML)"), "case_report")
            with gr.Accordion("Details (JSON)", open=False):
                v_json = api_output(gr.JSON(label="Report (per person and per frame)"),
                                    "report")
                v_file = api_output(gr.File(label="Download JSON"), "json_file")
            v_btn.click(face_video, [v_in, f_thr, v_frames, v_crop, f_model],
                        [v_plot, v_json, v_file, v_crops, v_tracks, v_html], api_name="face_video")


def edited_parts(report: dict[str, Any]) -> str:
    """The edited parts of a face answer in order, as a sentence says them ("hair, then
    eyes"); "" for an answer without a sequence (a model that only tells fake from real)."""
    parts = [PLURAL.get(s["component"], s["component"]) for s in report.get("sequence") or []]
    return ", then ".join(parts)


def face_title(report: dict[str, Any]) -> str:
    """The plain-language answer of one model for a face: "Looks unedited", "Edited: hair,
    then eyes", "Edited" (no sequence), or "No reliable verdict"."""
    if not report.get("reliable"):
        return "No reliable verdict"
    if report.get("raw_verdict", report.get("verdict")) == "real":
        return "Looks unedited"
    parts = edited_parts(report)
    return f"Edited: {parts}" if parts else "Edited"


def face_card(report: dict[str, Any]) -> str:
    """The answer card of a face (markdown), from the service's answer: the plain answer,
    its confidence in words and numbers, the order of the edits, the model and what it was
    trained on, the domain warning; without a basis, "No reliable verdict" with the model's
    raw output below. An answer without a sequence (a fake-or-real model) says so."""
    from app.services.reliability import face_finding
    from app.ui_common import answer_card, confidence_line

    verdict = report.get("raw_verdict", report.get("verdict", ""))
    p = float(report.get("fake_probability", 0.0))
    sure = p if verdict == "manipulated" else 1 - p
    thr = report.get("threshold")
    lines = [confidence_line(sure, f"fake probability {p:.3f}"
                             + (f", threshold {float(thr):.2f}" if thr is not None else ""))]
    has_sequence = "sequence" in report
    if verdict == "manipulated" and report.get("sequence"):
        lines.append("**Order found:** " + " -> ".join(
            f"{s['step']}. {s['component']} ({s['probability']:.3f})" for s in report["sequence"]))
    elif verdict == "manipulated" and not has_sequence:
        lines.append("This model tells edited from unedited faces; it does not say which "
                     "parts were edited.")
    raw = face_finding(verdict, p)
    if report.get("sequence"):
        raw += f"; {report.get('sequence_text') or edited_parts(report)}"
    if report.get("answer") == "fakeness":  # a binary face-swap detector (SBI)
        what = f"This model is {report.get('detects') or 'a face-swap detector'}."
        lines.append(what)
        raw += f". {what}"
    return answer_card(report, face_title(report), lines, raw)


def compare_markdown(cards: list[dict[str, Any]], reports: list[dict[str, Any]]) -> str:
    """The side-by-side answer: one column per model, with its measured test accuracies."""
    def pct(v: Any) -> str:
        return f"{100 * float(v):.1f} %" if v is not None else "not measured"

    head = "| | " + " | ".join(f"**{c['model']}** ({c['variant']})" for c in cards) + " |"
    rows = [
        ("verdict", [_compare_verdict(r) for r in reports]),
        ("sequence", [r.get("sequence_text") or "not given by this model" for r in reports]),
        ("decoder", [r.get("decoder") or "-" for r in reports]),
        ("task", [c.get("task") or "-" for c in cards]),
        ("test Fixed-Acc", [pct(c.get("fixed_acc")) for c in cards]),
        ("test Adaptive-Acc", [pct(c.get("adaptive_acc")) for c in cards]),
        ("version", [f"`{c.get('version', '?')}`" for c in cards]),
    ]
    lines = [head, "|---" * (len(cards) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(vals) + " |" for name, vals in rows]
    n = {c.get("n_eval") for c in cards if c.get("n_eval")}
    note = (f"Test accuracies from each model's manifest entry (measured at export on "
            f"{', '.join(str(int(x)) for x in sorted(n))} test faces).") if n else ""
    return "\n".join(lines) + ("\n\n" + note if note else "")


def _compare_verdict(report: dict[str, Any]) -> str:
    """A model's verdict cell of the side-by-side table: the verdict when it is a finding,
    else "no reliable verdict" with the model's raw verdict marked as such."""
    raw = f"{report['raw_verdict'].upper()} ({report['fake_probability']:.3f})"
    if report["reliable"]:
        return f"**{raw}**"
    why = "out of domain" if report["reliability"] == "out_of_domain" else "no domain check"
    return f"**no reliable verdict** ({why}; raw output: {raw})"


def upload_identity(path: Any) -> tuple[str, str]:
    """(file name, sha256) of an uploaded file, as a case report names its input."""
    from runtime.manifest import sha256_file

    p = Path(str(path))
    return p.name, sha256_file(p)


def _table_cell(v: Any) -> Any:
    """A value as the batch table shows it (lists joined, None blank)."""
    if v is None:
        return ""
    if isinstance(v, (list, tuple)):
        return " ".join(str(x) for x in v)
    return v


# --- CLI and load-test requests ------------------------------------------------------------
def add_cli(sub: argparse._SubParsersAction) -> None:
    from app.batch import add_batch_args

    f = sub.add_parser("face", help="sequential deepfake analysis of face images (one, or a "
                                    "batch: every face of every file)")
    add_batch_args(f)
    f.add_argument("--threshold", type=float)
    f.add_argument("--face", type=int, default=1, help="which face (1 = largest; one image)")
    f.add_argument("--crop", action="store_true", help="the images are already face crops")
    f.add_argument("--model", default="seqfake",
                   help="a seqfake model of the manifest, or 'all' (side by side)")
    v = sub.add_parser("video", help="analysis of every person in a video (one track each)")
    v.add_argument("video")
    v.add_argument("--threshold", type=float)
    v.add_argument("--frames", type=int, default=16, help="frames sampled evenly")
    v.add_argument("--crop", action="store_true", help="every frame is already a face crop")
    v.add_argument("--model", default="seqfake", help="a seqfake model of the manifest")
    v.add_argument("--report", metavar="FILE.html",
                   help="also save the analysis as one self-contained HTML case report")


def run_cli(args: argparse.Namespace, engine: Engine) -> dict[str, Any] | None:
    """The report of a ``face`` / ``video`` command; None for other commands."""
    if args.cmd not in ("face", "video"):
        return None
    from app.faces import default_detector

    det = None if args.crop else default_detector(artifacts=engine.artifacts)
    if args.cmd == "face":
        return _face_cli(args, engine, det)
    from app import case_report
    from app.batch import report_path, save_report
    from app.services.video import analyze_video

    html_out = report_path(args)
    res = analyze_video(engine, det, args.video, args.threshold, args.frames, args.crop,
                        model_name=args.model)
    if html_out is not None:
        save_report(html_out, case_report.video_report(
            *upload_identity(args.video), res,
            [case_report.model_info(engine.get(args.model, face_svc.METHOD))]))
    return res.report


def _face_cli(args: argparse.Namespace, engine: Engine, det: Any) -> dict[str, Any]:
    """``face``: one image's report (``--model all``: every model's answer), or a batch."""
    from app import case_report
    from app.batch import cli_batch, is_batch, report_path, save_report

    models = face_svc.resolve_models(engine, args.model)

    def infos() -> list[dict[str, Any]]:
        return [case_report.model_info(engine.get(m, face_svc.METHOD)) for m in models]

    if is_batch(args):
        return cli_batch(
            args, lambda p: face_svc.batch_rows(engine, det, p, models, args.threshold, args.crop),
            face_svc.batch_columns(engine, models), models=infos, count_key="faces",
            flag=lambda r: r["verdict"] == "manipulated")
    html_out = report_path(args)
    results = face_svc.analyze_face_models(engine, det, args.paths[0], models, args.threshold,
                                           args.face - 1, args.crop)
    if args.model != face_svc.ALL:
        report = results[0].report
    else:
        report = {"models": [face_svc.model_card_line(engine, m) for m in models],
                  "answers": [r.report for r in results]}
    if html_out is not None:
        save_report(html_out, case_report.face_report(*upload_identity(args.paths[0]), results,
                                                      infos()))
    return report


def load_requests(lc: Any) -> list[Any]:
    """What the load test sends (:class:`app.loadmix.Request`): face crops, a photograph
    with a face (detected), a video of crops; hostile: a truncated PNG, a photograph with no
    face."""
    from app.loadmix import Request, video_from

    def key(r):
        return r[4]["sequence"], r[4]["probabilities"]

    faces = sorted((lc.examples / "faces").glob("*.png"))
    attrs = sorted((lc.examples / "faces_attr").glob("*.png"))
    out: list[Any] = []
    if "seqfake" in lc.served and faces:
        out += [Request("/face", (lc.file(p), 0.5, 1, True, "seqfake"), key, label=f"face crop {p.name}")
                for p in faces[:4]]
        out.append(Request("/face", (lc.file(lc.photos["astronaut"]), 0.5, 1, False, "seqfake"), key,
                           label="face photograph (astronaut, detected)"))
        video = video_from(faces[:4], lc.work / "faces.mp4")
        if video is not None:
            out.append(Request("/face_video", (lc.file(video), 0.5, 4, True),
                               lambda r: [(t["track"], [(row["time"], row["fake_probability"])
                                                        for row in t["timeline"]])
                                          for t in r[1]["tracks"]], label="video of face crops"))
        out += [Request("/face", (lc.file(lc.hostile["truncated"]), 0.5, 1, False, "seqfake"), key,
                        True, "truncated PNG"),
                Request("/face", (lc.file(lc.photos["china"]), 0.5, 1, False, "seqfake"), key,
                        True, "photograph without a face")]
    if "seqfake_attr" in lc.served and attrs:
        out.append(Request("/face", (lc.file(attrs[0]), 0.5, 1, True, "seqfake_attr"), key,
                           label=f"attribute face {attrs[0].name}"))
    return out
