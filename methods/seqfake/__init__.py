"""Sequential deepfake detection (thesis Chapter 5): descriptor and config schema.

Network: :mod:`models.seqfake` (the thesis model) and :mod:`models.seqfakeformer` (the
SeqFakeFormer-style baseline); training plug-in: :mod:`training.methods.seqfake`; app tab:
:mod:`app.tabs.face`; defaults: ``training/configs/seqfake.yaml``; docs: docs/seqfake.md.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from methods.base import BuildRun, ExportIO, MethodDescriptor, Variant
from methods.schema import (BudgetConfig, EngineConfig, existing_path, probability,
                            non_negative, positive)


@dataclass
class GenerateConfig:
    """``data.generate``: the generated-face set made when ``data.root`` is null."""
    n_train: int = positive()
    n_val: int = positive()
    n_test: int = positive()
    seed: int


@dataclass
class DataUserDataConfig:
    """Keys that replace those of ``data`` for a user's Seq-DeepFake folder."""
    img_size: int = positive()


@dataclass
class DataConfig:
    root: str | None = existing_path()    # null: generated faces; or a Seq-DeepFake folder
    task: Literal["components", "attributes", "binary"]
    img_size: int = positive()
    train_split: str
    limit_train: int | None = positive()
    limit_eval: int | None = positive()
    generate: GenerateConfig
    user_data: DataUserDataConfig


Backbone = Literal["resnet18", "resnet34", "resnet50", "mobilenetv2_100"]


@dataclass
class ModelUserDataConfig:
    """Keys that replace those of ``model`` for a user's Seq-DeepFake folder."""
    backbone: Backbone


@dataclass
class ModelConfig:
    arch: Literal["seqfake", "seqfakeformer"]
    backbone: Backbone
    dim: int = positive()
    depth: int = positive()               # transformer encoder layers
    dec_depth: int = positive()           # seqfakeformer: decoder layers
    heads: int = positive()
    out_indices: list[int]
    out_level: int = non_negative()
    pos_embed: bool
    user_data: ModelUserDataConfig     # a user's Seq-DeepFake folder: replaces keys left at default
    dropout: float
    order_head: Literal["rank", "slots", "slots_raw"]  # seqfake: the thesis' ranking or a slot head


@dataclass
class LossWeights:
    cls: float
    bce_patch: float
    bce_cls: float
    rank: float
    slots: float = non_negative()         # the slot order head's per-slot CE


@dataclass
class LossConfig:
    weights: LossWeights
    alpha: float
    a: float
    tau: float
    num_k: int = positive()
    reg_reduction: Literal["sum", "mean"]


@dataclass
class WeakAugConfig:
    enabled: bool
    hflip: float = probability()
    brightness: float
    contrast: float
    saturation: float
    crop_scale: float
    blur_p: float = probability()
    blur_sigma: tuple[float, float]


@dataclass
class StrongAugConfig:
    enabled: bool
    p: float = probability()
    regions: list[str]
    landmark_jitter: float
    shift: float
    blend: tuple[float, float]


@dataclass
class AugConfig:
    weak: WeakAugConfig
    strong: StrongAugConfig


@dataclass
class EvalConfig:
    split: str
    threshold: float = probability()
    decode_from: Literal["fused", "patch"]
    slot_decode: Literal["slots", "hybrid_position", "hybrid_assign"]
    batch_size: int = positive()


@dataclass
class SeqFakeConfig(EngineConfig):
    data: DataConfig
    model: ModelConfig
    loss: LossConfig
    aug: AugConfig
    eval: EvalConfig
    budget: BudgetConfig


_IMAGE_AXES = {"image": {0: "batch"}}
THESIS_IO = ExportIO(
    inputs=("image",), outputs=("probs", "logits", "u", "dissim", "features"),
    dynamic_axes={**_IMAGE_AXES, "probs": {0: "batch"}, "logits": {0: "batch"},
                  "u": {0: "batch"}, "dissim": {0: "batch"}, "features": {0: "batch"}})
# the thesis model with the parallel slot order head (model.order_head=slots)
SLOTS_IO = ExportIO(
    inputs=("image",), outputs=THESIS_IO.outputs + ("step_probs", "sequence"),
    dynamic_axes={**THESIS_IO.dynamic_axes, "step_probs": {0: "batch"},
                  "sequence": {0: "batch"}},
    output_dtypes={"sequence": "int64"})
DECODER_IO = ExportIO(
    inputs=("image",), outputs=("probs", "step_probs", "sequence", "features"),
    dynamic_axes={**_IMAGE_AXES, "probs": {0: "batch"}, "step_probs": {0: "batch"},
                  "sequence": {0: "batch"}, "features": {0: "batch"}},
    output_dtypes={"sequence": "int64"})
# the authors' SeqFakeFormer imported from their published weights (export.published)
PUBLISHED_IO = ExportIO(
    inputs=("image",), outputs=("probs", "step_logits", "sequence", "steps", "features"),
    dynamic_axes={**_IMAGE_AXES, "probs": {0: "batch"}, "step_logits": {0: "batch"},
                  "sequence": {0: "batch"}, "steps": {0: "batch"}, "features": {0: "batch"}},
    output_dtypes={"sequence": "int64", "steps": "int64"})
# SBI's binary detector imported from its published weights (export.published.sbi): probs
# (B, 1) fakeness softmax[:, 1], logits (B, 2), features (B, 1792) the pooled head features
SBI_IO = ExportIO(
    inputs=("image",), outputs=("probs", "logits", "features"),
    dynamic_axes={**_IMAGE_AXES, "probs": {0: "batch"}, "logits": {0: "batch"},
                  "features": {0: "batch"}})


# the domain check's features: the pooled backbone features (measured: the logits and the
# token dissimilarities u did not separate other data, AUROC < 0.5; reports/domain.md)
THESIS_DOMAIN = ("features",)


def variant_of(extra: dict[str, Any]) -> str:
    """thesis | attributes | binary | slots | seqfakeformer | published | sbi, from the
    checkpoint's extra state."""
    if extra.get("arch") == "published":
        return "published"
    if extra.get("arch") == "sbi":
        return "sbi"
    if extra.get("arch") == "seqfakeformer":
        return "seqfakeformer"
    if str(extra.get("order_head", "")).startswith("slots"):
        return "slots"
    return {"attributes": "attributes", "binary": "binary"}.get(extra.get("task"), "thesis")


DESCRIPTOR = MethodDescriptor(
    name="seqfake", title="Sequential deepfake detection", chapter="5",
    description="sequential deepfake detection (Chapter 5)",
    schema=SeqFakeConfig, config_file="seqfake.yaml",
    plugin="training.methods.seqfake:build",
    variants={
        "thesis": Variant("thesis", (), THESIS_IO, "export.methods.seqfake.views:thesis_view",
                          "the thesis model: facial components, probability-ranked sequence",
                          domain=THESIS_DOMAIN, calibration="sigmoid", headline="fixed_acc",
                          evaluate="export.methods.seqfake.evaluation:fixed_acc"),
        "attributes": Variant("attributes", ("data.task=attributes",), THESIS_IO,
                              "export.methods.seqfake.views:thesis_view",
                              "the thesis model on facial attributes (Seq-FaceAttr)",
                              domain=THESIS_DOMAIN, calibration="sigmoid",
                              headline="fixed_acc",
                              evaluate="export.methods.seqfake.evaluation:fixed_acc"),
        "binary": Variant("binary", ("data.task=binary",), THESIS_IO,
                          "export.methods.seqfake.views:thesis_view",
                          "real / fake only (no sequence)",
                          domain=THESIS_DOMAIN, calibration="sigmoid", headline="auc",
                          evaluate="export.methods.seqfake.evaluation:binary_auc"),
        "slots": Variant("slots", ("model.order_head=slots",), SLOTS_IO,
                         "export.methods.seqfake.views:slots_view",
                         "the thesis model with the parallel slot order head (not in the "
                         "thesis): slot s names the edit of step s in one forward pass",
                         domain=THESIS_DOMAIN, calibration="sigmoid", headline="fixed_acc",
                         evaluate="export.methods.seqfake.evaluation:decoder_fixed_acc"),
        "seqfakeformer": Variant("seqfakeformer", ("model.arch=seqfakeformer",), DECODER_IO,
                                 "export.methods.seqfake.views:decoder_view",
                                 "SeqFakeFormer-style autoregressive decoder (baseline)",
                                 domain=("features",), headline="fixed_acc",
                                 evaluate="export.methods.seqfake.evaluation:decoder_fixed_acc"),
        # imported, not trained here: no domain check, calibration or INT8 rule fitted on
        # this project's generated faces (they are not the data the authors trained on)
        "published": Variant("published", (), PUBLISHED_IO,
                             "export.methods.seqfake.views:published_view",
                             "the authors' SeqFakeFormer from their published weights "
                             "(python -m export.published seqfakeformer)", imported=True),
        "sbi": Variant("sbi", (), SBI_IO, "export.methods.seqfake.views:sbi_view",
                       "SBI's EfficientNet-B4 face-swap detector from the authors' published "
                       "weights (python -m export.published sbi)", imported=True),
    },
    variant_of=variant_of,
    tab="app.tabs.face",
    limits="trained by default on procedurally generated faces with synthetic edits; it is "
           "not a detector for real deepfakes until retrained on real data (Seq-DeepFake). "
           "Crops must contain the whole face with hair.",
    default_runs=(BuildRun("seqfake", seconds=237),
                  # the Seq-FaceAttr model: built on request (--only seqfake_attr), kept out
                  # of the first build so that it finishes within 15 minutes
                  BuildRun("seqfake_attr", ("data.task=attributes",), seconds=266,
                           optional=True),
                  # the baseline shown beside the thesis model in the face tab
                  BuildRun("seqfakeformer", ("model.arch=seqfakeformer",), seconds=354,
                           optional=True)),
    smoke=("data.generate.n_train=48", "data.generate.n_val=8", "data.generate.n_test=24",
           "train.batch_size=8"),
    docs="docs/seqfake.md",
    # the face detector the face tab and the video analysis run, as ONNX (torch-free serving)
    post_export=("export.methods.seqfake.assets:write_examples", "export.mtcnn:after_export"),
)
