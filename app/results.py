"""The answers' types: one pydantic model per answer kind, and the API's JSON schemas made
from them.

Every service checks its answer with :func:`check` just before the answer leaves it, so an
answer that breaks its type (a missing field, a probability above 1, a verdict that is not
one) or carries a field its model does not declare fails there and in the tests. The
published schemas (``docs/api/<endpoint>.schema.json``) are generated from these models:

    python -m app.results --write docs/api    # write the schemas
    python -m app.results --check docs/api    # exit 1 when a committed schema differs

A schema leaves a client free to meet fields it does not know (``additionalProperties``
true) except where it says otherwise; the services themselves may only return declared
fields (:func:`check`). Serving tier: imports neither torch nor training code.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Optional, Union

from pydantic import (BaseModel, ConfigDict, Field, RootModel, ValidationError,
                      ValidationInfo, model_validator)
from pydantic.json_schema import GenerateJsonSchema
from pydantic_core import core_schema

__all__ = ["ENDPOINTS", "ValidationError", "check", "endpoint_schema", "main"]

# ---------------------------------------------------------------- shared field descriptions
HEADLINE = ("The answer's first line: the finding when the domain check measured the input in "
            "domain; otherwise 'no reliable verdict: this ... is unlike the data this model was "
            "trained on' (out of domain) or 'no domain check for this model: ...' (the model "
            "has none), and the model's output is only in the raw_ fields "
            "(app/services/reliability.py).")
RELIABILITY = ("Why the answer is or is not a finding: in_domain, out_of_domain (the domain "
               "check measured the input unlike the training data), or no_domain_check (the "
               "model was exported without one: nothing measured it, so its answer is not a "
               "finding either).")
DOMAIN = ("The domain check (runtime/domain.py): whether the input is like the model's "
          "training data; null when the model was exported without one.")
GENERIC_SCORE = ("With a generic part of the check (image statistics beside the model's "
                 "features): its score; in domain only when both scores are within their "
                 "thresholds.")
TEMPERATURE = ("The temperature fitted at export that the probabilities were divided by "
               "(export/calibration.py); null when the model is uncalibrated.")
UNRELIABLE_FIELD = ("unreliable: the input was not measured in domain (see reliability); the "
                    "model's own value is in raw_{field}")


def _reliable(finding: str) -> str:
    """The description of ``reliable`` for an answer whose finding is ``finding``."""
    return ("true only when the domain check measured the input in domain: then "
            f"{finding} is a finding.")


Prob = Annotated[float, Field(ge=0, le=1)]  # a probability
Reliability = Literal["in_domain", "out_of_domain", "no_domain_check"]
Verdict = Literal["manipulated", "real"]
Task = Literal["components", "attributes", "binary"]


def _finding_rule(field: str, then: Any, otherwise: list[str] | None) -> dict[str, Any]:
    """The JSON-schema rule "``field`` reads ``then`` exactly when ``reliable`` is false"
    (``otherwise``: the values it may take when reliable; None: no rule then)."""
    rule: dict[str, Any] = {
        "if": {"properties": {"reliable": {"const": False}}, "required": ["reliable"]},
        "then": {"properties": {field: {"const": then}}}}
    if otherwise is not None:
        rule["else"] = {"properties": {field: {"enum": otherwise}}}
    return {"allOf": [rule]}


class Result(BaseModel):
    """Base of every answer type: fields a model does not declare are kept (a client may meet
    them), but :func:`check` refuses them in what a service returns unless ``open_ended``."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)
    open_ended: ClassVar[bool] = False       # True: undeclared fields are part of the answer
    extra_pattern: ClassVar[Optional[str]] = None  # names of allowed undeclared fields

    @model_validator(mode="after")
    def _declared_only(self, info: ValidationInfo) -> "Result":
        """With ``check``'s context, every field must be declared (or match extra_pattern)."""
        extra = self.model_extra or {}
        pattern = type(self).extra_pattern
        if pattern is not None:
            wrong = [k for k in extra if not re.match(pattern, k)]
            if wrong:
                raise ValueError(f"undeclared field(s) {wrong}")
        documented = bool(info.context and info.context.get("declared_only"))
        if documented and not type(self).open_ended and pattern is None and extra:
            raise ValueError(f"field(s) {sorted(extra)} are not declared in "
                             f"app/results.py's {type(self).__name__}")
        return self


class Closed(Result):
    """An answer part that a client never meets with other fields
    (``additionalProperties`` false)."""

    model_config = ConfigDict(extra="forbid")


class Reliable(Result):
    """The three fields that open every answer (app/services/reliability.py)."""

    headline: str = Field(min_length=1, description=HEADLINE)
    reliable: bool = Field(description=_reliable("the answer"))
    reliability: Reliability = Field(description=RELIABILITY)
    finding_field: ClassVar[Optional[str]] = None   # the field that reads "unreliable"
    finding_values: ClassVar[Optional[tuple[str, ...]]] = None  # its values when reliable

    @model_validator(mode="after")
    def _finding(self) -> "Reliable":
        """The finding field reads ``unreliable`` exactly when the answer is not reliable."""
        name = type(self).finding_field
        if name is None:
            return self
        value = getattr(self, name)
        if not self.reliable and value != "unreliable":
            raise ValueError(f"an unreliable answer's {name} must be 'unreliable', got {value!r}")
        if self.reliable and value == "unreliable":
            raise ValueError(f"a reliable answer's {name} cannot be 'unreliable'")
        values = type(self).finding_values
        if self.reliable and values is not None and value not in values:
            raise ValueError(f"{name} must be one of {list(values)}, got {value!r}")
        return self


class Domain(Closed):
    """One input's domain check (runtime/domain.py check)."""

    in_domain: bool
    score: float = Field(ge=0)
    threshold: float = Field(ge=0)
    trained_on: str
    generic_score: float = Field(default=None, ge=0, description=GENERIC_SCORE)
    generic_threshold: float = Field(default=None, ge=0)


# ------------------------------------------------------------------------------- /face
class SequenceStep(Result):
    """One step of the manipulation sequence, in order."""

    open_ended = True
    step: int = Field(ge=1)
    component: str
    probability: Prob


class FaceReport(Reliable):
    """/face report (also `python -m app.cli face`)"""

    model_config = ConfigDict(title="/face report (also `python -m app.cli face`)",
                              json_schema_extra=_finding_rule(
                                  "verdict", "unreliable", ["manipulated", "real"]))
    finding_field = "verdict"
    reliable: bool = Field(description=_reliable("`verdict`"))
    model: str
    model_version: str
    provider: str
    task: Task
    verdict: Literal["manipulated", "real", "unreliable"] = Field(
        description=UNRELIABLE_FIELD.format(field="verdict"))
    raw_verdict: Verdict = Field(
        description="The model's own verdict, whether or not it is a finding (marked so when "
                    "reliable is false).")
    fake_probability: Prob
    threshold: Prob
    sequence: list[SequenceStep] = Field(max_length=5)
    sequence_text: str
    probabilities: dict[str, Prob]
    trained_on: str
    decoder: Literal["probability-ranked", "slots", "autoregressive", "none"] = Field(
        description="How the sequence was read: probability-ranked (the thesis), slots (the "
                    "parallel slot order head: each step's edit in one pass), autoregressive "
                    "(a step-by-step decoder), or none (a binary fakeness model: no sequence).")
    answer: Literal["fakeness"] = Field(
        default=None,
        description="Only for a binary fakeness model (SBI imported from its published weights, "
                    "app/services/fakeness.py): its one score is fake_probability; it gives no "
                    "sequence and no component order.")
    detects: str = Field(default=None,
                         description="With `answer`: what the model detects, in words.")
    faces: list[dict[str, Any]]
    face_number: Optional[int] = Field(ge=1)
    detector: Optional[str]
    rotated: Literal[0, 90, 180, 270] = Field(
        default=None,
        description="0 when the face was found upright; 90, 180 or 270 when no face was found "
                    "upright and the image turned by that many degrees counter-clockwise was "
                    "analysed (its boxes refer to the turned image).")
    rotation_note: str = Field(default=None,
                               description="Only with a non-zero `rotated`: the sentence that "
                                           "says so.")
    alignment: str = Field(default=None,
                           description="How the face was cropped for this model, as its "
                                       "manifest entry says (runtime/align.py): crop45 (margin "
                                       "crop), ffhq, celebahq, ..., or 'none (crop given)'.")
    domain: Optional[Domain] = Field(default=None, description=DOMAIN)
    temperature: Optional[float] = Field(default=None, gt=0, description=TEMPERATURE)


class ModelCard(Result):
    """What the side-by-side view shows of a model (app.services.face.model_card_line)."""

    model: str
    version: str
    sha256: Optional[str]
    variant: Optional[str]
    task: Task
    fixed_acc: Optional[Prob]
    adaptive_acc: Optional[Prob]
    n_eval: Optional[float] = None
    trained_on: str = None
    order_head: Literal["probability-ranked", "slots", "autoregressive"] = Field(
        default=None, description="How the model orders the edits (as FaceReport.decoder).")


class FaceCompare(Closed):
    """Every served model's answer for the same face (model_name 'all')."""

    models: list[ModelCard] = Field(min_length=1)
    answers: list[FaceReport] = Field(min_length=1)


class FaceAnswer(RootModel[Union[FaceReport, FaceCompare]]):
    """One model's report, or with model_name 'all' every served model's answer for the same
    face (side by side) with the models' measured test accuracies."""


# ------------------------------------------------------------------------- /face_batch
class BatchSummary(Result):
    """What a batch did: files, faces, verdicts counted, errors and time."""

    files: int = Field(ge=0)
    faces: int = Field(ge=0)
    manipulated: int = Field(ge=0)
    unreliable: int = Field(
        ge=0, description="Rows without a reliable verdict (out of domain, or a model without "
                          "a domain check); not counted as manipulated.")
    errors: int = Field(ge=0)
    no_face: int = Field(default=None, ge=1)
    seconds: float = Field(ge=0)
    files_per_second: Optional[float] = None
    analysed_now: int = None
    resumed: int = None
    skipped_non_images: int = None
    stopped: str = Field(default=None, description="The request's time limit stopped the "
                                                   "batch: after how many of its files.")
    not_analysed: int = Field(default=None, ge=0)
    out: str = Field(default=None, description="The results file (CLI --out).")


class FaceBatchRow(Result):
    """One face of one file by one model (a file that fails: one row, status error or
    no_face); ``p_<component>``: each component's probability."""

    model_config = ConfigDict(json_schema_extra={
        "patternProperties": {"^p_": {"type": ["number", "null"], "minimum": 0, "maximum": 1}},
        "additionalProperties": False})
    extra_pattern = r"^p_"
    file: str
    sha256: Optional[str] = Field(pattern="^[0-9a-f]{64}$")
    face: Optional[int] = Field(ge=1)
    box: Optional[list[float]] = Field(default=None, min_length=4, max_length=4)
    face_score: Optional[float] = None
    model: Optional[str]
    model_version: Optional[str] = None
    verdict: Optional[Literal["manipulated", "real", "unreliable"]] = Field(
        description=UNRELIABLE_FIELD.format(field="verdict") + "; null: no face")
    raw_verdict: Optional[Verdict] = Field(
        description="The model's own verdict, whether or not it is a finding; null: no face.")
    fake_probability: Optional[Prob]
    sequence: Optional[str]
    in_domain: Optional[bool] = None
    status: Literal["ok", "no_face", "error"]
    error: Optional[str]

    @model_validator(mode="after")
    def _component_probabilities(self) -> "FaceBatchRow":
        """Each ``p_`` column is a probability or empty."""
        for key, value in (self.model_extra or {}).items():
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not 0 <= value <= 1):
                raise ValueError(f"{key} must be a probability or null, got {value!r}")
        return self


class FaceBatch(Closed):
    """A batch of face images: the summary and one row per face per model (a file that fails
    is one row with status 'error' or 'no_face' and its message)."""

    summary: BatchSummary
    rows: list[FaceBatchRow]


# ------------------------------------------------------------------------- /face_video
class TimelinePoint(Result):
    """One sampled frame of a track."""

    open_ended = True
    time: float = Field(ge=0)
    fake_probability: Prob
    probabilities: dict[str, Prob]
    sequence: str
    box: Optional[list[float]] = Field(min_length=4, max_length=4)


class TopFrame(Result):
    """A frame of the track with one of its highest fake probabilities."""

    time: float
    fake_probability: Prob


class TrackDomain(Result):
    """The track's domain check: its frames' checks (runtime/domain.py bag_check, half of the
    frames)."""

    in_domain: bool
    score: float = Field(ge=0)
    threshold: float = Field(ge=0)
    trained_on: str = None
    instances_in_domain: int = Field(ge=0)
    instances: int = Field(ge=1)
    min_in_domain: float = None
    generic_score: float = Field(default=None, ge=0, description=GENERIC_SCORE)
    generic_threshold: float = Field(default=None, ge=0)


class Track(Reliable):
    """One person of the video: the mean of its frames' fake probabilities and its frames."""

    model_config = ConfigDict(json_schema_extra=_finding_rule(
        "verdict", "unreliable", ["manipulated", "real"]))
    finding_field = "verdict"
    reliable: bool = Field(description=_reliable("`verdict`"))
    track: int = Field(ge=1)
    frames: int = Field(ge=1)
    fake_probability: Prob
    verdict: Literal["manipulated", "real", "unreliable"] = Field(
        description=UNRELIABLE_FIELD.format(field="verdict")
        + " (a track is in domain when at least half its frames are)")
    raw_verdict: Verdict = Field(description="The model's own verdict for the track.")
    sequence_text: str
    timeline: list[TimelinePoint] = Field(min_length=1)
    top_frames: list[TopFrame] = Field(max_length=3)
    domain: Optional[TrackDomain] = Field(
        default=None, description="The track's domain check: its frames' checks "
                                  "(runtime/domain.py bag_check, half of the frames); null "
                                  "when the model has none.")


class SampledFrame(Result):
    """One sampled frame: its time and how many faces it shows."""

    open_ended = True
    time: float
    faces: int = Field(ge=0)
    error: str = None


class VideoReport(Reliable):
    """Every face of the sampled frames, linked into one track per person; a track's score is
    the mean of its frames' fake probabilities, the video's the highest track score."""

    model_config = ConfigDict(title="/face_video report (also `python -m app.cli video`)",
                              json_schema_extra=_finding_rule(
                                  "verdict", "unreliable", ["manipulated", "real"]))
    finding_field = "verdict"
    reliable: bool = Field(description=_reliable("`verdict`"))
    video: str
    frames_sampled: int = Field(ge=1)
    frames_analysed: int = Field(ge=1)
    frames_manipulated: int = Field(default=None, ge=0)
    tracks: list[Track] = Field(min_length=1)
    verdict: Literal["manipulated", "real", "unreliable"] = Field(
        description="manipulated when a track with a reliable verdict is; else unreliable "
                    "when a track has no reliable verdict; else real. The models' own verdict "
                    "is in raw_verdict.")
    raw_verdict: Verdict = Field(description="manipulated when any track's raw verdict is.")
    video_fake_probability: Prob
    video_rule: str = Field(
        default=None,
        description="Only for a binary fakeness model (SBI): video_fake_probability follows "
                    "its authors' video rule, said here, instead of the highest track score.")
    threshold: Prob
    model: str
    model_version: str
    frames: list[SampledFrame]


# ------------------------------------------------------------------------------ /query
class Attention(Result):
    """One image of the bag by its attention weight."""

    instance: int = Field(ge=1)
    beta: Prob
    in_domain: bool = Field(default=None, description="this image's domain check (present "
                                                      "when the model has one)")
    domain_score: float = None


class ClosestQuery(Result):
    """A training query close to a word that was not one."""

    query: str
    cosine: float


class BagDomain(Result):
    """The bag's domain check: in domain when at least min_in_domain of its images are."""

    in_domain: bool
    score: float = Field(description="median image score")
    threshold: float
    trained_on: str
    instances_in_domain: int = Field(ge=0)
    instances: int = Field(ge=1)
    min_in_domain: float = Field(gt=0, le=1)
    generic_score: float = Field(default=None, ge=0, description=GENERIC_SCORE)
    generic_threshold: float = Field(default=None, ge=0)


class QueryReport(Reliable):
    """/query report (also `python -m app.cli query`); instances are numbered from 1 in
    upload order"""

    model_config = ConfigDict(
        title="/query report (also `python -m app.cli query`); instances are numbered from 1 "
              "in upload order",
        json_schema_extra=_finding_rule("answer", "unreliable", ["yes", "no"]))
    finding_field = "answer"
    reliable: bool = Field(description=_reliable("`answer`"))
    model: str
    model_version: str
    provider: str
    query: str
    query_kind: str
    answer: Literal["yes", "no", "unreliable"] = Field(
        description="yes / no, or " + UNRELIABLE_FIELD.format(field="answer"))
    raw_answer: Literal["yes", "no"] = Field(
        description="The model's own answer, whether or not it is a finding.")
    probability: Prob
    bag_size: int = Field(ge=1)
    attention: list[Attention]
    top_instance: int = Field(ge=1)
    closest_training_queries: list[ClosestQuery] = None
    warning: str = None
    temperature: Optional[float] = Field(
        gt=0, description="The bag temperature fitted at export (export/calibration.py): "
                          "probability = sigmoid(logit / temperature); null when the model was "
                          "exported uncalibrated.")
    domain: Optional[BagDomain] = Field(
        description="The bag's domain check (runtime/domain.py bag_check): in domain when at "
                    "least min_in_domain of its images are; null when the model was exported "
                    "without one.")


# ------------------------------------------------------------------------- /neighbours
class Neighbour(Result):
    """One gallery image, nearest first."""

    rank: int = Field(ge=1)
    index: int = Field(ge=0)
    id: str
    label: Union[str, int]
    similarity: float
    missing: bool = Field(default=None, description="true: the image file is gone or "
                                                    "unreadable since the gallery was built.")


class NeighboursReport(Reliable):
    """/neighbours report (also `python -m app.cli neighbours`); a query that is a gallery
    item is left out of its neighbours and of precision_at_k"""

    model_config = ConfigDict(
        title="/neighbours report (also `python -m app.cli neighbours`); a query that is a "
              "gallery item is left out of its neighbours and of precision_at_k")
    model: str
    model_version: str
    provider: str
    k: int = Field(ge=1)
    neighbours: list[Neighbour]
    query_in_gallery: bool
    query_gallery_id: Optional[str]
    gallery: str
    query_label: str = None
    precision_at_k: float = Field(default=None, ge=0, le=1)
    domain: Optional[Domain] = Field(default=None, description=DOMAIN)


# ---------------------------------------------------------------------------- /classify
class TopClass(Result):
    """One of the top classes."""

    open_ended = True
    class_: str = Field(alias="class")
    probability: Prob
    group: str
    train_count: Optional[int]


class ClassifyReport(Reliable):
    """One classifier's answer (the CLI prints one)."""

    model_config = ConfigDict(json_schema_extra=_finding_rule("label", "unreliable", None))
    finding_field = "label"
    reliable: bool = Field(description=_reliable("`label`"))
    model: str
    model_version: str
    provider: str
    loss: Optional[str]
    label: str = Field(description="The top class, or " + UNRELIABLE_FIELD.format(field="label"))
    raw_label: str = Field(description="The model's own top class, whether or not it is a "
                                       "finding; `top` lists the model's raw classes.")
    top: list[TopClass] = Field(min_length=1)
    cam_class: str
    domain: Optional[Domain] = Field(default=None, description=DOMAIN)
    temperature: Optional[float] = Field(default=None, gt=0, description=TEMPERATURE)


class ModelError(Closed):
    """A classifier that could not answer."""

    error: str


class ClassifyAnswer(RootModel[dict[str, Union[ClassifyReport, ModelError]]]):
    """/classify answer: one report per served classifier (the CLI prints one report,
    `$defs/report`)"""

    model_config = ConfigDict(
        title="/classify answer: one report per served classifier (the CLI prints one "
              "report, `$defs/report`)",
        json_schema_extra={"minProperties": 1})

    @model_validator(mode="after")
    def _one_at_least(self) -> "ClassifyAnswer":
        """At least one classifier answered."""
        if not self.root:
            raise ValueError("no classifier in the answer")
        return self


# ------------------------------------------------------------------------------ /status
class ModelStatus(Result):
    """One model: ok with provider and version, or unavailable with the error."""

    open_ended = True
    status: Literal["ok", "unavailable"]
    provider: str = None
    version: str = None
    error: str = None


class Progress(Result):
    """A training run's live progress (runs/<run>/progress.json)."""

    open_ended = True
    phase: Literal["preparing", "training", "evaluating", "finished", "interrupted"] = None
    epoch: int = None
    epochs: int = None
    step: int = None
    total_steps: int = None
    eta_s: Optional[float] = None


class BuildRun(Result):
    """One run of the background build's queue."""

    open_ended = True
    run: str
    method: str
    state: Literal["waiting", "training", "exporting", "ready", "failed", "interrupted"]
    seconds_estimate: float = None
    elapsed_s: Optional[float] = None
    error: Optional[str] = None
    progress: Progress = None


class Build(Result):
    """The background build (app/build.py)."""

    open_ended = True
    running: bool
    pid: int = None
    smoke: bool = None
    eta_s: Optional[float] = None
    runs: list[BuildRun]


class Status(Result):
    """/status answer (also `python -m app.cli status`, without app_version, artifacts,
    limits and manifest_warning)"""

    model_config = ConfigDict(
        title="/status answer (also `python -m app.cli status`, without app_version, "
              "artifacts, limits and manifest_warning)")
    open_ended = True
    manifest_error: Optional[str]
    models: dict[str, ModelStatus]
    app_version: str = None
    artifacts: str = None
    manifest_warning: Optional[str] = Field(
        default=None, description="the manifest on disk could not be read; the last readable "
                                  "one is still served")
    limits: dict[str, float] = Field(
        default=None, description="the serving limits in force (app/serve.yaml, "
                                  "REPLENS_<KEY>, flags)")
    build: Optional[Build] = Field(
        default=None, description="the background build (app/build.py): null when none ran "
                                  "in this artifacts folder")


# ----------------------------------------------------------------------- the endpoints
# endpoint (as in docs/api.md) -> its answer's model; "report" kinds of the services
ENDPOINTS: dict[str, type[BaseModel]] = {
    "face": FaceAnswer, "face_batch": FaceBatch, "face_video": VideoReport,
    "query": QueryReport, "neighbours": NeighboursReport, "classify": ClassifyAnswer,
    "status": Status}
KINDS: dict[str, type[BaseModel]] = {
    **ENDPOINTS, "face_report": FaceReport, "face_compare": FaceCompare,
    "face_batch_row": FaceBatchRow, "classify_report": ClassifyReport}
# $defs names of the published schemas that clients refer to ("$defs/report")
DEF_NAMES = {"FaceReport": "report", "FaceCompare": "compare", "ModelCard": "model",
             "ClassifyReport": "report", "ModelError": "error"}


def check(kind: str, answer: Any) -> Any:
    """``answer`` unchanged when it follows the model of ``kind`` (a key of :data:`KINDS`)
    and declares no field the model does not; else :class:`pydantic.ValidationError`."""
    KINDS[kind].model_validate(answer, context={"declared_only": True})
    return answer


class _Schema(GenerateJsonSchema):
    """JSON schema as the API documents it: no generated titles on fields, no defaults (an
    answer either carries a field or does not)."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False

    def default_schema(self, schema: core_schema.WithDefaultSchema) -> dict[str, Any]:
        return self.generate_inner(schema["schema"])

    def nullable_schema(self, schema: core_schema.NullableSchema) -> dict[str, Any]:
        inner = self.generate_inner(schema["schema"])
        if "enum" in inner and isinstance(inner.get("type"), str):
            return {**inner, "type": [inner["type"], "null"], "enum": [*inner["enum"], None]}
        if set(inner) - {"type", "minimum", "maximum", "exclusiveMinimum", "minItems",
                         "maxItems", "items", "pattern", "description"} or "type" not in inner \
                or not isinstance(inner["type"], str):
            return {"oneOf": [{"type": "null"}, inner]}
        return {**inner, "type": [inner["type"], "null"]}


def _rename_defs(node: Any, names: dict[str, str]) -> Any:
    """``node`` with its ``$defs`` keys and ``$ref`` targets renamed by ``names`` and each
    description on one line."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "description" and isinstance(value, str):
                out[key] = " ".join(value.split())
            elif key == "$ref" and isinstance(value, str) and value.startswith("#/$defs/"):
                name = value[len("#/$defs/"):]
                out[key] = "#/$defs/" + names.get(name, name)
            elif key == "$defs":
                out[key] = {names.get(k, k): _rename_defs(v, names) for k, v in value.items()}
            else:
                out[key] = _rename_defs(value, names)
        return out
    if isinstance(node, list):
        return [_rename_defs(v, names) for v in node]
    return node


def endpoint_schema(endpoint: str) -> dict[str, Any]:
    """The published JSON schema (2020-12) of ``endpoint``'s answer."""
    model = ENDPOINTS[endpoint]
    body = model.model_json_schema(by_alias=True, schema_generator=_Schema, mode="validation")
    body = _rename_defs(body, DEF_NAMES)
    if model.__doc__ and "description" not in body:
        body["description"] = " ".join(model.__doc__.split())
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **body}


def schema_text(endpoint: str) -> str:
    """The schema file's text: two-space indented JSON with a final newline."""
    return json.dumps(endpoint_schema(endpoint), indent=2, ensure_ascii=False) + "\n"


def stale_schemas(folder: Path) -> list[str]:
    """The endpoints whose schema file in ``folder`` is missing or differs from the models."""
    return [e for e in ENDPOINTS
            if not (folder / f"{e}.schema.json").is_file()
            or (folder / f"{e}.schema.json").read_text() != schema_text(e)]


def main(argv: list[str] | None = None) -> int:
    """``--write DIR``: write every endpoint's schema; ``--check DIR``: exit 1 naming the
    schema files that differ from the models."""
    p = argparse.ArgumentParser(prog="python -m app.results", description=main.__doc__)
    act = p.add_mutually_exclusive_group(required=True)
    act.add_argument("--write", metavar="DIR", type=Path, help="write <endpoint>.schema.json")
    act.add_argument("--check", metavar="DIR", type=Path,
                     help="compare the schema files with the models")
    args = p.parse_args(argv)
    if args.write:
        args.write.mkdir(parents=True, exist_ok=True)
        for endpoint in ENDPOINTS:
            (args.write / f"{endpoint}.schema.json").write_text(schema_text(endpoint))
        print(f"wrote {len(ENDPOINTS)} schemas to {args.write}")
        return 0
    stale = stale_schemas(args.check)
    if stale:
        print(f"error: {', '.join(f'{e}.schema.json' for e in stale)} in {args.check} differ "
              f"from app/results.py; run `python -m app.results --write {args.check}`",
              file=sys.stderr)
        return 1
    print(f"{len(ENDPOINTS)} schemas in {args.check} match app/results.py")
    return 0


if __name__ == "__main__":
    sys.exit(main())
