"""Case reports (app.case_report): one self-contained HTML file per analysis.

FaceResult objects are built directly and the video result is a stand-in with the
``app.services.video`` contract, so no model is needed. The browser test opens the face and
video reports in Debian's headless Chromium; with ``REPLENS_WRITE_REPORT_PNG=1`` it copies the
face report's screenshot to ``reports/case_report.png``.
"""
from __future__ import annotations

import base64
import io
import os
import re
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from PIL import Image

import app
from app import case_report as cr
from app.services.face import FaceResult

EVIL = "<script>alert(1)</script>.png"
WHEN = datetime(2026, 3, 1, 12, 30, 5, tzinfo=timezone(timedelta(hours=1)))
PNG_URI = "data:image/png;base64,"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SEQFAKE_MODEL = {"name": "seqfake", "version": "seqfake-abc-1", "sha256": "a" * 64,
                 "file": "onnx/seqfake.onnx", "method": "seqfake", "trained_on": "generated faces",
                 "metrics": {"fixed_acc": 0.663, "adaptive_acc": 0.4035, "n_eval": 600}}
ATTR_MODEL = {"name": "seqfake_attr", "version": "seqfake_attr-abc-1", "sha256": "b" * 64,
              "file": "onnx/seqfake_attr.onnx", "metrics": {"fixed_acc": 0.616}}


# ------------------------------------------------------------------------------- helpers

class Sections(HTMLParser):
    """Text, images and tags of each ``<section id=...>`` (sections are not nested)."""

    def __init__(self) -> None:
        super().__init__()
        self.text: dict[str, str] = {}
        self.imgs: dict[str, list[str]] = {}
        self.tags: list[str] = []
        self.srcs: list[str] = []
        self._cur: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.append(tag)
        for key in ("src", "href"):
            if a.get(key) is not None:
                self.srcs.append(a[key] or "")
        if tag == "section":
            self._cur = a.get("id") or ""
            self.text[self._cur], self.imgs[self._cur] = "", []
        elif tag == "img" and self._cur is not None:
            self.imgs[self._cur].append(a.get("src") or "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "section":
            self._cur = None

    def handle_data(self, data: str) -> None:
        if self._cur is not None:
            self.text[self._cur] += " " + data


def parse(html: str) -> Sections:
    p = Sections()
    p.feed(html)
    p.close()
    return p


def decode_png(uri: str) -> Image.Image:
    assert uri.startswith(PNG_URI)
    img = Image.open(io.BytesIO(base64.b64decode(uri[len(PNG_URI):], validate=True)))
    img.load()
    assert img.format == "PNG"
    return img


def assert_self_contained(html: str, sections: tuple[str, ...], n_images: int) -> Sections:
    """Every section present and filled beyond its title; images embedded and decodable;
    nothing loaded from elsewhere, nothing run."""
    p = parse(html)
    for sid in sections:
        assert sid in p.text, f"{sid} missing"
        assert len(p.text[sid].split()) >= 4, f"{sid} is empty: {p.text[sid]!r}"
    assert html.count(PNG_URI) == n_images
    assert sum(len(v) for v in p.imgs.values()) == n_images
    for uris in p.imgs.values():
        for uri in uris:
            assert decode_png(uri).size[0] > 0
    assert all(s.startswith(PNG_URI) for s in p.srcs), p.srcs
    assert not re.search(r"https?://", html)
    assert "script" not in p.tags and "link" not in p.tags and "iframe" not in p.tags
    assert "url(" not in html and "@import" not in html
    return p


def image(h: int, w: int, seed: int) -> np.ndarray:
    """Noise: every pixel differs, so a round trip through PNG is checked exactly."""
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def face_picture(size: int, hue: int = 0) -> np.ndarray:
    """A drawn face (so the reviewed screenshot shows something legible)."""
    from PIL import ImageDraw

    img = Image.new("RGB", (size, size), (200 - hue, 215, 230))
    d, s = ImageDraw.Draw(img), size / 100
    d.ellipse([18 * s, 10 * s, 82 * s, 92 * s], fill=(236, 196, 160), outline=(120, 80, 60))
    for x in (36, 64):
        d.ellipse([(x - 7) * s, 38 * s, (x + 7) * s, 46 * s], fill="white", outline="black")
        d.ellipse([(x - 3) * s, 39 * s, (x + 3) * s, 45 * s], fill=(60, 40, 20))
        d.line([(x - 9) * s, 32 * s, (x + 8) * s, 30 * s], fill=(80, 50, 30),
               width=max(1, int(2 * s)))
    d.polygon([(50 * s, 48 * s), (44 * s, 64 * s), (56 * s, 64 * s)], fill=(215, 170, 135))
    d.arc([36 * s, 66 * s, 64 * s, 80 * s], 10, 170, fill=(170, 40, 50), width=max(1, int(3 * s)))
    return np.asarray(img)


def where_map(crop: np.ndarray, cy: float, cx: float) -> np.ndarray:
    """The crop under a red blob, as app.viz.overlay_heatmap draws a where-map."""
    h, w = crop.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    heat = np.exp(-(((yy - cy * h) ** 2 + (xx - cx * w) ** 2) / (2 * (0.12 * h) ** 2)))[..., None]
    red = np.array([230, 30, 30], float)
    return (crop * (1 - 0.6 * heat) + red * 0.6 * heat).astype(np.uint8)


def scene() -> np.ndarray:
    """Two faces, boxed, the first (analysed) one highlighted."""
    from PIL import ImageDraw

    img = Image.new("RGB", (360, 220), (90, 110, 130))
    img.paste(Image.fromarray(face_picture(150)), (30, 40))
    img.paste(Image.fromarray(face_picture(90, 40)), (240, 60))
    d = ImageDraw.Draw(img)
    d.rectangle([30, 40, 180, 190], outline=(0, 230, 0), width=3)
    d.rectangle([240, 60, 330, 150], outline=(240, 200, 0), width=2)
    return np.asarray(img)


def plot(values: list[list[float]], w: int = 640, h: int = 160) -> np.ndarray:
    """A line plot over time, as app.viz.timeline draws one."""
    from PIL import ImageDraw

    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    d.rectangle([40, 10, w - 10, h - 20], outline="black")
    y = lambda p: 10 + (1 - p) * (h - 30)  # noqa: E731
    d.line([40, y(0.5), w - 10, y(0.5)], fill=(150, 150, 150))
    for k, series in enumerate(values):
        step = (w - 50) / max(1, len(series) - 1)
        d.line([(40 + i * step, y(p)) for i, p in enumerate(series)],
               fill=[(200, 30, 30), (30, 90, 200)][k % 2], width=2)
    return np.asarray(img)


def face_results(domain: bool = True) -> list[FaceResult]:
    annotated, crop = scene(), face_picture(128)
    faces = [{"box": [30.0, 40.0, 180.0, 190.0], "score": 0.99, "landmarks": None},
             {"box": [240.0, 60.0, 330.0, 150.0], "score": 0.8, "landmarks": None}]
    common = {"faces": faces, "face_number": 1, "detector": "yunet", "threshold": 0.5,
              "trained_on": "generated faces, not real deepfakes"}
    fake = dict(common, model="seqfake", model_version="seqfake-abc-1", verdict="manipulated",
                fake_probability=0.91, decoder="probability-ranked", task="components",
                sequence=[{"step": 1, "component": "nose", "probability": 0.91},
                          {"step": 2, "component": "<b>lip</b>", "probability": 0.72}],
                sequence_text="1. nose -> 2. <b>lip</b>",
                probabilities={"nose": 0.91, "eye": 0.12, "<b>lip</b>": 0.72})
    if domain:
        fake["domain"] = {"in_domain": False, "score": 0.31, "threshold": 0.6,
                          "trained_on": "generated faces"}
    real = dict(common, model="seqfake_attr", model_version="seqfake_attr-abc-1",
                verdict="real", fake_probability=0.2, decoder="probability-ranked",
                task="attributes", sequence=[], sequence_text="no manipulation found",
                probabilities={"bangs": 0.2, "young": 0.05})
    return [FaceResult(fake, annotated, crop, where_map(crop, 0.56, 0.5)),
            FaceResult(real, annotated, crop, where_map(crop, 0.35, 0.4))]


@dataclass
class TrackResult:  # the app.services.video contract
    track_id: int
    report: dict
    timeline: np.ndarray
    top_crops: list[np.ndarray] = field(default_factory=list)


@dataclass
class VideoResult:
    report: dict
    timeline: np.ndarray
    tracks: list[TrackResult]


def video_result() -> VideoResult:
    def frames(ps: list[float]) -> list[dict[str, Any]]:
        return [{"time": 0.5 * i, "fake_probability": p, "probabilities": {"nose": p, "eye": 0.1},
                 "sequence": "1. nose" if p > 0.5 else "no manipulation found",
                 "box": [1, 2, 30, 40]} for i, p in enumerate(ps)]

    t1 = TrackResult(1, {"track": 1, "frames": 3, "fake_probability": 0.8, "verdict": "manipulated",
                         "sequence_text": "1. nose", "timeline": frames([0.7, 0.9, 0.8]),
                         "top_frames": [{"time": 0.5, "fake_probability": 0.9},
                                        {"time": 1.0, "fake_probability": 0.8}]},
                     plot([[0.7, 0.9, 0.8]]), [face_picture(96), face_picture(96, 30)])
    t2 = TrackResult(2, {"track": 2, "frames": 2, "fake_probability": 0.1, "verdict": "real",
                         "sequence_text": "no manipulation found", "timeline": frames([0.1, 0.1]),
                         "top_frames": [{"time": 0.0, "fake_probability": 0.1}]},
                     plot([[0.1, 0.1]]), [image(24, 24, 8)])
    report = {"video": EVIL, "frames_sampled": 4, "frames_analysed": 3, "tracks": [t1.report,
              t2.report], "verdict": "manipulated", "video_fake_probability": 0.8,
              "threshold": 0.5, "model": "seqfake", "model_version": "seqfake-abc-1",
              "frames": []}
    return VideoResult(report, plot([[0.7, 0.9, 0.8], [0.1, 0.1, 0.1]], 800, 200), [t1, t2])


# ------------------------------------------------------------------------------- face

def test_face_report_sections_images_and_escaping():
    results = face_results()
    html = cr.face_report(EVIL, "f" * 64, results, [SEQFAKE_MODEL, ATTR_MODEL], WHEN)
    # annotated input + crop + one where-map per model
    p = assert_self_contained(html, cr.FACE_SECTIONS, 4)
    assert len(p.imgs["section-input"]) == 1 and len(p.imgs["section-faces"]) == 1
    assert len(p.imgs["section-where"]) == 2
    sizes = [decode_png(u).size for u in p.imgs["section-input"] + p.imgs["section-where"]]
    assert sizes == [(360, 220), (128, 128), (128, 128)]
    assert np.array_equal(np.asarray(decode_png(p.imgs["section-faces"][0])), results[0].crop)
    # the file name and a label with markup are text, not tags
    assert "<script" not in html.lower() and "<b>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;.png" in html
    assert EVIL in p.text["section-input"]
    assert "f" * 64 in p.text["section-input"]
    seq = p.text["section-sequence"]
    assert "manipulated" in seq and "real" in seq and "<b>lip</b>" in seq
    assert seq.index("nose") < seq.index("<b>lip</b>")  # the order of the sequence
    assert "0.72" in seq and "no manipulation found" in seq
    models = p.text["section-models"]
    for text in ("seqfake-abc-1", "a" * 64, "onnx/seqfake.onnx", "fixed_acc", "0.663",
                 "adaptive_acc", "0.4035", "seqfake_attr-abc-1", "b" * 64):
        assert text in models, text
    assert "2" in p.text["section-faces"] and "yunet" in p.text["section-input"]


def test_domain_check_shown_when_present_never_invented():
    html = cr.face_report("a.png", "0" * 64, face_results(domain=True), [SEQFAKE_MODEL], WHEN)
    dom = parse(html).text["section-domain"]
    assert "out of domain" in dom and "0.31" in dom and "0.6" in dom
    assert dom.count(cr.NO_DOMAIN_CHECK) == 1  # the second model has none
    html = cr.face_report("a.png", "0" * 64, face_results(domain=False), [SEQFAKE_MODEL], WHEN)
    dom = parse(html).text["section-domain"]
    assert dom.count(cr.NO_DOMAIN_CHECK) == 2 and "in domain" not in dom
    assert "generated faces" in dom  # what it was trained on is still said


def test_time_of_analysis_and_version():
    html = cr.face_report("a.png", "0" * 64, face_results(), [], WHEN)
    t = parse(html).text["section-time"]
    assert "2026-03-01T12:30:05+01:00" in t and app.__version__ in t
    naive = cr.face_report("a.png", "0" * 64, face_results(), [], datetime(2026, 1, 2, 3, 4, 5))
    assert "2026-01-02T03:04:05+00:00" in parse(naive).text["section-time"]
    now = parse(cr.face_report("a.png", "0" * 64, face_results(), [])).text["section-time"]
    stamp = re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d", now).group(0)
    when = datetime.fromisoformat(stamp)
    assert when.utcoffset() == timedelta(0)
    assert abs((datetime.now(timezone.utc) - when).total_seconds()) < 60
    assert "No model information" in parse(html).text["section-models"]


def test_face_crop_input_without_detection():
    results = face_results()
    for r in results:
        r.annotated = None
        r.report.update(faces=[], face_number=None, detector="none (crop given)")
    html = cr.face_report("crop.png", "0" * 64, results, [SEQFAKE_MODEL], WHEN)
    p = assert_self_contained(html, cr.FACE_SECTIONS, 3)
    assert "face crop" in p.text["section-input"] and not p.imgs["section-input"]
    with pytest.raises(ValueError):
        cr.face_report("a.png", "0" * 64, [], [], WHEN)


# ------------------------------------------------------------------------------- batch

def test_batch_report_rows_errors_and_thumbnails():
    rows = [{"file": "a.png", "face": 1, "model": "seqfake", "verdict": "manipulated",
             "fake_probability": 0.91, "sequence": "nose", "in_domain": None},
            {"file": EVIL, "error": "No face was found in this image."},
            {"file": "b.png", "face": 1, "model": "seqfake", "verdict": "real",
             "fake_probability": 0.12, "sequence": "", "p_nose": 0.12, "in_domain": None}]
    summary = {"files": 3, "faces": 2, "manipulated": 1, "errors": 1, "seconds": 1.25}
    thumbs = {"a.png#1": image(16, 16, 10), "b.png#1": image(16, 16, 11), "c.png#1": image(8, 8, 1)}
    html = cr.batch_report(rows, summary, [SEQFAKE_MODEL], WHEN, thumbnails=thumbs)
    p = assert_self_contained(html, cr.BATCH_SECTIONS, 2)  # c.png is not a row
    table = re.search(r'<table id="batch-rows">.*?</table>', html, re.S).group(0)
    header = re.findall(r"<th>(.*?)</th>", table)
    assert header == ["outcome", "face", "file", "face", "model", "verdict", "fake_probability",
                      "sequence", "in_domain", "error", "p_nose"]  # union, first-seen order
    trs = re.findall(r'<tr class="(row-[a-z]+)">(.*?)</tr>', table, re.S)
    assert [c for c, _ in trs] == ["row-ok", "row-error", "row-ok"]
    assert "failed" in trs[1][1] and "No face was found in this image." in trs[1][1]
    assert "&lt;script&gt;" in trs[1][1] and "<script" not in html.lower()
    assert "failed" not in trs[0][1]
    assert "(3 rows, 1 failed)" in p.text["section-rows"]
    s = p.text["section-summary"]
    assert all(k in s for k in summary) and "1.25" in s
    assert cr.NO_DOMAIN_CHECK in p.text["section-domain"]
    checked = [dict(rows[0], in_domain=True), rows[1], dict(rows[2], in_domain=False)]
    dom = parse(cr.batch_report(checked, summary, [], WHEN)).text["section-domain"]
    assert cr.NO_DOMAIN_CHECK not in dom and "out of domain" in dom


# ------------------------------------------------------------------------------- video

def test_video_report_sections_and_images():
    result = video_result()
    html = cr.video_report(result.report["video"], "e" * 64, result, [SEQFAKE_MODEL], WHEN)
    # overview + (timeline + top crops) per track: 1 + (1 + 2) + (1 + 1)
    p = assert_self_contained(html, cr.VIDEO_SECTIONS, 6)
    assert len(p.imgs["section-timeline"]) == 1 and len(p.imgs["section-tracks"]) == 5
    assert decode_png(p.imgs["section-timeline"][0]).size == (800, 200)
    assert np.array_equal(np.asarray(decode_png(p.imgs["section-tracks"][-1])), image(24, 24, 8))
    assert "<script" not in html.lower() and EVIL in p.text["section-input"]
    tracks = p.text["section-tracks"]
    assert "Track 1" in tracks and "Track 2" in tracks and tracks.index("Track 1") < \
        tracks.index("Track 2")
    assert "t = 0.5 s, p = 0.9" in tracks and "manipulated" in tracks and "real" in tracks
    seq = p.text["section-sequence"]
    assert seq.count("1. nose") == 3 and "nose 0.7" in seq
    assert "0.8" in p.text["section-input"] and "seqfake-abc-1" in p.text["section-input"]
    assert cr.NO_DOMAIN_CHECK in p.text["section-domain"]


def test_video_report_with_the_services_dataclasses():
    try:
        from app.services import video as service
        real = service.VideoResult(video_result().report, plot([[0.5]]), [
            service.TrackResult(t.track_id, t.report, t.timeline, t.top_crops)
            for t in video_result().tracks])
    except (ImportError, AttributeError, TypeError) as exc:  # the service is being rewritten
        pytest.skip(f"app.services.video has not the TrackResult contract yet: {exc}")
    html = cr.video_report("v.mp4", "0" * 64, real, [SEQFAKE_MODEL], WHEN)
    assert_self_contained(html, cr.VIDEO_SECTIONS, 6)


def test_video_report_without_tracks_or_plots():
    bare = SimpleNamespace(report={"frames_sampled": 4, "frames_analysed": 0, "verdict": "real",
                                   "model": "seqfake"}, timeline=None)
    html = cr.video_report("v.mp4", "0" * 64, bare, [], WHEN)
    p = assert_self_contained(html, cr.VIDEO_SECTIONS, 0)
    assert "No face track" in p.text["section-tracks"]


# ------------------------------------------------------------------------------- injection
INJECT = '"><img src=x onerror=alert(1)><b>bold</b>'


def _no_markup_from(html: str, n_images: int, sections: tuple[str, ...]) -> None:
    """``INJECT`` shows as text only: no tag, attribute or image of it reached the page."""
    p = assert_self_contained(html, sections, n_images)  # every <img> is one of ours
    assert p.tags.count("b") == 0 and "src=x" not in p.srcs
    assert "&lt;img src=x onerror=alert(1)&gt;&lt;b&gt;bold&lt;/b&gt;" in html
    assert any(INJECT in text for text in p.text.values())


def test_user_and_model_strings_are_escaped_by_the_template():
    """File names, query words, labels, model names and error messages reach the page as
    text (the template's autoescape), in every kind of report."""
    results = face_results()
    rep = results[0].report
    rep.update(model=INJECT, headline=INJECT, sequence_text=INJECT, detector=INJECT,
               probabilities={INJECT: 0.5}, domain={"in_domain": False, "score": 1.0,
                                                     "threshold": 0.5, "trained_on": INJECT})
    rep["sequence"][0]["component"] = INJECT
    html = cr.face_report(INJECT, "f" * 64, results,
                          [dict(SEQFAKE_MODEL, name=INJECT, trained_on=INJECT,
                                metrics={INJECT: 0.5})], WHEN)
    _no_markup_from(html, 4, cr.FACE_SECTIONS)
    rows = [{"file": INJECT, "query": INJECT, "class": INJECT, INJECT: 1, "in_domain": None},
            {"file": "b.png", "error": INJECT}]
    _no_markup_from(cr.batch_report(rows, {INJECT: INJECT}, [dict(SEQFAKE_MODEL, name=INJECT)],
                                    WHEN), 0, cr.BATCH_SECTIONS)
    video = video_result()
    video.report["model"] = INJECT
    video.tracks[0].report.update(sequence_text=INJECT, headline=INJECT, reliable=False,
                                  reliability="out_of_domain")
    video.tracks[0].report["timeline"][0]["probabilities"] = {INJECT: 0.5}
    _no_markup_from(cr.video_report(INJECT, "e" * 64, video, [SEQFAKE_MODEL], WHEN), 6,
                    cr.VIDEO_SECTIONS)


# ------------------------------------------------------------------------------- pieces

def test_png_data_uri_round_trips_and_refuses_non_images():
    rgb = image(5, 7, 12)
    assert np.array_equal(np.asarray(decode_png(cr.png_data_uri(rgb))), rgb)
    gray = decode_png(cr.png_data_uri(np.linspace(0, 1, 12).reshape(3, 4)))
    assert gray.mode == "L" and np.asarray(gray)[-1, -1] == 255
    for bad in (np.zeros(5), np.zeros((2, 2, 2)), np.zeros((0, 3, 3))):
        with pytest.raises(ValueError):
            cr.png_data_uri(bad)


def test_model_info_from_a_real_onnx_model(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    from runtime.engine import Engine
    from runtime.manifest import sha256_file, update_manifest

    graph = helper.make_graph(
        [helper.make_node("Identity", ["image"], ["probs"])], "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 5])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, 5])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    path = tmp_path / "onnx" / "seqfake.onnx"
    path.parent.mkdir()
    onnx.save(model, str(path))
    entry = {"name": "seqfake", "method": "seqfake", "variant": "thesis", "served": True,
             "version": "seqfake-3dea-2026", "file": "onnx/seqfake.onnx",
             "sha256": sha256_file(path), "labels": ["nose", "eye", "eyebrow", "lip", "hair"],
             "exported_at": "2026-03-01T10:00:00+00:00",
             "metrics": {"fixed_acc": 0.663, "adaptive_acc": 0.40353982300884955,
                         "n_eval": 600.0, "curve": [1, 2]},
             "extra": {"task": "components", "threshold": 0.5,
                       "data": "generated faces (training.data.faces_synth), not real deepfakes"}}
    update_manifest(tmp_path, "seqfake", entry)
    info = cr.model_info(Engine(tmp_path).get("seqfake", "seqfake"))
    assert info["name"] == "seqfake" and info["version"] == "seqfake-3dea-2026"
    assert info["sha256"] == entry["sha256"] and info["file"] == "onnx/seqfake.onnx"
    assert info["metrics"] == {"fixed_acc": 0.663, "adaptive_acc": 0.4035, "n_eval": 600.0}
    assert info["trained_on"].startswith("generated faces") and info["threshold"] == 0.5
    assert info["method"] == "seqfake" and info["task"] == "components"
    html = cr.face_report("a.png", "0" * 64, face_results(), [info], WHEN)
    models = parse(html).text["section-models"]
    assert "0.4035" in models and entry["sha256"] in models and "2026-03-01T10:00" in models


def test_write_report_is_atomic(tmp_path):
    html = cr.face_report("a.png", "0" * 64, face_results(), [SEQFAKE_MODEL], WHEN)
    target = tmp_path / "new" / "case.html"
    assert cr.write_report(target, html) == target
    assert target.read_text(encoding="utf-8") == html
    cr.write_report(str(target), "<!DOCTYPE html>second")
    assert target.read_text() == "<!DOCTYPE html>second"
    assert [p.name for p in target.parent.iterdir()] == ["case.html"]  # no temp file left


# ------------------------------------------------------------------------------- browser

@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian's chromium is not installed")
def test_reports_render_in_chromium(tmp_path):
    from playwright.sync_api import sync_playwright

    video = video_result()
    reports = {
        "face": (cr.face_report(EVIL, "f" * 64, face_results(), [SEQFAKE_MODEL, ATTR_MODEL],
                                WHEN), cr.FACE_SECTIONS, 4),
        "video": (cr.video_report(EVIL, "e" * 64, video, [SEQFAKE_MODEL], WHEN),
                  cr.VIDEO_SECTIONS, 6),
    }
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        try:
            for name, (html, sections, n_images) in reports.items():
                path = cr.write_report(tmp_path / f"{name}.html", html)
                page = browser.new_page(viewport={"width": 1200, "height": 900})
                requests: list[str] = []
                page.on("request", lambda r: requests.append(r.url))
                dialogs: list[str] = []
                page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
                page.goto(path.as_uri(), wait_until="load")
                assert EVIL in page.title()
                for media in ("screen", "print"):
                    page.emulate_media(media=media)
                    for sid in sections:
                        assert page.locator(f"#{sid}").is_visible(), (name, media, sid)
                widths = page.eval_on_selector_all(
                    "img", "imgs => imgs.map(i => i.complete ? i.naturalWidth : 0)")
                assert len(widths) == n_images and all(w > 0 for w in widths), widths
                assert page.locator("script").count() == 0 and not dialogs
                assert [u for u in requests if not u.startswith(("data:", "file:"))] == []
                page.emulate_media(media="screen")
                shot = tmp_path / f"{name}.png"
                page.screenshot(path=str(shot), full_page=True)
                assert shot.stat().st_size > 10_000
                page.close()
        finally:
            browser.close()
    if os.environ.get("REPLENS_WRITE_REPORT_PNG") == "1":
        out = Path(__file__).resolve().parents[1] / "reports" / "case_report.png"
        out.parent.mkdir(exist_ok=True)
        shutil.copyfile(tmp_path / "face.png", out)
