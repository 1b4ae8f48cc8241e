"""Case reports: one analysis (a face, a batch or a video) as one self-contained HTML file.

The file embeds its images as ``data:image/png;base64`` URIs and its CSS in a ``<style>``;
it loads nothing (a Content-Security-Policy forbids any request and any script), so it can
be mailed, archived and opened offline. Every string that came from a user or a model file
(file names, labels, model names, error messages) goes through :func:`html.escape`.

Sections carry stable ids (``section-input``, ``section-faces``, ...; see ``FACE_SECTIONS``,
``BATCH_SECTIONS`` and ``VIDEO_SECTIONS``) so that tests and readers can find them.
Pure Python + numpy + PIL: no template engine.
"""
from __future__ import annotations

import base64
import io
import json
import math
from datetime import datetime, timezone
from html import escape
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
from PIL import Image

from app.services import reliability as rel
from runtime.artifacts import write_bytes_atomic

REPORT_FORMAT = 1
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


def _text(value: Any) -> str:
    """A value as escaped text: floats to 4 decimals, None empty, lists/dicts as JSON."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return escape(_num(value))
    if isinstance(value, (np.floating, np.integer)):
        return _text(value.item())
    if isinstance(value, (list, tuple, dict)):
        return escape(json.dumps(value, default=str, separators=(", ", ": ")))
    return escape(str(value))


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


def _img(image: np.ndarray | None, alt: str, cls: str = "", caption: str = "") -> str:
    """An embedded figure, or a note when there is no image."""
    if image is None:
        return f'<p class="note">{escape(alt)}: no image.</p>'
    cap = f"<figcaption>{escape(caption)}</figcaption>" if caption else ""
    return (f'<figure><img class="{cls}" alt="{escape(alt)}" src="{png_data_uri(image)}">'
            f"{cap}</figure>")


def _kv(pairs: Iterable[tuple[str, Any]], raw: bool = False) -> str:
    """A two-column table; values escaped unless ``raw`` (already HTML)."""
    rows = "".join(f"<tr><th>{escape(k)}</th><td>{v if raw else _text(v)}</td></tr>"
                   for k, v in pairs)
    return f'<table class="kv">{rows}</table>'


def _verdict(verdict: Any) -> str:
    v = str(verdict or "unknown")
    cls = "v-manipulated" if v == "manipulated" else "v-real" if v == "real" else ""
    return f'<span class="verdict {cls}">{escape(v)}</span>'


def _state(report: Mapping[str, Any]) -> str:
    """An answer's reliability: its own ``reliability``, else its domain check's."""
    return str(report.get("reliability") or rel.reliability(report.get("domain")))


def _finding_rows(report: Mapping[str, Any], subject: str = "this face") -> list[tuple[str, str]]:
    """The verdict rows of an answer (HTML values): its verdict when the domain check
    measured the input in domain; otherwise the headline that there is no reliable verdict
    and, below it, the model's raw verdict marked as such (:mod:`app.services.reliability`;
    the answer's own ``reliability`` and ``headline`` when it has them, else its domain
    check's)."""
    state = _state(report)
    raw = report.get("raw_verdict", report.get("verdict"))
    if state == rel.IN_DOMAIN:
        return [("verdict", _verdict(report.get("verdict")))]
    head = report.get("headline") or rel.unreliable_headline(state, subject)
    return [("verdict", f'<span class="verdict v-unreliable">{escape(head)}</span>'),
            (rel.RAW_MARK, f'<span class="raw">{escape(str(raw or "unknown"))}</span>')]


def _bar(p: Any) -> str:
    try:
        width = max(0.0, min(1.0, float(p))) * 100
    except (TypeError, ValueError):
        width = 0.0
    return f'<span class="barbox"><span class="bar" style="width:{width:.1f}%"></span></span>'


def _section(sid: str, title: str, body: str) -> str:
    return f'<section id="{sid}"><h2>{escape(title)}</h2>{body}</section>'


def _page(title: str, subtitle: str, sections: list[str]) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>"
            f"<header><h1>{escape(title)}</h1><p class=\"sub\">{escape(subtitle)}</p></header>"
            + "\n".join(sections) + "</body></html>\n")


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


def _models_section(models: list[dict[str, Any]]) -> str:
    if not models:
        return _section("section-models", "Models",
                        '<p class="note">No model information was given.</p>')
    cards = []
    for m in models:
        metrics = m.get("metrics") or {}
        mtable = ("<table><tr><th>test metric</th><th>value</th></tr>" + "".join(
            f'<tr><td>{escape(str(k))}</td><td class="num">{_text(v)}</td></tr>'
            for k, v in metrics.items()) + "</table>") if metrics else \
            '<p class="note">no test metrics recorded</p>'
        known = ("name", "version", "sha256", "file", "metrics")
        rest = [(k, v) for k, v in m.items() if k not in known and v not in (None, "", {})]
        body = _kv([("name", m.get("name")), ("version", m.get("version")),
                    ("sha256", m.get("sha256")), ("file", m.get("file")), *rest])
        cards.append(f'<div class="card"><h3>{escape(str(m.get("name", "?")))}</h3>'
                     f"{body}{mtable}</div>")
    return _section("section-models", "Models", f'<div class="grid">{"".join(cards)}</div>')


# ---------------------------------------------------------------------------------- domain

def _domain_html(domain: Any, trained_on: str = "") -> str:
    """The domain check of one model's result, or the statement that there is none."""
    trained = (f' <span class="sub">Trained on: {escape(str(trained_on))}.</span>'
               if trained_on else "")
    if not isinstance(domain, Mapping) or "in_domain" not in domain:
        return f'<p class="no-domain">{escape(NO_DOMAIN_CHECK)}.{trained}</p>'
    inside = bool(domain.get("in_domain"))
    badge = (f'<span class="verdict {"v-in" if inside else "v-out"}">'
             f'{"in domain" if inside else "out of domain"}</span>')
    generic = ([("generic image score", domain.get("generic_score")),
                ("generic threshold", domain.get("generic_threshold"))]
               if domain.get("generic_score") is not None else [])
    return badge + _kv([("score", domain.get("score")), ("threshold", domain.get("threshold")),
                        *generic, ("trained on", domain.get("trained_on") or trained_on)])


def _time_section(analysed_at: datetime | None) -> str:
    return _section("section-time", "Time of the analysis", _kv([
        ("analysed at", iso_time(analysed_at)),
        ("RepLens version", replens_version()),
        ("report format", REPORT_FORMAT)]))


def _trained_on(report: Mapping[str, Any], models: list[dict[str, Any]]) -> str:
    if report.get("trained_on"):
        return str(report["trained_on"])
    for m in models:
        if m.get("name") == report.get("model"):
            return str(m.get("trained_on") or "")
    return ""


# ---------------------------------------------------------------------------------- face

def _probabilities_table(probs: Mapping[str, Any]) -> str:
    if not probs:
        return '<p class="note">no component probabilities</p>'
    rows = "".join(f'<tr><td>{escape(str(k))}</td><td class="num">{_text(v)}</td>'
                   f"<td>{_bar(v)}</td></tr>" for k, v in probs.items())
    return f"<table><tr><th>component</th><th>probability</th><th></th></tr>{rows}</table>"


def _sequence_html(report: Mapping[str, Any]) -> str:
    steps = report.get("sequence") or []
    if steps:
        rows = "".join(f'<tr><td class="num">{_text(s.get("step"))}</td>'
                       f'<td>{escape(str(s.get("component", "")))}</td>'
                       f'<td class="num">{_text(s.get("probability"))}</td></tr>' for s in steps)
        seq = ("<table><tr><th>step</th><th>component</th><th>probability</th></tr>"
               f"{rows}</table>")
    else:
        seq = f'<p>{escape(str(report.get("sequence_text") or "no manipulation found"))}</p>'
    return seq


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
    crop_given = getattr(first, "annotated", None) is None and not n_faces
    inp = _kv([("file", source_name), ("sha256", sha256),
               ("faces found", "no detection (a crop)" if crop_given else n_faces),
               ("detector", rep0.get("detector"))])
    if getattr(first, "annotated", None) is not None:
        inp += _img(first.annotated, f"input {source_name}", "input",
                    "the input, every face found boxed; the analysed one highlighted")
    else:
        inp += '<p class="note">The image was given as a face crop: no detection ran.</p>'

    face_no = rep0.get("face_number")
    faces_rows = "".join(
        f'<tr><td class="num">{i + 1}</td><td>{_text(f.get("box"))}</td>'
        f'<td class="num">{_text(f.get("score"))}</td></tr>'
        for i, f in enumerate(rep0.get("faces") or []))
    faces = _img(first.crop, "aligned face crop", "crop",
                 f"aligned crop of face #{face_no}" if face_no else "the face crop analysed")
    faces += _kv([("face analysed", face_no if face_no else "the whole image (a crop)")])
    if faces_rows:
        faces += ("<table><tr><th>face</th><th>box (x1, y1, x2, y2)</th><th>score</th></tr>"
                  f"{faces_rows}</table>")

    cards, wheres, domains = [], [], []
    for r in results:
        rep = r.report
        name = str(rep.get("model", "?"))
        head = (f'<h3>{escape(name)} <span class="mono">{escape(str(rep.get("model_version", "")))}'
                f"</span></h3>")
        summary = _kv([*_finding_rows(rep),
                       ("fake probability", _text(rep.get("fake_probability"))),
                       ("threshold", _text(rep.get("threshold"))),
                       ("decoder", _text(rep.get("decoder"))),
                       ("task", _text(rep.get("task")))], raw=True)
        probs = _probabilities_table(rep.get("probabilities") or {})
        raw_note = ("" if _state(rep) == rel.IN_DOMAIN else
                    f'<p class="note">Sequence and probabilities: {escape(rel.RAW_MARK)}.</p>')
        cards.append(f'<div class="card">{head}{summary}{raw_note}<h3>Sequence</h3>'
                     f"{_sequence_html(rep)}<h3>Every component</h3>{probs}</div>")
        where = getattr(r, "where", None)
        wheres.append(_img(where, f"where-map of {name}", "crop",
                           f"{name}: where the face differs from a real one") if where is not None
                      else f'<p class="note">{escape(name)}: this model gives no where-map '
                           f"(its decoder reads the whole face).</p>")
        domains.append(f'<div class="card"><h3>{escape(name)}</h3>'
                       f"{_domain_html(rep.get('domain'), _trained_on(rep, models))}</div>")

    sections = [
        _section("section-input", "Input", inp),
        _section("section-faces", "Face", faces),
        _section("section-sequence", "Manipulation sequence",
                 f'<div class="grid">{"".join(cards)}</div>'),
        _section("section-where", "Where-maps", f'<div class="grid">{"".join(wheres)}</div>'),
        _models_section(models),
        _section("section-domain", "Domain check", f'<div class="grid">{"".join(domains)}</div>'),
        _time_section(analysed_at),
    ]
    return _page(f"RepLens case report: {source_name}",
                 f"Face analysis by {', '.join(str(r.report.get('model', '?')) for r in results)}",
                 sections)


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
    show_thumbs = bool(thumbnails)
    head = "<tr><th>outcome</th>" + ("<th>face</th>" if show_thumbs else "") + "".join(
        f"<th>{escape(str(c))}</th>" for c in cols) + "</tr>"
    body = []
    for row in rows:
        failed = "error" in row
        cells = [f"<td>{'failed' if failed else 'analysed'}</td>"]
        if show_thumbs:
            thumb = thumbnails.get(f"{row.get('file')}#{row.get('face')}")
            cells.append("<td>" + (f'<img class="thumb" alt="face crop" '
                                   f'src="{png_data_uri(thumb)}">' if thumb is not None else "")
                         + "</td>")
        for c in cols:
            v = row.get(c)
            num = isinstance(v, (int, float)) and not isinstance(v, bool)
            cls = ' class="num"' if num else ""
            if c in rel.FINDING_COLUMNS and v == rel.UNRELIABLE:  # no finding: said so
                cells.append('<td><span class="verdict v-unreliable">no reliable verdict'
                             "</span></td>")
            else:
                cells.append(f"<td{cls}>{_text(v)}</td>")
        body.append(f'<tr class="{"row-error" if failed else "row-ok"}">{"".join(cells)}</tr>')
    table = (f'<div class="scroll"><table id="batch-rows">{head}{"".join(body)}</table></div>'
             if rows else '<p class="note">The batch has no rows.</p>')

    in_dom = [r.get("in_domain") for r in rows if "error" not in r]
    checked = [v for v in in_dom if v is not None]
    if checked:
        n_in = sum(bool(v) for v in checked)
        domain = _kv([("rows checked", len(checked)), ("in domain", n_in),
                      ("out of domain", len(checked) - n_in),
                      ("not checked", len(in_dom) - len(checked))])
    else:
        trained = "; ".join(f"{m.get('name')}: {m.get('trained_on')}" for m in models
                            if m.get("trained_on"))
        domain = _domain_html(None, trained)
    n_err = sum("error" in r for r in rows)
    sections = [
        _section("section-summary", "Summary", _kv(list(summary.items()))),
        _section("section-rows", f"Results ({len(rows)} rows, {n_err} failed)", table),
        _models_section(models),
        _section("section-domain", "Domain check", domain),
        _time_section(analysed_at),
    ]
    files = summary.get("files", len({r.get("file") for r in rows}))
    return _page("RepLens case report: batch", f"{files} file(s) analysed", sections)


# ---------------------------------------------------------------------------------- video

def _rep(obj: Any) -> Mapping[str, Any]:
    rep = getattr(obj, "report", None)
    return rep if isinstance(rep, Mapping) else {}


def _frames_table(timeline: list[Mapping[str, Any]]) -> str:
    if not timeline:
        return '<p class="note">no frames</p>'
    rows = []
    for f in timeline:
        probs = f.get("probabilities") or {}
        ptxt = ", ".join(f"{k} {_num(v)}" for k, v in probs.items())
        seq = f.get("sequence")
        if isinstance(seq, list):  # steps [{step, component, probability}] or names
            seq = " -> ".join(str(s.get("component", s)) if isinstance(s, Mapping) else str(s)
                              for s in seq) or "no manipulation found"
        rows.append(f'<tr><td class="num">{_text(f.get("time"))}</td>'
                    f'<td class="num">{_text(f.get("fake_probability"))}</td>'
                    f"<td>{_bar(f.get('fake_probability'))}</td>"
                    f"<td>{_text(seq)}</td><td>{escape(ptxt)}</td>"
                    f"<td>{_text(f.get('box'))}</td></tr>")
    return ("<div class=\"scroll\"><table><tr><th>time (s)</th><th>fake probability</th><th></th>"
            "<th>sequence</th><th>every component</th><th>box</th></tr>"
            + "".join(rows) + "</table></div>")


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
    tracks = list(getattr(result, "tracks", None) or [])
    inp = _kv([("file", _text(source_name)), ("sha256", _text(sha256)),
               ("frames sampled", _text(rep.get("frames_sampled"))),
               ("frames analysed (with a face)", _text(rep.get("frames_analysed"))),
               ("frames manipulated", _text(rep.get("frames_manipulated"))),
               ("face tracks", _text(len(tracks) if tracks else len(rep.get("tracks") or []))),
               *_finding_rows(rep, "a face of this video"),
               ("video fake probability", _text(rep.get("video_fake_probability"))),
               ("threshold", _text(rep.get("threshold"))),
               ("model", _text(rep.get("model"))),
               ("model version", _text(rep.get("model_version")))], raw=True)

    overview = getattr(result, "timeline", None)
    timeline = (_img(overview, "overview timeline", "plot",
                     "fake probability of every face track over time")
                if overview is not None else '<p class="note">No timeline was plotted.</p>')

    cards, seqs, domains = [], [], []
    for i, tr in enumerate(tracks):
        trep = _rep(tr)
        tid = getattr(tr, "track_id", None) or trep.get("track") or i + 1
        top = trep.get("top_frames") or []
        crops = "".join(
            _img(c, f"track {tid} top crop {j + 1}", "crop",
                 (f"t = {_num(top[j].get('time'), 2)} s, p = {_num(top[j].get('fake_probability'))}"
                  if j < len(top) else f"crop {j + 1}"))
            for j, c in enumerate(getattr(tr, "top_crops", None) or []))
        summary = _kv([*_finding_rows(trep),
                       ("fake probability (mean of frames)", _text(trep.get("fake_probability"))),
                       ("frames", _text(trep.get("frames"))),
                       ("sequence", _text(trep.get("sequence_text")))], raw=True)
        tl = getattr(tr, "timeline", None)
        tname = escape(str(tid))
        cards.append(f'<div class="track" id="track-{tname}"><h3>Track {tname}</h3>{summary}'
                     + (_img(tl, f"timeline of track {tid}", "plot", f"track {tid} over time")
                        if tl is not None else "")
                     + (f"<h3>Highest-scoring frames</h3>{crops}" if crops else "") + "</div>")
        seqs.append(f"<h3>Track {tname}</h3>{_frames_table(trep.get('timeline') or [])}")
        if "domain" in trep:
            domains.append(f"<h3>Track {tname}</h3>{_domain_html(trep['domain'])}")
    if not cards:
        cards = ['<p class="note">No face track was found in the sampled frames.</p>']
        seqs = ['<p class="note">No frame was analysed.</p>']
    trained = _trained_on(rep, models)
    domain = (_domain_html(rep["domain"], trained) if "domain" in rep else
              "".join(domains) if domains else _domain_html(None, trained))

    sections = [
        _section("section-input", "Input", inp),
        _section("section-timeline", "Timeline", timeline),
        _section("section-tracks", "Face tracks", "".join(cards)),
        _section("section-sequence", "Sequences frame by frame", "".join(seqs)),
        _models_section(models),
        _section("section-domain", "Domain check", domain),
        _time_section(analysed_at),
    ]
    return _page(f"RepLens case report: {source_name}",
                 f"Video analysis by {rep.get('model', '?')}", sections)


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
