"""The API contract in tests: every endpoint's JSON answer is checked against its schema in
``docs/api/<endpoint>.schema.json`` (generated from app/results.py, documented in
docs/api.md) and against its answer model (:func:`app.results.check`: no undeclared field)."""
from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import jsonschema

from app import results

SCHEMA_DIR = Path(__file__).resolve().parents[1] / "docs" / "api"
# endpoint -> position of the JSON report in the endpoint's outputs (None: the answer itself)
JSON_OUTPUT = {"/face": 4, "/face_batch": 3, "/face_video": 1, "/query": 2, "/neighbours": 2, "/classify": 3,
               "/status": None}


@functools.lru_cache(maxsize=None)
def schema(endpoint: str) -> dict[str, Any]:
    return json.loads((SCHEMA_DIR / f"{endpoint.strip('/')}.schema.json").read_text())


def validate(endpoint: str, report: Any, cli: bool = False) -> Any:
    """Raise jsonschema.ValidationError unless ``report`` follows the endpoint's schema
    (``cli``: the CLI's single classify report, ``$defs/report``)."""
    sch = schema(endpoint)
    if cli and "$defs" in sch and "report" in sch["$defs"]:
        sch = {**sch, "$ref": "#/$defs/report"}
        sch = {k: v for k, v in sch.items() if k in ("$schema", "$defs", "$ref")}
    jsonschema.validate(report, sch, cls=jsonschema.Draft202012Validator)
    return report


class ValidatingClient:
    """A gradio_client Client whose every answer is validated against its schema."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def predict(self, *args: Any, api_name: str, **kwargs: Any) -> Any:
        out = self._client.predict(*args, api_name=api_name, **kwargs)
        if api_name in JSON_OUTPUT:
            pos = JSON_OUTPUT[api_name]
            answer = out if pos is None else out[pos]
            validate(api_name, answer)
            results.check(api_name.strip("/"), answer)
        return out
