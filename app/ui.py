"""The Gradio UI: four tabs over the ONNX models, each also an API endpoint.

Stable endpoint names (callable with gradio_client): ``/face``, ``/face_video``,
``/query``, ``/neighbours``, ``/classify``, ``/status``. Each returns its JSON report
(and pictures); bad input raises ``gr.Error`` with a clear message, never a traceback.
"""
from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any, Callable

import gradio as gr
import numpy as np

from app import __version__
from app.engine import Engine, ModelUnavailableError
from app.inputs import InputError
from app.services import classify as classify_svc
from app.services import face as face_svc
from app.services import qmil as qmil_svc
from app.services import retrieval as retrieval_svc

log = logging.getLogger("replens.ui")
EXAMPLES_DIR = "examples"


def _save_report(report: dict[str, Any], name: str) -> str:
    """Write a JSON report to a temp file for download."""
    fd, path = tempfile.mkstemp(prefix=f"replens-{name}-", suffix=".json")
    with open(fd, "w") as fh:
        json.dump(report, fh, indent=2, default=str)
    return path


def _guard(fn: Callable) -> Callable:
    """Turn expected errors into gr.Error messages; log unexpected ones without a traceback in the page."""
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
    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
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


def _path(f: Any) -> Any:
    """Gradio file values may be paths or objects with .name/.path."""
    if f is None:
        return None
    return getattr(f, "path", None) or getattr(f, "name", None) or f


LIMITS = {
    "seqfake": "trained by default on procedurally generated faces with synthetic edits; it "
               "is not a detector for real deepfakes until retrained on real data "
               "(Seq-DeepFake). Crops must contain the whole face with hair.",
    "qmil": "instances are 28 x 28 grayscale Fashion-MNIST-like images; photos of real "
            "clothes differ from that domain. Query words are GloVe 6B 50-d vectors (not the "
            "thesis' word2vec); zero-shot words work only as far as GloVe places them near "
            "the training classes.",
    "dcl": "self-supervised on Fashion-MNIST (28 x 28 grayscale), short CPU budget; retrieval "
           "quality on other image domains is untested.",
    "abcnorm": "trained on long-tailed Fashion-MNIST (imbalance ratio 100); the class groups "
               "(many/medium/few) use the thresholds stored with the model.",
}


def model_card_markdown(engine: Engine) -> str:
    """A model card per exported model, from the manifest."""
    lines = [f"**RepLens {__version__}** - artifacts: `{engine.artifacts}`\n"]
    if engine.manifest_error:
        return lines[0] + f"\n**No models:** {engine.manifest_error}"
    for name, st in engine.status().items():
        entry = engine.manifest["models"][name]
        lines.append(f"### {name}")
        if st["status"] != "ok":
            lines.append(f"- **unavailable:** {st['error']}")
            continue
        extra = entry.get("extra", {})
        lines.append(f"- version `{entry.get('version')}`, provider **{st['provider']}**, "
                     f"opset {entry.get('opset')}, exporter {entry.get('exporter')}")
        lines.append(f"- training data: {entry.get('training', {}).get('data', '?')}")
        metrics = entry.get("metrics", {})
        if metrics:
            lines.append("- test metrics: " + ", ".join(
                f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items()))
        lines.append(f"- limits: {LIMITS.get(entry.get('method', ''), 'see docs/')}")
        lines.append(f"- model card: `docs/{entry.get('method', name)}.md`")
    return "\n".join(lines)


def build_ui(engine: Engine, detector_factory: Callable[[], Any] | None = None) -> gr.Blocks:
    """Build the Blocks app. ``detector_factory`` builds the face detector on first use."""
    detector_box: dict[str, Any] = {}

    def detector():
        if detector_factory is None:
            return None
        if "d" not in detector_box:
            detector_box["d"] = detector_factory()
        return detector_box["d"]

    @_guard
    def face(image, threshold, face_number, is_crop, model_name):
        """Sequential deepfake analysis of the face in an image."""
        res = face_svc.analyze_face(engine, detector(), _path(image), threshold=threshold,
                                    face_index=int(face_number or 1) - 1, is_crop=bool(is_crop),
                                    model_name=model_name or "seqfake")
        r = res.report
        text = (f"## {r['verdict'].upper()} (fake probability {r['fake_probability']:.3f})\n"
                f"**Sequence:** {r['sequence_text']}\n\n"
                + "\n".join(f"- step {s['step']}: **{s['component']}** (p = {s['probability']:.3f})"
                            for s in r["sequence"]))
        if r.get("trained_on"):
            text += f"\n\n_{r['trained_on']}_"
        return (text, res.annotated if res.annotated is not None else res.crop, res.crop,
                res.where, r, _save_report(r, "face"))

    @_guard
    def face_video(video, threshold, max_frames, is_crop):
        """Per-frame sequential deepfake analysis over sampled video frames."""
        from app.services.video import analyze_video

        res = analyze_video(engine, detector(), _path(video), threshold=threshold,
                            max_frames=int(max_frames or 16), is_crop=bool(is_crop))
        return res.timeline, res.report, _save_report(res.report, "video")

    @_guard
    def query(files, word):
        """Does the bag of images hold what the query word names?"""
        paths = [_path(f) for f in (files or [])]
        if len(paths) == 1 and str(paths[0]).lower().endswith((".mp4", ".avi", ".mov", ".mkv", ".webm")):
            from app.services.video import video_bag

            res = qmil_svc.query_bag(engine, None, word, images=video_bag(paths[0]))
        else:
            res = qmil_svc.query_bag(engine, paths, word)
        r = res.report
        text = (f"## {r['answer'].upper()}: P(bag holds '{r['query']}') = {r['probability']:.3f}\n"
                f"Query is {r['query_kind']}. Top instance: #{r['top_instance']} of {r['bag_size']}.")
        if r.get("warning"):
            near = ", ".join(f"'{c['query']}' ({c['cosine']:.2f})" for c in r["closest_training_queries"])
            text += f"\n\n**Caution:** {r['warning']} Closest training queries (cosine): {near}."
        return text, res.tiles, r, _save_report(r, "query")

    @_guard
    def neighbours(image, k, label):
        """The k nearest gallery images under the DCL encoder."""
        res = retrieval_svc.neighbours(engine, _path(image), k=int(k), query_label=label or None)
        r = res.report
        text = f"{len(r['neighbours'])} nearest neighbours"
        if "precision_at_k" in r:
            text += f"; precision of label '{r['query_label']}': {r['precision_at_k']:.2f}"
        return text, res.tiles, r, _save_report(r, "neighbours")

    @_guard
    def classify(image, cam_class):
        """Top-5 classes with frequency groups and Grad-CAM (ABC-Norm, and CE if present)."""
        res = classify_svc.classify(engine, _path(image), "abcnorm", cam_class or None)
        r = {"abcnorm": res.report}
        cam_ce = None
        if "abcnorm_ce" in engine.names():
            try:
                ce = classify_svc.classify(engine, _path(image), "abcnorm_ce", cam_class or None)
                r["ce"], cam_ce = ce.report, ce.cam
            except ModelUnavailableError as exc:
                r["ce"] = {"error": str(exc)}
        rows = "\n".join(f"| {t['class']} | {t['probability']:.3f} | {t['group']} | {t['train_count']} |"
                         for t in res.report["top"])
        text = ("| class | probability | group | training images |\n|---|---|---|---|\n" + rows)
        return text, res.cam, cam_ce, r, _save_report(r, "classify")

    def status():
        """Active provider, versions and availability of every model."""
        return {"app_version": __version__, "artifacts": str(engine.artifacts),
                "manifest_error": engine.manifest_error, "models": engine.status()}

    examples = Path(engine.artifacts) / EXAMPLES_DIR
    seq_models = [n for n in engine.names() if n.startswith("seqfake")] or ["seqfake"]
    labels_dcl = engine.manifest["models"].get("dcl", {}).get("labels", [])
    labels_cls = engine.manifest["models"].get("abcnorm", {}).get("labels", [])

    with gr.Blocks(title="RepLens") as demo:
        gr.Markdown("# RepLens\nSequential deepfakes, query-based MIL, contrastive retrieval "
                    "and long-tailed classification - served from ONNX with onnxruntime.")
        with gr.Tab("Face (sequential deepfake)"):
            gr.Markdown("The default model is trained on **procedurally generated faces** "
                        "(no face data set ships offline). It is **not** a detector for real "
                        "deepfakes until it is retrained on real data (`python -m training "
                        "seqfake --data SEQ_DEEPFAKE_DIR`).")
            with gr.Row():
                with gr.Column():
                    f_img = SafeImage(type="filepath", label="Image with a face", elem_id="face-input")
                    f_thr = gr.Slider(0.05, 0.95, value=0.5, step=0.01, label="Threshold")
                    f_idx = gr.Number(value=1, precision=0, minimum=1, label="Face # (1 = largest)")
                    f_crop = gr.Checkbox(value=False, label="Image is already a face crop (skip detection)",
                                         elem_id="face-crop")
                    f_model = gr.Dropdown(seq_models, value=seq_models[0], label="Model (components/attributes)")
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
                             for p in sorted((examples / folder).glob("*.png"))[:n]]
            if face_examples:
                gr.Examples(face_examples, [f_img, f_thr, f_idx, f_crop, f_model])
            f_btn.click(face, [f_img, f_thr, f_idx, f_crop, f_model],
                        [f_text, f_annot, f_cropimg, f_where, f_json, f_file], api_name="face")
            with gr.Accordion("Video", open=False):
                v_in = gr.Video(label="Video with a face")
                v_frames = gr.Slider(2, 64, value=16, step=1, label="Frames to sample")
                v_crop = gr.Checkbox(value=False, label="Frames are face crops")
                v_btn = gr.Button("Analyse video")
                v_plot = gr.Image(label="Timeline")
                v_json = gr.JSON(label="Per-frame report")
                v_file = gr.File(label="Download JSON")
                v_btn.click(face_video, [v_in, f_thr, v_frames, v_crop], [v_plot, v_json, v_file],
                            api_name="face_video")
        with gr.Tab("Bag query (qMIL)"):
            with gr.Row():
                with gr.Column():
                    q_files = gr.File(file_count="multiple", label="Bag: several images, or one video",
                                      elem_id="query-input")
                    q_word = gr.Textbox(label="Query word", placeholder="e.g. sneaker, bag, trouser, boot",
                                        elem_id="query-word")
                    q_btn = gr.Button("Ask", variant="primary", elem_id="query-btn")
                with gr.Column():
                    q_text = gr.Markdown()
                    q_gal = gr.Gallery(label="Instances by attention (bar = beta, red frame = top)",
                                       columns=6, height=360)
                    q_json = gr.JSON(label="Report", elem_id="query-json")
                    q_file = gr.File(label="Download JSON")
            if (examples / "bags").is_dir():
                bags = sorted(p for p in (examples / "bags").iterdir() if p.is_dir())[:4]
                gr.Examples([[sorted(str(f) for f in b.glob("*.png")), b.name.split("_", 1)[-1].replace("-", " ")]
                             for b in bags], [q_files, q_word])
            q_btn.click(query, [q_files, q_word], [q_text, q_gal, q_json, q_file], api_name="query")
        with gr.Tab("Retrieval (DCL)"):
            with gr.Row():
                with gr.Column():
                    r_img = SafeImage(type="filepath", label="Query image", elem_id="retrieval-input")
                    r_k = gr.Slider(1, retrieval_svc.MAX_K, value=8, step=1, label="k")
                    r_lab = gr.Dropdown([""] + labels_dcl, value="", label="Query label (optional)")
                    r_btn = gr.Button("Search", variant="primary", elem_id="retrieval-btn")
                with gr.Column():
                    r_text = gr.Markdown()
                    r_gal = gr.Gallery(label="Nearest gallery images", columns=4, height=360)
                    r_json = gr.JSON(label="Report", elem_id="retrieval-json")
                    r_file = gr.File(label="Download JSON")
            if (examples / "fashion").is_dir():
                gr.Examples([[str(p), 8, p.stem.split("_", 1)[-1].replace("-", " ")]
                             for p in sorted((examples / "fashion").glob("*.png"))[:8]],
                            [r_img, r_k, r_lab])
            r_btn.click(neighbours, [r_img, r_k, r_lab], [r_text, r_gal, r_json, r_file],
                        api_name="neighbours")
        with gr.Tab("Classifier (ABC-Norm)"):
            with gr.Row():
                with gr.Column():
                    c_img = SafeImage(type="filepath", label="Image", elem_id="classify-input")
                    c_cls = gr.Dropdown([""] + labels_cls, value="", label="Explain class (default: predicted)")
                    c_btn = gr.Button("Classify", variant="primary", elem_id="classify-btn")
                with gr.Column():
                    c_text = gr.Markdown()
                    with gr.Row():
                        c_cam = gr.Image(label="Grad-CAM: ABC-Norm", height=240)
                        c_cam_ce = gr.Image(label="Grad-CAM: CE baseline", height=240)
                    c_json = gr.JSON(label="Report", elem_id="classify-json")
                    c_file = gr.File(label="Download JSON")
            if (examples / "fashion").is_dir():
                gr.Examples([[str(p), ""] for p in sorted((examples / "fashion").glob("*.png"))[:8]],
                            [c_img, c_cls])
            c_btn.click(classify, [c_img, c_cls], [c_text, c_cam, c_cam_ce, c_json, c_file],
                        api_name="classify")
        with gr.Tab("Models"):
            gr.Markdown(model_card_markdown(engine))
            s_btn = gr.Button("Status")
            s_json = gr.JSON()
            s_btn.click(status, None, s_json, api_name="status")
    return demo
