"""The page's contract with its users: every endpoint's outputs are named in gradio_client's
``view_api()`` (and in docs/api.md), each tab's answer card is rendered from the service's
answer (a plain answer, its confidence, the model; "No reliable verdict" without a basis,
also for a model whose answer has no sequence), and each tab's model line says whether its
model is ready, building, failed, at chance or imported."""
from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from runtime.engine import ModelUnavailableError

# endpoint -> its outputs' names, in the order the endpoint returns them
OUTPUTS = {
    "/face": ["answer", "faces_image", "crop", "where_map", "report", "json_file", "case_report"],
    "/face_batch": ["summary", "table", "csv_file", "rows", "case_report"],
    "/face_video": ["timeline", "report", "json_file", "top_crops", "track_timelines",
                    "case_report"],
    "/query": ["answer", "instances", "report", "json_file"],
    "/neighbours": ["answer", "neighbours", "report", "json_file"],
    "/classify": ["answer", "gradcam", "gradcam_compared", "report", "json_file"],
    "/status": ["status"],
}
DOCS = Path(__file__).resolve().parents[1] / "docs" / "api.md"


def test_view_api_names_every_output(tmp_path):
    """Served from an empty artifacts folder (the endpoints exist without models; no model
    is loaded, so the server starts in a few seconds)."""
    from tests.test_app import _serve

    demo, client = _serve(tmp_path)
    try:
        api = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    finally:
        demo.close()
    # with no build (as --no-build serves it), each tab's model line says what to run
    lines = {b.elem_id: b.value for b in demo.blocks.values()
             if str(getattr(b, "elem_id", "")).endswith("-model-line")}
    assert set(lines) == {f"{m}-model-line" for m in ("seqfake", "qmil", "dcl", "abcnorm")}
    for text in lines.values():
        assert ": not built**" in text and "python -m app" in text, text
    names = {ep: [r["label"] for r in info["returns"]] for ep, info in api.items()}
    assert {ep: names.get(ep) for ep in OUTPUTS} == OUTPUTS
    for ep, labels in names.items():  # no endpoint left with Gradio's value_<id> names
        assert not [x for x in labels if re.fullmatch(r"value_\d+", str(x))], (ep, labels)
    assert api["/face"]["returns"][4]["component"] == "Json"


def test_docs_name_each_endpoints_outputs():
    """docs/api.md lists, under each endpoint, its outputs by these names in this order."""
    text = DOCS.read_text()
    for ep, outputs in OUTPUTS.items():
        line = f"Named outputs: {', '.join(f'`{n}`' for n in outputs)}"
        section = text.split(f"## `{ep}`", 1)
        assert len(section) == 2, f"docs/api.md has no section for {ep}"
        assert line in section[1].split("\n## ", 1)[0], (ep, line)


# --- the answer cards, from service answers ------------------------------------------------
IN = {"in_domain": True, "score": 1.0, "threshold": 2.0, "trained_on": "generated faces"}
OUT = {"in_domain": False, "score": 9.0, "threshold": 2.0, "trained_on": "generated faces"}


def _face(verdict: str, p: float, seq: list[str] | None, domain: dict | None) -> dict[str, Any]:
    """A face answer as :func:`app.services.face.analyze_face` writes it (``seq`` None: a
    model that only tells fake from real, with no sequence)."""
    from app.services import reliability as rel

    report: dict[str, Any] = {"model": "m", "verdict": verdict, "fake_probability": p,
                              "threshold": 0.5, "trained_on": "generated faces"}
    if seq is not None:
        report["sequence"] = [{"step": i + 1, "component": c, "probability": p}
                              for i, c in enumerate(seq)]
        report["sequence_text"] = " -> ".join(f"{i + 1}. {c}" for i, c in enumerate(seq))
    report["domain"] = domain
    return rel.mark(report, "verdict", "this face", rel.face_finding(verdict, p))


def test_face_card_says_the_answer_in_words_first():
    from app.tabs.face import face_card

    card = face_card(_face("manipulated", 0.93, ["hair", "eye"], IN))
    assert card.startswith("## Edited: hair, then eyes\n")
    assert "**Confidence: high** (fake probability 0.930, threshold 0.50)" in card
    assert "**Model:** `m`, trained on generated faces" in card
    card = face_card(_face("real", 0.2, [], IN))
    assert card.startswith("## Looks unedited\n") and "**Confidence: moderate**" in card
    card = face_card(_face("real", 0.45, [], IN))
    assert "**Confidence: low** (fake probability 0.450" in card


def test_face_card_without_a_basis_and_without_a_sequence():
    from app.services.reliability import RAW_MARK
    from app.tabs.face import face_card

    card = face_card(_face("manipulated", 0.93, ["hair"], OUT))
    assert card.startswith("## No reliable verdict\n\nThis face is unlike the data")
    assert "**Warning: this image is unlike the data this model was trained on**" in card
    assert f"**{RAW_MARK[0].upper()}{RAW_MARK[1:]}:** MANIPULATED (fake probability 0.930)" \
        in card and "Confidence" not in card
    # a fake-or-real model (no sequence, no where-map): an answer, and no crash
    card = face_card(_face("manipulated", 0.8, None, IN))
    assert card.startswith("## Edited\n") and "does not say which parts" in card
    assert face_card(_face("real", 0.1, None, IN)).startswith("## Looks unedited\n")
    assert face_card(_face("manipulated", 0.8, None, None)).startswith("## No reliable verdict")


def test_the_side_by_side_table_takes_an_answer_without_a_sequence():
    from app.tabs.face import compare_markdown

    reports = [_face("manipulated", 0.9, ["hair"], IN), _face("real", 0.1, None, IN)]
    cards = [{"model": "a", "variant": "thesis", "task": "components", "fixed_acc": 0.5,
              "adaptive_acc": 0.4, "version": "v"}, {"model": "sbi", "variant": "binary"}]
    table = compare_markdown(cards, reports)
    assert "not given by this model" in table and "not measured" in table


def test_bag_retrieval_and_classifier_cards():
    from app.services import reliability as rel
    from app.tabs.classify import classify_card
    from app.tabs.query import query_card
    from app.tabs.retrieval import neighbours_card

    bag = {"model": "qmil", "query": "sneaker", "query_kind": "seen in training",
           "answer": "yes", "probability": 0.95, "bag_size": 5, "top_instance": 3, "domain": IN}
    card = query_card(rel.mark(dict(bag), "answer", "this bag", "YES"))
    assert card.startswith("## Yes: image 3 most likely holds a sneaker\n")
    assert "**Confidence: high** (probability that the bag holds a sneaker: 0.950)" in card
    card = query_card(rel.mark({**bag, "answer": "no", "probability": 0.2, "query": "ankle boot"},
                               "answer", "this bag", "NO"))
    assert card.startswith("## No: no image seems to hold an ankle boot\n")
    card = query_card(rel.mark({**bag, "domain": OUT}, "answer", "this bag", "YES"))
    assert card.startswith("## No reliable verdict\n\nThis bag is unlike")
    assert "YES: P(bag holds 'sneaker') = 0.950" in card

    hits = [{"id": str(i), "label": lab, "similarity": 0.9 - i / 100}
            for i, lab in enumerate(["bag", "bag", "sandal", "bag"])]
    nb = rel.mark({"model": "dcl", "neighbours": hits, "domain": IN}, None, "this image", "4")
    assert neighbours_card(nb).startswith("## Most similar: bag (3 of the 4 nearest images)\n")
    assert "**Confidence: moderate** (3 of 4 nearest images agree" in neighbours_card(nb)

    top = [{"class": "sneaker", "probability": 0.97, "group": "few", "train_count": 60},
           {"class": "bag", "probability": 0.02, "group": "many", "train_count": 6000}]
    c = rel.mark({"model": "abcnorm", "top": top, "label": "sneaker", "cam_class": "bag",
                  "domain": IN}, "label", "this image", "sneaker")
    card = classify_card(c)
    assert card.startswith("## Looks like: sneaker\n") and "**Confidence: high**" in card
    assert "where the model looked for 'bag'" in card and "few-shot class (60" in card
    c = rel.mark({"model": "abcnorm", "top": top, "label": "sneaker", "cam_class": "bag",
                  "domain": OUT}, "label", "this image", "sneaker")
    assert classify_card(c).startswith("## No reliable verdict\n\nThis image is unlike")


# --- the model line of each tab ------------------------------------------------------------
class _Engine:
    """An engine whose models are ``entries``; ``broken`` names fail to load."""

    def __init__(self, entries: dict[str, dict], broken: dict[str, str] | None = None) -> None:
        self.manifest = {"models": entries}
        self.broken = broken or {}

    def names(self) -> list[str]:
        return list(self.manifest["models"])

    def get(self, name: str, method: str | None = None) -> Any:
        if name in self.broken:
            raise ModelUnavailableError(self.broken[name])
        if name not in self.manifest["models"]:
            raise ModelUnavailableError(f"model {name!r} is not in manifest.json")
        return SimpleNamespace(name=name)


ENTRY = {"version": "v1", "variant": "qmil", "metrics": {"bag_acc": 0.9}, "labels": ["a"]}


def test_the_model_line_says_each_state_and_what_to_run():
    from app.ui_common import model_state, model_state_markdown

    engine = _Engine({"qmil": ENTRY})
    assert model_state(engine, "qmil")[0] == "ready"
    assert model_state_markdown(engine, "qmil").startswith("**Model `qmil`: ready**")
    learned = {"metric": "bag_acc", "value": 0.5, "chance": 0.5, "at_chance": True}
    state, line = model_state(_Engine({"qmil": {**ENTRY, "learned": learned}}), "qmil")
    assert state == "at chance" and "did not learn" in line
    published = {"file": "FFc23.tar", "sha256": "0" * 64, "source": "github.com/mapooon"}
    for imported in ({"extra": {"published": published}},
                     {"imported": {"source": "SBI (Shiohara & Yamasaki, 2022)"}},
                     {"source": "published"}, {"imported": True}):
        state, line = model_state(_Engine({"sbi": {**ENTRY, **imported}}), "sbi")
        assert state == "imported" and "published weights" in line, imported
    assert "FFc23.tar" in model_state(_Engine({"sbi": {**ENTRY, "extra": {"published":
                                                                           published}}}), "sbi")[1]
    assert model_state(_Engine({"qmil": {**ENTRY, "source": "trained"}}), "qmil")[0] == "ready"
    state, line = model_state(_Engine({"qmil": ENTRY}, {"qmil": "its ONNX file is missing"}),
                              "qmil")
    assert state == "failed" and "its ONNX file is missing" in line
    assert "`python -m export --all`" in line
    state, line = model_state(_Engine({}), "qmil")
    assert state == "not built" and "`python -m app --build-only --only qmil`" in line
    assert model_state(_Engine({}), None)[0] == "not built"


def test_the_model_line_follows_the_build():
    from app.ui_common import model_state, model_state_markdown

    engine = _Engine({})
    run = {"run": "qmil", "method": "qmil", "seconds_estimate": 30.0}
    state, line = model_state(engine, "qmil", {"runs": [{**run, "state": "waiting"}]})
    assert state == "building" and "waiting to be built" in line
    state, line = model_state(engine, "qmil", {"runs": [{**run, "state": "failed",
                                                         "error": "out of memory"}]})
    assert state == "failed" and "out of memory" in line and "--only qmil" in line
    text = model_state_markdown(engine, "qmil", {"runs": [{**run, "state": "failed",
                                                           "error": "out of memory"}]})
    assert text.startswith("**Model `qmil`: FAILED**")


def test_a_missing_model_file_fails_its_line_only(smoke_artifacts, tmp_path):
    """A real engine over the smoke build with the qMIL file gone: that tab's line says so."""
    from app.ui_common import model_state
    from runtime.engine import Engine

    art = tmp_path / "art"
    art.mkdir()
    for item in smoke_artifacts.iterdir():
        if item.name != "onnx":
            (art / item.name).symlink_to(item)
    (art / "onnx").mkdir()
    for f in (smoke_artifacts / "onnx").iterdir():
        if not f.name.startswith("qmil"):
            (art / "onnx" / f.name).symlink_to(f)
    engine = Engine(art)
    state, line = model_state(engine, "qmil")
    assert state == "failed" and "python -m export --all" in line, line
    assert model_state(engine, "abcnorm")[0] in ("ready", "at chance")  # a smoke model
    assert json.loads((art / "manifest.json").read_text())["models"]["qmil"]
