"""qMIL, query-based multiple instance learning (thesis Chapter 2): descriptor and schema.

Network: :mod:`models.qmil` (and the gated-attention baseline :mod:`models.gated_mil`);
training plug-in: :mod:`training.methods.qmil`; app tab: :mod:`app.tabs.query`; defaults:
``training/configs/qmil.yaml``; docs: docs/qmil.md.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from methods.base import BuildRun, ExportIO, MethodDescriptor, Variant
from methods.schema import (BudgetConfig, EngineConfig, existing_path, non_negative,
                            positive, probability)


@dataclass
class UserDataConfig:
    """Keys that replace those of ``data`` for a user's image folder or bag manifest."""
    unseen_classes: list[str]
    image_size: int = positive()


@dataclass
class DataConfig:
    dataset: Literal["fashion_mnist", "digits"]
    root: str | None = existing_path()
    format: Literal["auto", "idx", "image_folder", "bag_csv"]
    unseen_classes: list[str]
    train_queries: list[str] | None
    bags_per_query: int = positive()
    pos_fraction: float = probability()
    size_mean: float
    size_std: float
    min_size: int = positive()
    max_size: int = positive()
    seed: int
    eval_bags_per_query: int = positive()
    eval_seed: int
    image_size: int = positive()
    channels: Literal[1, 3] | None
    mean: list[float] | None
    std: list[float] | None
    val_fraction: float = probability()
    test_fraction: float = probability()
    split_seed: int
    user_data: UserDataConfig


@dataclass
class ModelUserDataConfig:
    """Keys that replace those of ``model`` for a user's image folder or bag manifest."""
    temperature: float
    name: Literal["qmil_lenet", "qmil_timm", "gated_mil_lenet"]
    encoder: str
    freeze_backbone: bool
    train_stages: int
    cache_views: int = positive()


@dataclass
class ModelConfig:
    name: Literal["qmil_lenet", "qmil_timm", "gated_mil_lenet"]
    word_vectors: Literal["glove", "minilm"]  # the query vectors (runtime/words.py KINDS)
    encoder: str
    feat_dim: int = positive()
    embed_dim: int = positive()
    attn_dim: int = positive()
    temperature: float
    classifier_hidden: int
    classifier_query: Literal["bilinear", "none"]
    embed_norm: bool
    attn_init: Literal["scaled", "torch"]
    freeze_backbone: bool                     # qmil_timm: the backbone stays at its start
    train_stages: int                         # frozen: the last stages that train on cached maps
    cache_views: int = positive()             # frozen: cached views of each training image
    view_aug: dict[str, Any]                  # their crops/flips/jitter (training/data/ssl_aug.py)
    user_data: ModelUserDataConfig


@dataclass
class LossConfig:
    lam: float
    sc_weight: float = non_negative()         # semantic-consistency term (0: thesis-literal)
    sc_anchors: int = positive()              # anchor words per step
    sc_vocab: int = positive()                # anchor vocabulary (frequent words)


@dataclass
class EvalConfig:
    batch_size: int = positive()
    strong_rel: float = probability()


@dataclass
class QMILConfig(EngineConfig):
    data: DataConfig
    model: ModelConfig
    loss: LossConfig
    eval: EvalConfig
    budget: BudgetConfig


_OUT_AXES = {"prob": {0: "batch"}, "logit": {0: "batch"}, "alpha": {0: "batch", 1: "bag"},
             "beta": {0: "batch", 1: "bag"}}
_FEATURE_AXES = {"features": {0: "batch", 1: "bag"}}
_BAG_AXES = {"images": {0: "batch", 1: "bag"}, "mask": {0: "batch", 1: "bag"}}
QMIL_IO = ExportIO(inputs=("images", "mask", "query"),
                   outputs=("prob", "logit", "alpha", "beta", "features"),
                   dynamic_axes={**_BAG_AXES, "query": {0: "batch"}, **_OUT_AXES,
                                 **_FEATURE_AXES})
GATED_IO = ExportIO(inputs=("images", "mask"), outputs=("prob", "logit", "alpha", "beta"),
                    dynamic_axes={**_BAG_AXES, **_OUT_AXES})


def variant_of(extra: dict[str, Any]) -> str:
    if extra.get("gated"):
        return "gated"
    return "thesis_classifier" if extra.get("classifier_query") == "none" else "qmil"


DESCRIPTOR = MethodDescriptor(
    name="qmil", title="Query-based multiple instance learning", chapter="2",
    description="query-based multiple instance learning (Chapter 2)",
    schema=QMILConfig, config_file="qmil.yaml",
    plugin="training.methods.qmil:build",
    variants={
        "qmil": Variant("qmil", (), QMIL_IO, "export.methods.qmil.views:query_view",
                        "qMIL with the query-conditioned (bilinear) classifier, the default",
                        domain=("features",), calibration="sigmoid",
                        calibration_output="logit", headline="bag_acc",
                        evaluate="export.methods.qmil.evaluation:bag_acc"),
        "thesis_classifier": Variant("thesis_classifier", ("model.classifier_query=none",),
                                     QMIL_IO, "export.methods.qmil.views:query_view",
                                     "qMIL with the thesis-literal classifier on z alone",
                                     domain=("features",), calibration="sigmoid",
                                     calibration_output="logit", headline="bag_acc",
                                     evaluate="export.methods.qmil.evaluation:bag_acc"),
        "gated": Variant("gated", ("model.name=gated_mil_lenet", "data.train_queries=[bag]"),
                         GATED_IO, "export.methods.qmil.views:gated_view",
                         "gated-attention MIL baseline (one class; ignores the query)",
                         served=False),
    },
    variant_of=variant_of,
    tab="app.tabs.query",
    limits="instances are 28 x 28 grayscale Fashion-MNIST-like images; photos of real "
           "clothes differ from that domain. Query words are GloVe 6B 50-d vectors (not the "
           "thesis' word2vec); zero-shot words work only as far as GloVe places them near "
           "the training classes.",
    default_runs=(BuildRun("qmil", seconds=58),),
    smoke=("data.bags_per_query=8", "data.eval_bags_per_query=4", "train.batch_size=8"),
    docs="docs/qmil.md",
    post_export=("export.methods.qmil.assets:write_examples",),
)
