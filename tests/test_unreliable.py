"""No confident verdict without a basis (app/services/reliability.py): an answer whose input
the domain check measured out of domain, or whose model has no domain check, heads with "no
reliable verdict" / "no domain check for this model", its finding field reads "unreliable"
and the model's own output is in raw_<field>, in the services' JSON (against the schemas),
the tabs' markdown, batch rows, CSV and summary, the case report and the CLI."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.services import reliability as rel
from tests.api_schema import validate

OUT = [{"in_domain": False, "score": 999.0, "threshold": 1.0, "trained_on": "generated faces"}]
IN = [{"in_domain": True, "score": 0.5, "threshold": 1.0, "trained_on": "generated faces"}]


def _stripes(path: Path) -> Path:
    """A black-and-white striped test card: unlike any training data of the smoke build."""
    card = (np.indices((64, 64)).sum(0) % 8 < 4).astype(np.uint8)[..., None].repeat(3, 2) * 255
    Image.fromarray(card).save(path)
    return path


@pytest.fixture
def checks(monkeypatch):
    """``checks(answer)``: every model's domain check answers ``answer`` (a list like
    :data:`OUT`, one per input, repeated for a bag's images; None: no check)."""
    from runtime.engine import OnnxModel

    def set_answer(answer):
        def fake(self, outputs, inputs=None):
            if answer is None:
                return None
            n = next(iter(outputs.values())).shape[0]
            if self.entry.get("domain", {}).get("unit") == "instance":
                n *= outputs["beta"].shape[1]
            return [dict(answer[0]) for _ in range(n)]
        monkeypatch.setattr(OnnxModel, "domain_check", fake)
    return set_answer


@pytest.fixture(scope="module")
def engine(smoke_artifacts):
    from runtime.engine import Engine

    return Engine(smoke_artifacts)


@pytest.fixture(scope="module")
def crop(smoke_artifacts) -> Path:
    return sorted((smoke_artifacts / "examples" / "faces").glob("*.png"))[0]


def test_mark_makes_an_answer_a_finding_only_in_domain():
    base = {"model": "m", "verdict": "manipulated", "fake_probability": 0.9}
    found = rel.mark({**base, "domain": IN[0]}, "verdict", "this face", "MANIPULATED (0.900)")
    assert found["headline"] == "MANIPULATED (0.900)" and found["reliable"] is True
    assert found["verdict"] == found["raw_verdict"] == "manipulated"
    out = rel.mark({**base, "domain": OUT[0]}, "verdict", "this face", "MANIPULATED (0.900)")
    assert out["headline"] == ("no reliable verdict: this face is unlike the data this model "
                               "was trained on")
    assert (out["reliable"], out["reliability"]) == (False, rel.OUT_OF_DOMAIN)
    assert (out["verdict"], out["raw_verdict"]) == ("unreliable", "manipulated")
    for none in (None, {}):
        bare = rel.mark({**base, "domain": none}, "verdict", "this face", "MANIPULATED")
        assert bare["headline"].startswith("no domain check for this model: ")
        assert (bare["reliability"], bare["verdict"]) == (rel.NO_DOMAIN_CHECK, "unreliable")
    assert list(out)[:3] == ["headline", "reliable", "reliability"]  # first in the CLI's JSON


def test_the_warning_names_the_score_over_its_threshold():
    from app import case_report as cr
    from app.ui_common import domain_warning

    generic = {"in_domain": False, "score": 1.0, "threshold": 2.0, "generic_score": 9.0,
               "generic_threshold": 3.0, "trained_on": "x"}
    text = domain_warning({"domain": generic})
    assert "generic image score 9 > threshold 3" in text and "domain score" not in text
    assert "domain score 5 > threshold 2" in domain_warning(
        {"domain": {**generic, "score": 5.0, "generic_score": 1.0}})
    assert "generic image score" in cr._domain_html(generic)


@pytest.mark.parametrize("answer, state, head", [
    (OUT, rel.OUT_OF_DOMAIN, "no reliable verdict: this face is unlike the data"),
    (None, rel.NO_DOMAIN_CHECK, "no domain check for this model: "),
])
def test_a_face_answer_without_a_basis_is_no_finding(engine, crop, checks, answer, state, head):
    from app.services import face
    from app.tabs.face import _compare_verdict
    from app.ui_common import answer_headline

    checks(answer)
    r = face.analyze_face(engine, None, str(crop), is_crop=True).report
    validate("/face", json.loads(json.dumps(r, default=str)))
    assert r["headline"].startswith(head) and r["reliability"] == state
    assert r["verdict"] == "unreliable" and r["raw_verdict"] in ("manipulated", "real")
    # the tab: the headline is the heading, the model's output below it, marked as raw
    finding = rel.face_finding(r["raw_verdict"], r["fake_probability"])
    text = answer_headline(r, finding)
    assert text.startswith(f"## {r['headline']}\n")
    assert f"{rel.RAW_MARK}:** {finding}" in text.replace("The model's", "the model's")
    assert not any(line.startswith(("## MANIPULATED", "## REAL")) for line in text.splitlines())
    assert _compare_verdict(r).startswith("**no reliable verdict**")
    # a batch row
    row = face.batch_rows(engine, None, str(crop), ["seqfake"], is_crop=True)[0]
    assert (row["verdict"], row["raw_verdict"]) == ("unreliable", r["raw_verdict"])


def test_an_in_domain_face_keeps_its_verdict_as_the_headline(engine, crop, checks):
    from app.services import face
    from app.ui_common import answer_headline

    checks(IN)
    r = face.analyze_face(engine, None, str(crop), is_crop=True).report
    assert r["reliable"] is True and r["verdict"] == r["raw_verdict"] != "unreliable"
    finding = rel.face_finding(r["verdict"], r["fake_probability"])
    assert r["headline"] == finding and answer_headline(r, finding) == f"## {finding}\n"


def test_classifier_retrieval_and_bag_query_without_a_basis(smoke_artifacts, engine, checks):
    from app.services import classify, qmil, retrieval
    from app.ui_common import answer_headline

    fashion = sorted((smoke_artifacts / "examples" / "fashion").glob("*.png"))
    checks(OUT)
    c = classify.classify(engine, str(fashion[0])).report
    validate("/classify", json.loads(json.dumps(c)), cli=True)
    assert (c["label"], c["raw_label"]) == ("unreliable", c["top"][0]["class"])
    assert c["headline"].startswith("no reliable verdict: this image is unlike")
    assert answer_headline(c, "sneaker").startswith("## no reliable verdict")
    row = classify.batch_rows(engine, str(fashion[0]))[0]
    assert (row["class"], row["raw_class"]) == ("unreliable", c["raw_label"])
    n = retrieval.neighbours(engine, str(fashion[0]), 3).report
    validate("/neighbours", json.loads(json.dumps(n)))
    assert n["reliable"] is False and n["headline"].startswith("no reliable verdict")
    row = retrieval.batch_rows(engine, str(fashion[0]), 3)[0]
    assert row["vote_label"] == "unreliable" and row["raw_vote_label"]
    images = [np.asarray(Image.open(p).convert("RGB")) for p in fashion[:3]]
    q = qmil.query_bag(engine, None, "bag", images=images).report
    validate("/query", json.loads(json.dumps(q)))
    assert (q["answer"], q["reliability"]) == ("unreliable", rel.OUT_OF_DOMAIN)
    assert q["raw_answer"] in ("yes", "no")
    assert q["headline"] == ("no reliable verdict: this bag is unlike the data this model was "
                             "trained on")
    checks(None)  # no check: the classifier's answer is no finding either
    c = classify.classify(engine, str(fashion[0])).report
    assert c["label"] == "unreliable" and c["reliability"] == rel.NO_DOMAIN_CHECK


def test_batch_rows_csv_summary_and_case_report_say_no_reliable_verdict(engine, crop, checks,
                                                                        tmp_path):
    from app import case_report as cr
    from app.batch import csv_text, run_batch
    from app.services import face

    checks(OUT)
    columns = face.batch_columns(engine, ["seqfake"])
    res = run_batch([crop, crop.with_name(crop.name)], lambda p: face.batch_rows(
        engine, None, p, ["seqfake"], is_crop=True), columns, count_key="faces",
        flag=lambda r: r["verdict"] == "manipulated", show_bar=False)
    validate("/face_batch", json.loads(json.dumps({"summary": res.summary, "rows": res.rows},
                                                  default=str)))
    assert res.summary["unreliable"] == res.summary["faces"] >= 1
    assert res.summary["manipulated"] == 0
    head, *lines = csv_text(res.rows, ["file", *columns]).splitlines()
    cols = head.split(",")
    for line in lines:
        cells = dict(zip(cols, line.split(",")))
        assert cells["verdict"] == "unreliable" and cells["raw_verdict"] in ("manipulated", "real")
    html = cr.batch_report(res.rows, res.summary, [])
    assert "no reliable verdict" in html
    # the face case report: the headline, and the raw verdict marked as such
    results = face.analyze_face_models(engine, None, str(crop), ["seqfake"], is_crop=True)
    html = cr.face_report(crop.name, "0" * 64, results, [])
    seq = html.split('id="section-sequence"')[1].split("</section>")[0]
    assert "no reliable verdict: this face is unlike the data" in seq
    assert rel.RAW_MARK.replace("'", "&#x27;") in seq
    assert "v-manipulated" not in seq and "v-real" not in seq  # no verdict badge


def test_a_video_verdict_is_a_finding_only_from_reliable_tracks():
    from app.services.video import video_verdict

    def track(verdict, reliable, p=0.9):
        return {"verdict": verdict if reliable else "unreliable", "raw_verdict": verdict,
                "reliable": reliable, "fake_probability": p,
                "reliability": rel.IN_DOMAIN if reliable else rel.OUT_OF_DOMAIN}

    v = video_verdict([track("manipulated", True), track("real", False)])
    assert (v["verdict"], v["reliable"]) == ("manipulated", True)
    v = video_verdict([track("real", True, 0.1), track("manipulated", False)])
    assert (v["verdict"], v["raw_verdict"], v["reliable"]) == ("unreliable", "manipulated", False)
    assert v["headline"].startswith("no reliable verdict: a face of this video is unlike")
    v = video_verdict([track("real", True, 0.1)])
    assert (v["verdict"], v["headline"]) == ("real", "REAL (fake probability 0.100)")


@pytest.mark.slow
def test_the_cli_heads_an_out_of_domain_face_with_no_reliable_verdict(smoke_artifacts, tmp_path):
    """End to end through the real domain check: a striped test card as a face crop."""
    card = _stripes(tmp_path / "card.png")

    def cli(*args):
        r = subprocess.run([sys.executable, "-m", "app.cli", "--artifacts", str(smoke_artifacts),
                            *map(str, args)], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    rep = validate("/face", cli("face", card, "--crop"))
    assert rep["domain"]["in_domain"] is False
    assert rep["headline"] == ("no reliable verdict: this face is unlike the data this model "
                               "was trained on")
    assert rep["verdict"] == "unreliable" and rep["raw_verdict"] in ("manipulated", "real")
    out = tmp_path / "results.csv"
    summary = cli("face", card, tmp_path, "--crop", "--out", out,
                  "--report", tmp_path / "r.html")["summary"]
    assert summary["unreliable"] == summary["faces"] == 1 and summary["manipulated"] == 0
    import csv

    row = next(csv.DictReader(out.open()))
    assert row["verdict"] == "unreliable" and row["in_domain"] == "False"
    assert "no reliable verdict" in (tmp_path / "r.html").read_text()


@pytest.mark.slow
def test_a_real_photo_never_gets_a_bare_manipulated_headline(smoke_artifacts):
    """The astronaut (a real photograph, the face found by the detector) through the default
    face model: its headline is the verdict only when the check measured it in domain."""
    from skimage import data

    from app.faces import default_detector
    from app.services import face
    from runtime.engine import Engine

    r = face.analyze_face(Engine(smoke_artifacts), default_detector(artifacts=smoke_artifacts),
                          data.astronaut()).report
    if r["domain"] is not None and r["domain"]["in_domain"]:
        assert r["headline"] == rel.face_finding(r["verdict"], r["fake_probability"])
    else:
        assert r["verdict"] == "unreliable" and r["headline"].startswith("no ")


@pytest.mark.slow
def test_the_tabs_head_an_out_of_domain_answer_with_no_reliable_verdict(smoke_artifacts,
                                                                        tmp_path):
    """Through the served app (answers checked against their schemas): the face tab, its
    batch and the classifier, with the striped test card."""
    from gradio_client import handle_file

    from tests.test_app import _serve

    card = handle_file(str(_stripes(tmp_path / "card.png")))
    demo, client = _serve(smoke_artifacts)
    try:
        text, *_, report, _, _ = client.predict(card, 0.5, 1, True, "seqfake", api_name="/face")
        assert text.startswith("## No reliable verdict\n\nThis face is unlike the data")
        assert "The model's raw output (unreliable, not a finding):** " in text
        assert report["verdict"] == "unreliable"
        text, *_ = client.predict([card], 0.5, True, "seqfake", api_name="/face_batch")
        assert "0 manipulated, 1 without a reliable verdict" in text
        text, *_ = client.predict(card, "", api_name="/classify")
        assert text.startswith("## No reliable verdict\n\nThis image is unlike the data")
    finally:
        demo.close()
