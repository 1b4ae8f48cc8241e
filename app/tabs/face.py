"""Face tab (sequential deepfake detection, :mod:`methods.seqfake`): ``/face``, ``/face_video``;
CLI ``face`` and ``video``. Serves every exported model of the method (a model switch)."""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from runtime.engine import Engine

from app.services import face as face_svc

if TYPE_CHECKING:
    from app.ui_common import TabContext

TITLE = "Face (sequential deepfake)"


def build(ctx: "TabContext") -> None:
    """The tab's components and events, inside the app's Blocks."""
    import gradio as gr

    from app.ui_common import Dropdown, Number, SafeImage, Slider, example_truth, file_path, guard

    seq_models = ctx.models or ["seqfake"]

    @guard
    def face(image, threshold, face_number, is_crop, model_name):
        """Sequential deepfake analysis of the face in an image."""
        res = face_svc.analyze_face(ctx.engine, ctx.detector(), file_path(image), threshold=threshold,
                                    face_index=int(face_number or 1) - 1, is_crop=bool(is_crop),
                                    model_name=model_name or seq_models[0])
        r = res.report
        text = (f"## {r['verdict'].upper()} (fake probability {r['fake_probability']:.3f})\n"
                f"**Sequence:** {r['sequence_text']}\n\n"
                + "\n".join(f"- step {s['step']}: **{s['component']}** (p = {s['probability']:.3f})"
                            for s in r["sequence"]))
        truth = example_truth(file_path(image))
        if truth:  # an example: its true sequence is in its name
            text += f"\n\n**Truth (example's name):** {truth.replace(' ', ' -> ')}"
        if r.get("trained_on"):
            text += f"\n\n_{r['trained_on']}_"
        out = ctx.outputs.new("face")  # the answer's own files, never rewritten
        return (text, out.image(res.annotated if res.annotated is not None else res.crop, "faces"),
                out.image(res.crop, "crop"), out.image(res.where, "where"), r, out.json(r, "face"))

    @guard
    def face_video(video, threshold, max_frames, is_crop):
        """Per-frame sequential deepfake analysis over sampled video frames."""
        from app.services.video import analyze_video

        res = analyze_video(ctx.engine, ctx.detector(), file_path(video), threshold=threshold,
                            max_frames=int(max_frames or 16), is_crop=bool(is_crop))
        out = ctx.outputs.new("face_video")
        return out.image(res.timeline, "timeline"), res.report, out.json(res.report, "video")

    with gr.Tab("Face (sequential deepfake)"):
        gr.Markdown("The default model is trained on **procedurally generated faces** "
                    "(no face data set ships offline). It is **not** a detector for real "
                    "deepfakes until it is retrained on real data (`python -m training "
                    "seqfake --data SEQ_DEEPFAKE_DIR`).")
        with gr.Row():
            with gr.Column():
                f_img = SafeImage(type="filepath", label="Image with a face", elem_id="face-input")
                f_thr = Slider(0.05, 0.95, value=0.5, step=0.01, label="Threshold")
                f_idx = Number(value=1, precision=0, minimum=1, label="Face # (1 = largest)")
                f_crop = gr.Checkbox(value=False, label="Image is already a face crop (skip detection)",
                                     elem_id="face-crop")
                f_model = Dropdown(seq_models, value=seq_models[0], label="Model (components/attributes)")
                f_btn = gr.Button("Analyse", variant="primary", elem_id="face-btn")
            with gr.Column():
                f_text = gr.Markdown()
                with gr.Row():
                    f_annot = gr.Image(label="Detected faces", height=220)
                    f_cropimg = gr.Image(label="Aligned crop", height=220)
                    f_where = gr.Image(label="Where (token dissimilarity)", height=220)
                f_json = gr.JSON(label="Report", elem_id="face-json")
                f_file = gr.File(label="Download JSON")
        # component faces go with seqfake, attribute faces with seqfake_attr (if served)
        face_examples = [[str(p), 0.5, 1, True, model]
                         for folder, model, n in (("faces", "seqfake", 6),
                                                  ("faces_attr", "seqfake_attr", 3))
                         if model in seq_models
                         for p in sorted((ctx.examples / folder).glob("*.png"))[:n]]
        if face_examples:
            gr.Examples(face_examples, [f_img, f_thr, f_idx, f_crop, f_model])
        ctx.on_load.append((lambda: Dropdown(choices=ctx.served() or seq_models), [f_model]))
        f_btn.click(face, [f_img, f_thr, f_idx, f_crop, f_model],
                    [f_text, f_annot, f_cropimg, f_where, f_json, f_file], api_name="face")
        with gr.Accordion("Video", open=False):
            v_in = gr.Video(label="Video with a face")
            v_frames = Slider(2, 64, value=16, step=1, label="Frames to sample")
            v_crop = gr.Checkbox(value=False, label="Frames are face crops")
            v_btn = gr.Button("Analyse video")
            v_plot = gr.Image(label="Timeline")
            v_json = gr.JSON(label="Per-frame report")
            v_file = gr.File(label="Download JSON")
            v_btn.click(face_video, [v_in, f_thr, v_frames, v_crop], [v_plot, v_json, v_file],
                        api_name="face_video")


# --- CLI and load-test requests ------------------------------------------------------------
def add_cli(sub: argparse._SubParsersAction) -> None:
    f = sub.add_parser("face", help="sequential deepfake analysis of a face image")
    f.add_argument("image")
    f.add_argument("--threshold", type=float)
    f.add_argument("--face", type=int, default=1, help="which face (1 = largest)")
    f.add_argument("--crop", action="store_true", help="the image is already a face crop")
    f.add_argument("--model", default="seqfake")
    v = sub.add_parser("video", help="per-frame analysis of a video")
    v.add_argument("video")
    v.add_argument("--threshold", type=float)
    v.add_argument("--frames", type=int, default=16)
    v.add_argument("--crop", action="store_true")


def run_cli(args: argparse.Namespace, engine: Engine) -> dict[str, Any] | None:
    """The report of a ``face`` / ``video`` command; None for other commands."""
    if args.cmd not in ("face", "video"):
        return None
    from app.faces import default_detector

    det = None if args.crop else default_detector()
    if args.cmd == "face":
        return face_svc.analyze_face(engine, det, args.image, args.threshold, args.face - 1,
                                     args.crop, args.model).report
    from app.services.video import analyze_video

    return analyze_video(engine, det, args.video, args.threshold, args.frames, args.crop).report


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
                               lambda r: [(f.get("fake_probability"), f.get("error"))
                                          for f in r[1]["frames"]], label="video of face crops"))
        out += [Request("/face", (lc.file(lc.hostile["truncated"]), 0.5, 1, False, "seqfake"), key,
                        True, "truncated PNG"),
                Request("/face", (lc.file(lc.photos["china"]), 0.5, 1, False, "seqfake"), key,
                        True, "photograph without a face")]
    if "seqfake_attr" in lc.served and attrs:
        out.append(Request("/face", (lc.file(attrs[0]), 0.5, 1, True, "seqfake_attr"), key,
                           label=f"attribute face {attrs[0].name}"))
    return out
