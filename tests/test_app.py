"""The app in-process, called through gradio_client on real files: every endpoint, the bad
inputs' messages, and a missing model that disables only its tab."""
from __future__ import annotations

import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.api_schema import ValidatingClient

pytestmark = pytest.mark.slow


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(art: Path):
    from app.server import create_app

    demo, _ = create_app(art)
    port = _port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    from gradio_client import Client

    # every answer is checked against its schema in docs/api/ (tests/api_schema.py)
    return demo, ValidatingClient(Client(f"http://127.0.0.1:{port}/", verbose=False))


@pytest.fixture(scope="module")
def client(smoke_artifacts):
    demo, c = _serve(smoke_artifacts)
    yield c
    demo.close()


def _files(art, kind):
    return sorted((art / "examples" / kind).glob("*.png"))


def _err(client, *args, api_name):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError) as info:
        client.predict(*args, api_name=api_name)
    return str(info.value)


def test_endpoints_have_named_parameters(client):
    api = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    names = {ep: [p["parameter_name"] for p in info["parameters"]] for ep, info in api.items()}
    assert names["/face"] == ["image", "threshold", "face_number", "is_crop", "model_name"]
    assert names["/query"] == ["files", "word", "model_name"]
    assert names["/classify"] == ["image", "cam_class", "model_name", "compare_with"]
    assert names["/neighbours"] == ["image", "k", "label", "model_name"]


def test_status_lists_models_and_provider(client):
    st = client.predict(api_name="/status")
    assert st["manifest_error"] is None
    for name in ("seqfake", "qmil", "dcl", "abcnorm"):
        assert st["models"][name]["status"] == "ok"
        assert st["models"][name]["provider"].endswith("ExecutionProvider")


def test_face_on_generated_crop(client, smoke_artifacts):
    from gradio_client import handle_file

    f = _files(smoke_artifacts, "faces")[0]
    text, annotated, crop, where, report, download, case = client.predict(
        handle_file(str(f)), 0.5, 1, True, "seqfake", api_name="/face")
    assert report["verdict"] in ("real", "manipulated")
    assert set(report["probabilities"]) == {"nose", "eye", "eyebrow", "lip", "hair"}
    seq = [s["component"] for s in report["sequence"]]
    probs = [report["probabilities"][c] for c in seq]
    # the report rounds to 4 decimals: a P just above 0.5 shows as 0.5
    assert probs == sorted(probs, reverse=True) and all(p >= 0.5 for p in probs)
    assert (report["verdict"] == "real") == (not seq)
    assert np.asarray(Image.open(where)).shape[:2] == (256, 256)
    assert Path(download).read_text().startswith("{")
    html = Path(case).read_text()                 # the case report of this answer
    assert f.name in html and report["model_version"] in html and 'id="section-where"' in html


def test_face_detection_on_a_photo(client, tmp_path):
    from gradio_client import handle_file
    from skimage import data

    p = tmp_path / "astronaut.png"
    Image.fromarray(data.astronaut()).save(p)
    *_, report, _, _ = client.predict(handle_file(str(p)), 0.5, 1, False, "seqfake", api_name="/face")
    assert len(report["faces"]) >= 1 and report["face_number"] == 1
    assert report["detector"].startswith("MTCNN")


def test_face_bad_inputs(client, tmp_path):
    from gradio_client import handle_file

    blank = tmp_path / "blank.png"
    Image.new("RGB", (300, 300), (128, 128, 128)).save(blank)
    assert "No face was found" in _err(client, handle_file(str(blank)), 0.5, 1, False, "seqfake",
                                       api_name="/face")
    tiny = tmp_path / "tiny.png"
    Image.new("RGB", (4, 4)).save(tiny)
    assert "at least" in _err(client, handle_file(str(tiny)), 0.5, 1, True, "seqfake",
                              api_name="/face")
    from skimage import data

    p = tmp_path / "astronaut.png"
    Image.fromarray(data.astronaut()).save(p)
    assert "does not exist" in _err(client, handle_file(str(p)), 0.5, 5, False, "seqfake",
                                    api_name="/face")


def test_query_seen_zero_shot_and_bad_words(client, smoke_artifacts):
    from gradio_client import handle_file

    bag = sorted(p for p in (smoke_artifacts / "examples" / "bags").iterdir() if p.is_dir())[0]
    files = [handle_file(str(p)) for p in sorted(bag.glob("*.png"))]
    for word in ("trouser", "sneaker", "boot"):
        text, gallery, report, _ = client.predict(files, word, api_name="/query")
        beta = [a["beta"] for a in report["attention"]]
        assert len(beta) == len(files) and abs(sum(beta) - 1) < 1e-3
        assert beta == sorted(beta, reverse=True) and len(gallery) == len(files)
        assert report["answer"] == ("yes" if report["probability"] >= 0.5 else "no")
        if word == "trouser":  # a training query: no caution
            assert report["query_kind"] == "seen in training" and "warning" not in report
            assert "Caution" not in text
        else:  # zero-shot: the closest training queries and the measured caution
            near = report["closest_training_queries"]
            cos = [c["cosine"] for c in near]
            assert len(near) == 3 and cos == sorted(cos, reverse=True)
            assert {c["query"] for c in near} <= {"t-shirt", "trouser", "pullover", "dress",
                                                  "sandal", "bag", "ankle boot"}
            assert "Caution" in text and "qmil_synonyms" in report["warning"]
    assert near[0]["query"] == "ankle boot"  # "boot" is closest to "ankle boot"
    assert "close known words" in _err(client, files, "snekaer", api_name="/query") \
        or "did you mean" in _err(client, files, "snekaer", api_name="/query").lower()
    assert "Type a query" in _err(client, files, "   ", api_name="/query")
    assert "empty" in _err(client, [], "sneaker", api_name="/query")


def test_neighbours_with_label_precision(client, smoke_artifacts):
    from gradio_client import handle_file

    f = _files(smoke_artifacts, "fashion")[7]
    text, gallery, report, _ = client.predict(handle_file(str(f)), 5, "sneaker", api_name="/neighbours")
    sims = [h["similarity"] for h in report["neighbours"]]
    assert len(sims) == 5 and sims == sorted(sims, reverse=True)
    labels = [h["label"] for h in report["neighbours"]]
    assert report["precision_at_k"] == pytest.approx(labels.count("sneaker") / 5, abs=1e-4)
    # the example is a gallery image (Fashion-MNIST test): marked, and not its own neighbour
    assert report["query_in_gallery"] is True and report["query_gallery_id"].startswith(
        "fashion-mnist-test#")
    assert report["query_gallery_id"] not in [h["id"] for h in report["neighbours"]]
    assert "minimum" in _err(client, handle_file(str(f)), 0, "", api_name="/neighbours")


def test_classify_top5_groups_and_cam(client, smoke_artifacts, tmp_path):
    from gradio_client import handle_file

    f = _files(smoke_artifacts, "fashion")[0]
    text, cam, cam_ce, report, _ = client.predict(handle_file(str(f)), "", api_name="/classify")
    top = report["abcnorm"]["top"]
    assert len(top) == 5 and all(t["group"] in ("many", "medium", "few") for t in top)
    assert [t["probability"] for t in top] == sorted((t["probability"] for t in top), reverse=True)
    assert "abcnorm_ce" in report and cam_ce is not None      # CE beside ABC-Norm
    assert np.asarray(Image.open(cam)).ndim == 3
    notimg = tmp_path / "notes.png"
    notimg.write_bytes(b"this is text, not a PNG")
    msg = _err(client, handle_file(str(notimg)), "", api_name="/classify")
    assert "image" in msg.lower()
    # the app keeps serving after bad input
    *_, report2, _ = client.predict(handle_file(str(f)), "", api_name="/classify")
    assert report2["abcnorm"]["top"] == top


def test_missing_model_disables_only_its_tab(smoke_artifacts, tmp_path):
    from gradio_client import handle_file

    art = tmp_path / "art"
    shutil.copytree(smoke_artifacts, art)
    (art / "onnx" / "qmil.onnx").unlink()
    demo, c = _serve(art)
    try:
        st = c.predict(api_name="/status")
        assert st["models"]["qmil"]["status"] == "unavailable"
        bag = sorted(p for p in (art / "examples" / "bags").iterdir() if p.is_dir())[0]
        files = [handle_file(str(p)) for p in sorted(bag.glob("*.png"))]
        assert "missing" in _err(c, files, "sneaker", api_name="/query")
        f = _files(art, "fashion")[0]
        *_, report, _ = c.predict(handle_file(str(f)), "", api_name="/classify")
        assert report["abcnorm"]["top"]
    finally:
        demo.close()


def test_oversized_bag_and_unicode_query(client, smoke_artifacts):
    from gradio_client import handle_file

    from app.settings import current as limits

    f = handle_file(str(_files(smoke_artifacts, "fashion")[0]))
    assert "limit" in _err(client, [f] * (limits().max_bag + 1), "bag", api_name="/query")
    msg = _err(client, [f, f], "ünïcödé-wörd", api_name="/query")
    assert "no word vector" in msg
    assert "limit" in _err(client, [f, f], "w" * 300, api_name="/query")


def test_face_video_timeline(client, smoke_artifacts, tmp_path):
    import cv2
    from gradio_client import handle_file

    frames = [np.asarray(Image.open(p).convert("RGB")) for p in _files(smoke_artifacts, "faces")[:3]]
    path = tmp_path / "faces.mp4"
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 4, (256, 256))
    for fr in frames * 4:
        vw.write(cv2.cvtColor(fr, cv2.COLOR_RGB2BGR))
    vw.release()
    plot, report, _, crops, plots, case = client.predict(handle_file(str(path)), 0.5, 5, True,
                                                         api_name="/face_video")
    assert report["frames_sampled"] == 5 and report["frames_analysed"] == 5
    times = [f["time"] for f in report["frames"]]
    assert times == sorted(times) and np.asarray(Image.open(plot)).ndim == 3
    (track,) = report["tracks"]                   # crops: one person
    assert track["frames"] == 5 and len(crops) == len(track["top_frames"]) and len(plots) == 1
    html = Path(case).read_text()
    assert 'id="section-tracks"' in html and "faces.mp4" in html
