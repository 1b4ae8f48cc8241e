"""Case reports: one analysis (a face, a batch or a video) as one self-contained HTML file.

The file embeds its images as ``data:image/png;base64`` URIs and its CSS in a ``<style>``;
it loads nothing (a Content-Security-Policy forbids any request and any script), so it can
be mailed, archived and opened offline. The page is the Jinja2 template
``app/case_report.html.j2``, rendered with autoescape: every string that came from a user or
a model file (file names, labels, model names, error messages) is escaped by the template;
only the style sheet and the Content-Security-Policy below are marked safe.

Sections carry stable ids (``section-input``, ``section-faces``, ...; see ``FACE_SECTIONS``,
``BATCH_SECTIONS`` and ``VIDEO_SECTIONS``) so that tests and readers can find them.
Python builds each report's view (plain values); the template lays it out.
"""
from __future__ import annotations

import base64
import functools
import io
import json
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

import jinja2
import numpy as np
from markupsafe import Markup
from PIL import Image

from app.services import reliability as rel
from runtime.artifacts import write_bytes_atomic

REPORT_FORMAT = 1
TEMPLATE = "case_report.html.j2"  # beside this module
NO_DOMAIN_CHECK = "no domain check is available for this model"
FACE_SECTIONS = ("section-input", "section-faces", "section-sequence", "section-where",
                 "section-models", "section-domain", "section-time")
BATCH_SECTIONS = ("section-summary", "section-rows", "section-models", "section-domain",
                  "section-time")
VIDEO_SECTIONS = ("section-input", "section-timeline", "section-tracks", "section-sequence",
                  "section-models", "section-domain", "section-time")

# nothing may be fetched or run: images are data: URIs, the CSS is inline
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;color:#1a1a1a;
 margin:0 auto;max-width:1100px;padding:16px 24px;line-height:1.4;background:#fff}
h1{font-size:1.5em;margin:0 0 4px}
h2{font-size:1.15em;border-bottom:2px solid #444;padding-bottom:2px;margin:22px 0 8px}
h3{font-size:1em;margin:10px 0 4px}
.sub{color:#555;margin:0 0 8px}
code,.mono{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.86em;word-break:break-all}
table{border-collapse:collapse;margin:4px 0 8px;font-size:.9em}
th,td{border:1px solid #bbb;padding:3px 7px;text-align:left;vertical-align:top}
td{overflow-wrap:anywhere}
.card table{max-width:100%}
th{background:#eee}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.kv th{width:13em}
.grid{display:flex;flex-wrap:wrap;gap:14px}
.card{border:1px solid #bbb;border-radius:4px;padding:8px 12px;flex:1 1 300px;min-width:260px}
figure{margin:0 10px 10px 0;display:inline-block;vertical-align:top;text-align:center}
figure img{max-width:100%;height:auto;border:1px solid #999;image-rendering:auto}
figcaption{font-size:.82em;color:#333;max-width:280px;margin:2px auto 0}
img.input{max-height:420px;width:auto}
img.crop{width:192px}
img.thumb{width:64px;border:1px solid #999}
img.plot{max-width:100%}
.verdict{font-weight:700;padding:1px 6px;border-radius:3px;border:1px solid;white-space:nowrap}
.v-manipulated,.v-out{color:#8b0000;border-color:#8b0000;background:#fde8e8}
.v-real,.v-in{color:#0b5d1e;border-color:#0b5d1e;background:#e6f4ea}
.v-unreliable{color:#6b4e00;border-color:#6b4e00;background:#fff4d6;white-space:normal}
.bar{display:inline-block;height:.8em;background:#c0392b;vertical-align:middle;
 -webkit-print-color-adjust:exact;print-color-adjust:exact}
.barbox{display:inline-block;width:120px;border:1px solid #999;height:.8em;vertical-align:middle}
tr.row-error td{background:#fde8e8;color:#8b0000;-webkit-print-color-adjust:exact;
 print-color-adjust:exact}
.note{color:#444;font-style:italic}
.scroll{overflow-x:auto}
@media print{
 body{max-width:none;padding:0;font-size:10pt}
 .scroll{overflow:visible}
 section{break-before:auto}
 figure,.card,tr,h2,h3{break-inside:avoid}
 h2,h3{break-after:avoid}
 .verdict{-webkit-print-color-adjust:exact;print-color-adjust:exact}
}
"""


# ---------------------------------------------------------------------------------- values

def replens_version() -> str:
    """The RepLens version: ``app.__version__``, else the installed package, else the
    ``pyproject.toml`` next to the app, else ``"unknown"``."""
    import app

    version = getattr(app, "__version__", None)
    if version:
        return str(version)
    try:
        from importlib.metadata import version as dist_version

        return dist_version("replens")
    except Exception:  # not installed as a distribution
        pass
    try:
        import tomllib

        pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
        return str(tomllib.loads(pyproject.read_text())["project"]["version"])
    except Exception:
        return "unknown"


def iso_time(when: datetime | None = None) -> str:
    """ISO 8601 with a timezone, to the second: ``when`` (a naive one is taken as UTC), or
    now in UTC."""
    if when is None:
        when = datetime.now(timezone.utc)
    elif when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.isoformat(timespec="seconds")


def png_data_uri(image: np.ndarray) -> str:
    """A ``data:image/png;base64,...`` URI of an image array.

    Args:
        image: RGB uint8 (H, W, 3); gray (H, W), RGBA (H, W, 4) and float images in [0, 1]
            are accepted too.

    Raises:
        ValueError: not an image array.
    """
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4))) or arr.size == 0:
        raise ValueError(f"not an image array: shape {arr.shape}")
    if arr.dtype != np.uint8:
        arr = arr.astype(np.float64)
        if np.isfinite(arr).all() and arr.max(initial=0.0) <= 1.0:
            arr = arr * 255.0
        arr = np.clip(np.nan_to_num(arr), 0, 255).round().astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr)).save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _plain(value: Any) -> str:
    """A value as text (the template escapes it): floats to 4 decimals, None empty, yes/no
    for booleans, lists/dicts as JSON."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return _num(value)
    if isinstance(value, (np.floating, np.integer)):
        return _plain(value.item())
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, default=str, separators=(", ", ": "))
    return str(value)


def _num(value: Any, digits: int = 4) -> str:
    """A number with at most ``digits`` decimals ("" for None, as-is for non-numbers)."""
    if value is None:
        return ""
    try:
        f = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(f):
        return "nan"
    if f.is_integer() and abs(f) < 1e15 and not isinstance(value, float):
        return str(int(f))
    return f"{f:.{digits}f}".rstrip("0").rstrip(".") if f != 0 else "0"


@functools.lru_cache(maxsize=1)
def _template() -> jinja2.Template:
    """The page template (``app/case_report.html.j2``), autoescaped."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent),
                             autoescape=True, undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True)
    env.filters["as_text"] = _plain
    env.globals.update(csp=Markup(_CSP), css=Markup(_CSS), raw_mark=rel.RAW_MARK,
                       no_domain_check=NO_DOMAIN_CHECK)
    return env.get_template(TEMPLATE)


def _render(report: str, title: str, subtitle: str, view: Mapping[str, Any]) -> str:
    """The page of ``report`` ("face", "batch", "video") with its sections' ``view``."""
    page = _template().render(report=report, title=title, subtitle=subtitle, view=view)
    return _apostrophes(page) + "\n"


def _apostrophes(html: str) -> str:
    """``html`` with each escaped apostrophe written ``&#x27;``, as :func:`html.escape` and
    every other escaped text of RepLens write it (markupsafe writes ``&#39;``; an ``&#39;``
    typed by a user is escaped to ``&amp;#39;`` first, so it is left alone)."""
    return html.replace("&#39;", "&#x27;")


def _img(image: np.ndarray | None, alt: str, cls: str = "", caption: str = "") -> dict[str, Any]:
    """An embedded figure (``uri`` None: the template notes that there is no image)."""
    return {"uri": None if image is None else png_data_uri(image), "alt": alt, "cls": cls,
            "caption": caption}


def _verdict(verdict: Any) -> dict[str, str]:
    v = str(verdict or "unknown")
    return {"widget": "verdict", "text": v,
            "cls": "v-manipulated" if v == "manipulated" else "v-real" if v == "real" else ""}


def _state(report: Mapping[str, Any]) -> str:
    """An answer's reliability: its own ``reliability``, else its domain check's."""
    return str(report.get("reliability") or rel.reliability(report.get("domain")))


def _finding_rows(report: Mapping[str, Any], subject: str = "this face") -> list[tuple[str, Any]]:
    """The verdict rows of an answer: its verdict when the domain check measured the input
    in domain; otherwise the headline that there is no reliable verdict and, below it, the
    model's raw verdict marked as such (:mod:`app.services.reliability`; the answer's own
    ``reliability`` and ``headline`` when it has them, else its domain check's)."""
    state = _state(report)
    raw = report.get("raw_verdict", report.get("verdict"))
    if state == rel.IN_DOMAIN:
        return [("verdict", _verdict(report.get("verdict")))]
    head = report.get("headline") or rel.unreliable_headline(state, subject)
    return [("verdict", {"widget": "unreliable", "text": head}),
            (rel.RAW_MARK, {"widget": "raw", "text": str(raw or "unknown")})]


def _bar(p: Any) -> str:
    """The width (percent, one decimal) of a probability's bar."""
    try:
        width = max(0.0, min(1.0, float(p))) * 100
    except (TypeError, ValueError):
        width = 0.0
    return f"{width:.1f}"


# ---------------------------------------------------------------------------------- models

def model_info(model: Any) -> dict[str, Any]:
    """What a report says of a model, from an :class:`runtime.engine.OnnxModel` (what
    ``engine.get(name, method)`` returns): name, version, sha256, file (relative to the
    artifacts folder), method, variant, export time, training data, decision threshold and
    the test metrics the manifest recorded at export (Fixed-Acc / Adaptive-Acc for seqfake
    models, top-1 for classifiers, ...)."""
    entry: Mapping[str, Any] = getattr(model, "entry", {}) or {}
    extra = entry.get("extra") or {}
    metrics = {k: (round(float(v), 4) if isinstance(v, float) else v)
               for k, v in (entry.get("metrics") or {}).items()
               if isinstance(v, (int, float, str)) and not isinstance(v, bool)}
    trained_on = (extra.get("data") or extra.get("dataset") or extra.get("training_data")
                  or "")
    return {
        "name": getattr(model, "name", None) or entry.get("name"),
        "version": str(getattr(model, "version", None) or entry.get("version", "?")),
        "sha256": entry.get("sha256"),
        "file": entry.get("file"),
        "method": entry.get("method"),
        "variant": entry.get("variant"),
        "task": extra.get("task"),
        "exported_at": entry.get("exported_at"),
        "trained_on": trained_on,
        "threshold": extra.get("threshold"),
        "metrics": metrics,
    }


def _models_view(models: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each model's card: its title, its facts and its test metrics."""
    known = ("name", "version", "sha256", "file", "metrics")
    return [{"title": str(m.get("name", "?")),
             "pairs": [("name", m.get("name")), ("version", m.get("version")),
                       ("sha256", m.get("sha256")), ("file", m.get("file")),
                       *[(k, v) for k, v in m.items()
                         if k not in known and v not in (None, "", {})]],
             "metrics": [(str(k), v) for k, v in (m.get("metrics") or {}).items()]}
            for m in models]


# ---------------------------------------------------------------------------------- domain

def _domain_view(domain: Any, trained_on: str = "") -> dict[str, Any]:
    """The domain check of one model's result, or the statement that there is none."""
    if not isinstance(domain, Mapping) or "in_domain" not in domain:
        return {"present": False, "trained_on": str(trained_on or "")}
    generic = ([("generic image score", domain.get("generic_score")),
                ("generic threshold", domain.get("generic_threshold"))]
               if domain.get("generic_score") is not None else [])
    return {"present": True, "in_domain": bool(domain.get("in_domain")),
            "pairs": [("score", domain.get("score")), ("threshold", domain.get("threshold")),
                      *generic, ("trained on", domain.get("trained_on") or trained_on)]}


def _domain_html(domain: Any, trained_on: str = "") -> str:
    """The domain check's HTML alone (as a report shows it)."""
    page = _template().make_module({"report": None, "title": "", "subtitle": "", "view": {}})
    return _apostrophes(str(page.domain(_domain_view(domain, trained_on))))


def _time_pairs(analysed_at: datetime | None) -> list[tuple[str, Any]]:
    return [("analysed at", iso_time(analysed_at)), ("RepLens version", replens_version()),
            ("report format", REPORT_FORMAT)]


def _trained_on(report: Mapping[str, Any], models: list[dict[str, Any]]) -> str:
    if report.get("trained_on"):
        return str(report["trained_on"])
    for m in models:
        if m.get("name") == report.get("model"):
            return str(m.get("trained_on") or "")
    return ""


# ---------------------------------------------------------------------------------- face

def _face_card(result: Any, models: list[dict[str, Any]]) -> dict[str, Any]:
    """One model's answer for the face: verdict, sequence, probabilities, where-map, domain."""
    rep = result.report
    name = str(rep.get("model", "?"))
    where = getattr(result, "where", None)
    return {
        "name": name, "version": str(rep.get("model_version", "")),
        "summary": [*_finding_rows(rep), ("fake probability", rep.get("fake_probability")),
                    ("threshold", rep.get("threshold")), ("decoder", rep.get("decoder")),
                    ("task", rep.get("task")), ("face alignment", rep.get("alignment"))],
        "raw_note": _state(rep) != rel.IN_DOMAIN,
        "steps": [{"step": s.get("step"), "component": str(s.get("component", "")),
                   "probability": s.get("probability")} for s in rep.get("sequence") or []],
        "sequence_text": str(rep.get("sequence_text") or "no manipulation found"),
        "probabilities": [(str(k), v, _bar(v))
                          for k, v in (rep.get("probabilities") or {}).items()],
        "where": _img(where, f"where-map of {name}", "crop",
                      f"{name}: where the face differs from a real one") if where is not None
        else None,
        "domain": _domain_view(rep.get("domain"), _trained_on(rep, models)),
    }


def face_report(source_name: str, sha256: str, results: list[Any], models: list[dict],
                analysed_at: datetime | None = None) -> str:
    """The case report of one face analysed by one or several models, side by side.

    Args:
        source_name: the input's file name (shown escaped).
        sha256: the input file's sha256.
        results: :class:`app.services.face.FaceResult` objects of the same face (as
            ``analyze_face_models`` returns them): ``.report``, ``.annotated``, ``.crop``,
            ``.where``.
        models: :func:`model_info` of each model used.
        analysed_at: when the analysis ran (default: now, UTC).

    Raises:
        ValueError: no results.
    """
    if not results:
        raise ValueError("a face report needs at least one result")
    first = results[0]
    rep0: Mapping[str, Any] = first.report
    n_faces = len(rep0.get("faces") or [])
    annotated = getattr(first, "annotated", None)
    crop_given = annotated is None and not n_faces
    face_no = rep0.get("face_number")
    view = {
        "input": [("file", source_name), ("sha256", sha256),
                  ("faces found", "no detection (a crop)" if crop_given else n_faces),
                  ("detector", rep0.get("detector"))],
        "annotated": None if annotated is None else _img(
            annotated, f"input {source_name}", "input",
            "the input, every face found boxed; the analysed one highlighted"),
        "crop": _img(first.crop, "aligned face crop", "crop",
                     f"aligned crop of face #{face_no}" if face_no else "the face crop analysed"),
        "face_analysed": [("face analysed", face_no if face_no else "the whole image (a crop)")],
        "faces": [{"box": f.get("box"), "score": f.get("score")} for f in rep0.get("faces") or []],
        "cards": [_face_card(r, models) for r in results],
        "models": _models_view(models),
        "time": _time_pairs(analysed_at),
    }
    by = ", ".join(str(r.report.get("model", "?")) for r in results)
    return _render("face", f"RepLens case report: {source_name}", f"Face analysis by {by}", view)


# ---------------------------------------------------------------------------------- batch

def _columns(rows: list[dict[str, Any]]) -> list[str]:
    cols: list[str] = []
    for row in rows:
        cols += [k for k in row if k not in cols]
    return cols


def batch_report(rows: list[dict], summary: dict, models: list[dict],
                 analysed_at: datetime | None = None,
                 thumbnails: dict[str, np.ndarray] | None = None) -> str:
    """The case report of a batch: its summary and a table of every result row.

    Args:
        rows: the batch's rows (flat JSON-able values); a row with an ``error`` key is a
            file that failed and is shown as such.
        summary: e.g. ``{files, faces, manipulated, errors, seconds}``.
        models: :func:`model_info` of each model used.
        thumbnails: optional face crops keyed ``f"{file}#{face}"``.
    """
    thumbnails = thumbnails or {}
    cols = _columns(rows)

    def cells(row: dict[str, Any]) -> list[dict[str, Any]]:
        """Each column's value; a finding column without a finding says so."""
        return [{"unreliable": c in rel.FINDING_COLUMNS and row.get(c) == rel.UNRELIABLE,
                 "num": isinstance(row.get(c), (int, float)) and not isinstance(row.get(c), bool),
                 "value": row.get(c)} for c in cols]

    def thumb(row: dict[str, Any]) -> str | None:
        image = thumbnails.get(f"{row.get('file')}#{row.get('face')}")
        return png_data_uri(image) if image is not None else None

    in_dom = [r.get("in_domain") for r in rows if "error" not in r]
    checked = [v for v in in_dom if v is not None]
    n_in = sum(bool(v) for v in checked)
    trained = "; ".join(f"{m.get('name')}: {m.get('trained_on')}" for m in models
                        if m.get("trained_on"))
    view = {
        "summary": list(summary.items()),
        "columns": cols, "thumbnails": bool(thumbnails),
        "rows": [{"failed": "error" in row, "thumb": thumb(row) if thumbnails else None,
                  "cells": cells(row)} for row in rows],
        "failed": sum("error" in r for r in rows),
        "domain_counts": [("rows checked", len(checked)), ("in domain", n_in),
                          ("out of domain", len(checked) - n_in),
                          ("not checked", len(in_dom) - len(checked))] if checked else [],
        "domain": _domain_view(None, trained),
        "models": _models_view(models),
        "time": _time_pairs(analysed_at),
    }
    files = summary.get("files", len({r.get("file") for r in rows}))
    return _render("batch", "RepLens case report: batch", f"{files} file(s) analysed", view)


# ---------------------------------------------------------------------------------- video

def _rep(obj: Any) -> Mapping[str, Any]:
    rep = getattr(obj, "report", None)
    return rep if isinstance(rep, Mapping) else {}


def _frames_view(timeline: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Each analysed frame of a track: time, fake probability, sequence, every component."""
    frames = []
    for f in timeline:
        probs = f.get("probabilities") or {}
        seq = f.get("sequence")
        if isinstance(seq, list):  # steps [{step, component, probability}] or names
            seq = " -> ".join(str(s.get("component", s)) if isinstance(s, Mapping) else str(s)
                              for s in seq) or "no manipulation found"
        frames.append({"time": f.get("time"), "fake_probability": f.get("fake_probability"),
                       "width": _bar(f.get("fake_probability")), "sequence": seq,
                       "probabilities": ", ".join(f"{k} {_num(v)}" for k, v in probs.items()),
                       "box": f.get("box")})
    return frames


def _track_view(i: int, tr: Any) -> dict[str, Any]:
    """One face track: its verdict, score, plot, top crops and frames."""
    trep = _rep(tr)
    tid = getattr(tr, "track_id", None) or trep.get("track") or i + 1
    top = trep.get("top_frames") or []
    tl = getattr(tr, "timeline", None)
    return {
        "id": str(tid),
        "summary": [*_finding_rows(trep),
                    ("fake probability (mean of frames)", trep.get("fake_probability")),
                    ("frames", trep.get("frames")), ("sequence", trep.get("sequence_text"))],
        "timeline": None if tl is None else _img(tl, f"timeline of track {tid}", "plot",
                                                 f"track {tid} over time"),
        "crops": [_img(c, f"track {tid} top crop {j + 1}", "crop",
                       f"t = {_num(top[j].get('time'), 2)} s, p = "
                       f"{_num(top[j].get('fake_probability'))}" if j < len(top)
                       else f"crop {j + 1}")
                  for j, c in enumerate(getattr(tr, "top_crops", None) or [])],
        "frames": _frames_view(trep.get("timeline") or []),
        "domain": {**_domain_view(trep.get("domain")), "track": str(tid)}
        if "domain" in trep else None,
    }


def video_report(source_name: str, sha256: str, result: Any, models: list[dict],
                 analysed_at: datetime | None = None) -> str:
    """The case report of a video: the overview timeline and, per face track, its verdict,
    score, timeline, top crops and frame-by-frame sequences.

    Args:
        result: an :class:`app.services.video.VideoResult` (duck-typed: ``.report``,
            ``.timeline`` and ``.tracks``, each track with ``.track_id``, ``.report``,
            ``.timeline`` and ``.top_crops``).
    """
    rep = _rep(result)
    tracks = [_track_view(i, tr) for i, tr in enumerate(getattr(result, "tracks", None) or [])]
    overview = getattr(result, "timeline", None)
    trained = _trained_on(rep, models)
    track_domains = [t["domain"] for t in tracks if t["domain"] is not None]
    domains = ([{**_domain_view(rep["domain"], trained), "track": None}] if "domain" in rep
               else track_domains or [{**_domain_view(None, trained), "track": None}])
    view = {
        "input": [("file", source_name), ("sha256", sha256),
                  ("frames sampled", rep.get("frames_sampled")),
                  ("frames analysed (with a face)", rep.get("frames_analysed")),
                  ("frames manipulated", rep.get("frames_manipulated")),
                  ("face tracks", len(tracks) if tracks else len(rep.get("tracks") or [])),
                  *_finding_rows(rep, "a face of this video"),
                  ("video fake probability", rep.get("video_fake_probability")),
                  ("threshold", rep.get("threshold")), ("model", rep.get("model")),
                  ("model version", rep.get("model_version"))],
        "timeline": None if overview is None else _img(
            overview, "overview timeline", "plot",
            "fake probability of every face track over time"),
        "tracks": tracks, "domains": domains,
        "models": _models_view(models),
        "time": _time_pairs(analysed_at),
    }
    return _render("video", f"RepLens case report: {source_name}",
                   f"Video analysis by {rep.get('model', '?')}", view)


# ---------------------------------------------------------------------------------- file

def write_report(path: str | Path, html: str) -> Path:
    """Write a report atomically (UTF-8), readable by its owner only unless the
    ``private_reports`` setting is false; the previous file, if any, stays intact on failure.

    Raises:
        runtime.artifacts.ArtifactWriteError: the file cannot be written.
    """
    from app.settings import user_file_mode

    target = Path(path)
    write_bytes_atomic(target, html.encode("utf-8"), user_file_mode())
    return target
