"""The API schemas (docs/api/*.schema.json) reject what a client must not receive, and
docs/api.md documents every endpoint."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from tests.api_schema import JSON_OUTPUT, SCHEMA_DIR, validate

GOOD_FACE = {"headline": "MANIPULATED (fake probability 0.600)", "reliable": True,
             "reliability": "in_domain",
             "model": "seqfake", "model_version": "v", "provider": "CPUExecutionProvider",
             "task": "components", "verdict": "manipulated", "raw_verdict": "manipulated",
             "fake_probability": 0.6,
             "threshold": 0.5, "sequence": [{"step": 1, "component": "eye", "probability": 0.6}],
             "sequence_text": "1. eye", "probabilities": {"eye": 0.6, "nose": 0.1},
             "trained_on": "generated faces", "decoder": "probability-ranked", "faces": [],
             "face_number": None, "detector": "none (crop given)"}


def test_every_endpoint_has_a_schema_and_a_section_in_the_docs():
    doc = (Path(__file__).resolve().parents[1] / "docs" / "api.md").read_text()
    for endpoint in JSON_OUTPUT:
        assert (SCHEMA_DIR / f"{endpoint.strip('/')}.schema.json").is_file()
        assert f"## `{endpoint}`" in doc and f'api_name="{endpoint}"' in doc, endpoint
        jsonschema.Draft202012Validator.check_schema(
            json.loads((SCHEMA_DIR / f"{endpoint.strip('/')}.schema.json").read_text()))


@pytest.mark.parametrize("change", [
    lambda r: r.update(fake_probability=1.2),                  # not a probability
    lambda r: r["sequence"][0].update(step=0),                 # steps are numbered from 1
    lambda r: r.update(face_number=0),                         # faces too
    lambda r: r.pop("verdict"),                                # a required field
    lambda r: r.update(verdict="fake"),                        # not one of the verdicts
    lambda r: r.update(verdict="unreliable"),                  # reliable, yet no finding
    lambda r: r.update(reliable=False),                        # a finding that is unreliable
    lambda r: r.update(raw_verdict="unreliable"),              # the model's own is a verdict
    lambda r: r.update(reliability="unknown"),                 # not one of the reasons
    lambda r: r.pop("headline"),                               # every answer has one
    lambda r: r.pop("raw_verdict"),
])
def test_the_face_schema_rejects(change):
    validate("/face", GOOD_FACE)
    bad = copy.deepcopy(GOOD_FACE)
    change(bad)
    with pytest.raises(jsonschema.ValidationError):
        validate("/face", bad)


def test_the_docs_examples_follow_the_schemas():
    """Each answer shown in docs/api.md is valid against its endpoint's schema."""
    import re

    doc = (Path(__file__).resolve().parents[1] / "docs" / "api.md").read_text()
    sections = re.split(r"^## `", doc, flags=re.M)[1:]
    assert len(sections) == len(JSON_OUTPUT)
    for sec in sections:
        endpoint = sec.split("`", 1)[0]
        answer = re.search(r"```json\n(.*?)```", sec, flags=re.S)
        assert answer, endpoint
        validate(endpoint, json.loads(answer.group(1)))


# --- the schemas are generated from the answer models (app/results.py) ---------------------
def test_the_committed_schemas_are_the_generated_ones(tmp_path):
    """A field added to a model without `python -m app.results --write docs/api` fails here."""
    from app import results

    assert results.stale_schemas(SCHEMA_DIR) == []
    assert results.main(["--check", str(SCHEMA_DIR)]) == 0
    for endpoint in results.ENDPOINTS:
        (tmp_path / f"{endpoint}.schema.json").write_text(results.schema_text(endpoint))
    face = json.loads((tmp_path / "face.schema.json").read_text())
    face["$defs"]["report"]["properties"].pop("rotated")     # a schema edited by hand
    (tmp_path / "face.schema.json").write_text(json.dumps(face, indent=2) + "\n")
    assert results.stale_schemas(tmp_path) == ["face"]
    assert results.main(["--check", str(tmp_path)]) == 1


def _doc_examples() -> dict[str, object]:
    import re

    doc = (Path(__file__).resolve().parents[1] / "docs" / "api.md").read_text()
    out = {}
    for sec in re.split(r"^## `", doc, flags=re.M)[1:]:
        answer = re.search(r"```json\n(.*?)```", sec, flags=re.S)
        out[sec.split("`", 1)[0]] = json.loads(answer.group(1))
    return out


def test_the_docs_examples_follow_the_models():
    """Each answer in docs/api.md follows its model and declares no field the model lacks."""
    from app import results

    examples = _doc_examples()
    assert {e.strip("/") for e in examples} == set(results.ENDPOINTS)
    for endpoint, answer in examples.items():
        results.check(endpoint.strip("/"), answer)


@pytest.mark.parametrize("kind, change", [
    ("face_report", lambda r: r.update(surprise=1)),              # a field nobody declared
    ("face_report", lambda r: r.update(fake_probability=1.2)),
    ("face_report", lambda r: r.update(verdict="unreliable")),    # reliable, yet no finding
    ("face_report", lambda r: r.update(reliable=False)),          # a finding that is unreliable
    ("face_report", lambda r: r["probabilities"].update(eye=-0.1)),
    ("face_report", lambda r: r["sequence"][0].update(step=0)),
    ("face_report", lambda r: r.update(domain={"in_domain": True, "score": 1.0, "threshold": 2.0,
                                               "trained_on": "x", "extra": 1})),  # closed
])
def test_the_models_reject(kind, change):
    from app import results

    results.check(kind, GOOD_FACE)
    bad = copy.deepcopy(GOOD_FACE)
    change(bad)
    with pytest.raises(results.ValidationError):
        results.check(kind, bad)


def test_a_face_batch_row_takes_only_p_columns():
    from app import results

    row = {"file": "a.png", "sha256": "0" * 64, "face": 1, "box": None, "face_score": None,
           "model": "seqfake", "model_version": "v", "verdict": "real", "raw_verdict": "real",
           "fake_probability": 0.2, "sequence": "", "p_eye": 0.2, "in_domain": True,
           "status": "ok", "error": None}
    results.check("face_batch_row", row)
    for bad in ({**row, "p_eye": 1.5}, {**row, "colour": "red"}):
        with pytest.raises(results.ValidationError):
            results.check("face_batch_row", bad)
        with pytest.raises(jsonschema.ValidationError):
            validate("/face_batch", {"summary": {"files": 1, "faces": 1, "manipulated": 0,
                                                 "unreliable": 0, "errors": 0, "seconds": 0.1},
                                     "rows": [bad]})


# --- what the services return on the smoke build --------------------------------------------
@pytest.fixture(scope="module")
def engine(smoke_artifacts):
    from runtime.engine import Engine

    return Engine(smoke_artifacts)


def _examples(art: Path, kind: str) -> list[Path]:
    return sorted((art / "examples" / kind).glob("*.png"))


@pytest.mark.slow
def test_the_services_answers_follow_the_models(engine, smoke_artifacts, monkeypatch):
    """Each service's answer passes its model (the service checks it as it leaves), and the
    answers the tabs assemble from them (side by side, per classifier) pass theirs."""
    from app import results
    from app.services import classify, face, qmil, retrieval

    faces = _examples(smoke_artifacts, "faces")
    both = face.analyze_face_models(engine, None, str(faces[1]), face.resolve_models(engine, "all"),
                                    is_crop=True)
    compare = {"models": [face.model_card_line(engine, r.report["model"]) for r in both],
               "answers": [r.report for r in both]}
    for answer in (both[0].report, compare):
        results.check("face", answer)
        validate("/face", answer)
    fashion = _examples(smoke_artifacts, "fashion")
    reports = {m: classify.classify(engine, str(fashion[0]), m).report
               for m in ("abcnorm", "abcnorm_ce")}
    results.check("classify", reports)
    validate("/classify", reports)
    validate("/classify", reports["abcnorm"], cli=True)
    hits = retrieval.neighbours(engine, str(fashion[1]), k=3).report
    validate("/neighbours", hits)
    bag = sorted(p for p in (smoke_artifacts / "examples" / "bags").iterdir() if p.is_dir())[0]
    for word in (bag.name.split("_")[1], "violin"):              # seen, zero-shot
        validate("/query", qmil.query_bag(engine, sorted(str(p) for p in bag.iterdir()),
                                          word).report)
    # a service that returns a field its model does not declare fails as the answer leaves it
    mark = retrieval.reliability.mark
    monkeypatch.setattr(retrieval.reliability, "mark", lambda *a: {**mark(*a), "surprise": 1})
    with pytest.raises(results.ValidationError, match="surprise"):
        retrieval.neighbours(engine, str(fashion[1]), k=3)


@pytest.mark.slow
def test_the_video_batch_and_status_answers_follow_the_models(engine, smoke_artifacts,
                                                             tmp_path):
    import cv2
    from PIL import Image

    from app import results
    from app.cli import _parser, run
    from app.services import video

    faces = _examples(smoke_artifacts, "faces")[:2]
    path = tmp_path / "faces.mp4"
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 4, (256, 256))
    for p in faces * 2:
        vw.write(cv2.cvtColor(np.asarray(Image.open(p).convert("RGB")), cv2.COLOR_RGB2BGR))
    vw.release()
    validate("/face_video", video.analyze_video(engine, None, str(path), max_frames=3,
                                                is_crop=True).report)
    folder = tmp_path / "batch"
    folder.mkdir()
    for p in faces:
        (folder / p.name).write_bytes(p.read_bytes())
    (folder / "corrupt.png").write_bytes(b"not a png")
    art = ["--artifacts", str(smoke_artifacts)]
    batch = run(_parser().parse_args([*art, "face", str(folder), "--crop"]))
    assert {r["status"] for r in batch["rows"]} == {"ok", "error"}
    results.check("face_batch", batch)
    validate("/face_batch", batch)
    status = run(_parser().parse_args([*art, "status"]))
    results.check("status", status)
    validate("/status", status)
