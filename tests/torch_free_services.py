"""The app's services in a process where torch cannot be imported (run by
tests/test_serving_torch_free.py as a subprocess; not a test module itself).

    python -m tests.torch_free_services ARTIFACTS WORKDIR

Before anything of RepLens is imported, a meta-path hook makes ``import`` of torch (and of
the packages that need it, and of ``training``/``export``) fail. Then the Gradio app is
built and the face (detection included; a case report), video, bag query, retrieval and classifier
services run on the artifacts' examples and WORKDIR's astronaut.png and two_faces.mp4.
Prints one JSON object:
the answers' essentials, the detector's name, the error for an artifacts folder without
the ONNX detector, and the top-level modules that were imported.
"""
from __future__ import annotations

import sys

BLOCKED = ("torch", "torchvision", "timm", "facenet_pytorch", "pytorch_grad_cam",
           "retinaface", "onnx", "onnxscript", "lightly", "training", "export")


class _Refuse:
    """Meta-path finder: importing a blocked package raises ImportError."""

    def find_spec(self, name: str, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is blocked in the torch-free serving test")
        return None


def main(artifacts: str, workdir: str) -> dict:
    import json
    from pathlib import Path


    from app import case_report
    from app.faces import default_detector
    from app.server import create_app
    from app.services import classify, face, qmil, retrieval, video
    from runtime.engine import Engine

    art, work = Path(artifacts), Path(workdir)
    out: dict = {}
    demo, engine = create_app(art)  # the whole UI, every tab
    out["tabs_built"] = demo is not None
    det = default_detector(artifacts=art)
    out["detector"] = det.name
    photo = work / "astronaut.png"  # written by the test, as the video
    res = face.analyze_face_models(engine, det, str(photo), ["seqfake"])[0]
    out["face"] = {k: res.report[k] for k in ("faces", "verdict", "raw_verdict", "detector",
                                                    "rotated")}
    html = case_report.face_report(photo.name, "0" * 64, [res],
                                   [case_report.model_info(engine.get("seqfake", face.METHOD))])
    out["case_report_chars"] = len(html)
    vid = video.analyze_video(engine, det, str(work / "two_faces.mp4"), max_frames=6)
    out["video"] = {k: vid.report[k] for k in ("frames_sampled", "frames_analysed")}
    out["video"]["tracks"] = len(vid.report["tracks"])
    ex = art / "examples"
    bag = sorted((ex / "bags").iterdir())[0]
    ans = qmil.query_bag(engine, sorted(str(p) for p in bag.iterdir()), bag.name.split("_")[1])
    out["qmil"] = {k: ans.report[k] for k in ("bag_size", "query", "answer", "raw_answer")}
    fashion = sorted((ex / "fashion").glob("*.png"))[0]
    cls = classify.classify(engine, str(fashion))
    out["classify"] = {"top": cls.report["top"][0]["class"], "cam_shape": list(cls.cam.shape)}
    nb = retrieval.neighbours(engine, str(fashion), k=3)
    out["neighbours"] = len(nb.report["neighbours"])
    try:
        default_detector(artifacts=work / "no_detector")
        out["missing_detector_error"] = None
    except Exception as exc:  # noqa: BLE001 - reported to the test
        out["missing_detector_error"] = f"{type(exc).__name__}: {exc}"
    out["modules"] = sorted({m.split(".")[0] for m in sys.modules})
    out["blocked_imported"] = sorted(m for m in BLOCKED if sys.modules.get(m) is not None)
    demo.close()
    print(json.dumps(out, default=str))
    return out


if __name__ == "__main__":
    sys.meta_path.insert(0, _Refuse())
    main(sys.argv[1], sys.argv[2])
