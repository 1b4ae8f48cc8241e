"""The API schemas (docs/api/*.schema.json) reject what a client must not receive, and
docs/api.md documents every endpoint."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
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
