"""Inputs are uploads, nothing else. Each request here is built by hand, as a client on the
same machine can send it to 127.0.0.1, against an app served in-process:

* a file named by a request (image, batch files, bag, video) that is not in the server's
  upload folder - an absolute path without Gradio's ``meta``, a ``..`` path, a symlink inside
  the upload folder pointing out, a URL - is refused with one line that says nothing about
  the path (the same whether the file exists or not), never analysed and sent back;
* an uploaded image reaches the app as the bytes that were sent: the sha256 in the case
  report and the batch rows is the user's file's (an RGBA and a grayscale PNG);
* an image over the pixel limit is refused from its header, never decoded;
* the examples (copied by Gradio into its cache) are still accepted.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import socket
import uuid
from pathlib import Path

import httpx
import pytest
from PIL import Image, ImageFile

from app.ui_common import NOT_UPLOADED, upload_folder

pytestmark = pytest.mark.slow
META = {"_type": "gradio.FileData"}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def base(smoke_artifacts) -> str:
    """The URL of an app served in-process on the smoke artifacts."""
    from app.server import create_app

    demo, _ = create_app(smoke_artifacts)
    port = _port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}"
    demo.close()


def call(base: str, api: str, data: list) -> tuple[str, object]:
    """One request through Gradio's HTTP API: ("complete", outputs) or ("error", message)."""
    r = httpx.post(f"{base}/gradio_api/call/{api}", json={"data": data}, timeout=30)
    r.raise_for_status()
    event = None
    with httpx.stream("GET", f"{base}/gradio_api/call/{api}/{r.json()['event_id']}",
                      timeout=120) as s:
        for line in s.iter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and event in ("complete", "error"):
                data = json.loads(line[5:])
                return event, (data.get("error") if isinstance(data, dict) else data)
    raise AssertionError(f"/{api}: the stream ended without an answer")


def upload(base: str, path: Path) -> dict:
    """``path`` uploaded as the page and gradio_client do; its file value for a request."""
    with path.open("rb") as f:
        r = httpx.post(f"{base}/gradio_api/upload", files={"files": (path.name, f)}, timeout=30)
    r.raise_for_status()
    return {"path": r.json()[0], "orig_name": path.name, "meta": META}


def _args(api: str, value: object) -> list:
    """A whole request of ``api`` with ``value`` as its file input."""
    return {"face": [value, 0.5, 1, True, "seqfake"],
            "classify": [value, "", "abcnorm", "none"],
            "neighbours": [value, 4, "", "dcl"],
            "face_batch": [[value], 0.5, True, "seqfake"],
            "query": [[value], "sneaker", "qmil"],
            "face_video": [value, 0.5, 4, True, "seqfake"]}[api]


@pytest.fixture(scope="module")
def secret(smoke_artifacts, tmp_path_factory) -> Path:
    """An image outside the upload folder (a face crop: every endpoint would analyse it)."""
    p = tmp_path_factory.mktemp("private") / "secret.png"
    shutil.copy(sorted((smoke_artifacts / "examples" / "faces").glob("*.png"))[0], p)
    return p


@pytest.fixture(scope="module")
def planted(secret) -> Path:
    """A symlink inside the upload folder that points at ``secret``."""
    folder = upload_folder() / f"replens-test-{uuid.uuid4().hex}"
    folder.mkdir(parents=True)
    link = folder / "link.png"
    link.symlink_to(secret)
    yield link
    shutil.rmtree(folder)


def _names(secret: Path, planted: Path) -> dict[str, dict]:
    """Every way of naming ``secret`` without uploading it, with and without Gradio's
    ``meta`` (without it Gradio checks nothing about an image's path)."""
    dotdot = str(upload_folder()) + "/.." * len(upload_folder().parts) + str(secret)
    url = "http://127.0.0.1:9/secret.png"
    names = {"absolute": {"path": str(secret)},
             "dot-dot": {"path": dotdot, "orig_name": "x.png"},
             "symlink": {"path": str(planted)},
             "url": {"path": url, "url": url}}
    return {**names, **{f"{how} with meta": {**v, "meta": META} for how, v in names.items()},
            "url only": {"url": f"file://{secret}"}}


# Gradio refuses some of these itself, before the app sees the request, without a message
REFUSED = {NOT_UPLOADED, None}


@pytest.mark.parametrize("api", ["face", "classify", "neighbours", "face_batch", "query",
                                 "face_video"])
def test_a_file_that_was_not_uploaded_is_refused(base, secret, planted, api, monkeypatch):
    import gradio.processing_utils as pu

    fetched: list[str] = []

    async def fetch(url: str, cache_dir: str) -> str:  # the download Gradio does for a URL
        fetched.append(url)
        raise OSError("no download in this test")

    monkeypatch.setattr(pu, "async_ssrf_protected_download", fetch)
    for how, value in _names(secret, planted).items():
        if api in ("face_batch", "query", "face_video") and "path" not in value:
            continue  # a file input's value always has a path
        event, answer = call(base, api, _args(api, value))
        assert event == "error" and answer in REFUSED, (api, how, answer)
    assert not fetched


def test_the_answer_says_nothing_about_whether_a_file_exists(base, tmp_path):
    shadow = tmp_path / "shadow"
    shadow.write_text("root:x:0:0\n")
    answers = {call(base, "classify", _args("classify", {"path": str(p)}))
               for p in (shadow, tmp_path / "missing.png", tmp_path)}
    assert answers == {("error", NOT_UPLOADED)}


def _variants(smoke_artifacts: Path, folder: Path) -> list[Path]:
    """A face crop as an RGBA PNG (half transparent) and as a grayscale PNG."""
    face = Image.open(sorted((smoke_artifacts / "examples" / "faces").glob("*.png"))[0])
    rgba = face.convert("RGBA")
    rgba.putalpha(Image.new("L", face.size, 128))
    rgba.save(folder / "rgba.png")
    face.convert("L").save(folder / "gray.png")
    return [folder / "rgba.png", folder / "gray.png"]


def _report_html(answer: list) -> str:
    """The case report HTML an answer links to (the last output)."""
    return Path(answer[-1]["path"]).read_text()


def test_case_report_and_batch_rows_hash_the_bytes_the_user_sent(base, smoke_artifacts,
                                                                  tmp_path):
    files = _variants(smoke_artifacts, tmp_path)
    digests = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
    for p in files:
        event, answer = call(base, "face", _args("face", upload(base, p)))
        assert event == "complete", answer
        assert digests[p.name] in _report_html(answer), p.name
    event, answer = call(base, "face_batch", [[upload(base, p) for p in files], 0.5, True,
                                              "seqfake"])
    assert event == "complete", answer
    assert {r["file"]: r["sha256"] for r in answer[3]["rows"]} == digests


def test_an_image_over_the_pixel_limit_is_refused_before_any_decoding(base, tmp_path,
                                                                      monkeypatch):
    bomb = tmp_path / "bomb.png"
    Image.new("L", (8000, 8000)).save(bomb, optimize=True)
    assert bomb.stat().st_size < 200_000
    decoded: list[tuple[int, int]] = []
    real_load = ImageFile.ImageFile.load

    def spy(self):  # noqa: ANN001 - every decoding of a file in this process
        decoded.append(self.size)
        return real_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    event, answer = call(base, "classify", _args("classify", upload(base, bomb)))
    assert event == "error" and "megapixels" in answer, answer
    assert (8000, 8000) not in decoded


def _example_loader(base: str, elem_id: str) -> str:
    """The API name of the event that loads an example into the input ``elem_id``."""
    cfg = httpx.get(f"{base}/config", timeout=30).json()
    target = next(c["id"] for c in cfg["components"]
                  if c.get("props", {}).get("elem_id") == elem_id)
    return next(d["api_name"] for d in cfg["dependencies"]
                if str(d.get("api_name")).startswith("load_example") and target in d["outputs"])


@pytest.mark.parametrize("api, elem_id", [("classify", "classify-input"), ("face", "face-input"),
                                          ("query", "query-input")])
def test_examples_are_accepted(base, api, elem_id):
    """An example as the page sends it after a click on it: Gradio's copy in its cache."""
    event, loaded = call(base, _example_loader(base, elem_id), [0])
    assert event == "complete", loaded
    value = loaded[0]["value"] if "value" in loaded[0] else loaded[0]
    files = value if isinstance(value, list) else [value]
    assert all(Path(f["path"]).resolve().is_relative_to(upload_folder()) for f in files)
    args = _args(api, value)
    if api == "query":
        args[:2] = [files, loaded[1]["value"]]  # the bag and its word
    event, answer = call(base, api, args)
    assert event == "complete", answer
    if api != "classify":
        assert "Truth (example" in answer[0]


@pytest.mark.parametrize("cls, front_end", [("SafeImage", "image"), ("SafeFile", "file"),
                                            ("SafeVideo", "video")])
def test_upload_inputs_render_with_gradio_front_ends(cls, front_end):
    """The page asks for each input's front end by its block name; a name Gradio has no
    front end for leaves the page without an upload box."""
    import app.ui_common as ui

    assert getattr(ui, cls)().get_block_name() == front_end
