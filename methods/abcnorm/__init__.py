"""ABC-Norm, long-tailed classification (thesis Chapter 4): descriptor and config schema.

Network: :mod:`models.classifier`; training plug-in: :mod:`training.methods.abcnorm`
(ABC-Norm and the baselines CE, PC, MaxEnt, LA, LDAM-DRW, cRT); app tab:
:mod:`app.tabs.classify`; defaults: ``training/configs/abcnorm.yaml``; docs: docs/abcnorm.md.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from methods.base import BuildRun, ExportIO, MethodDescriptor, Variant
from methods.schema import BudgetConfig, EngineConfig, existing_path, non_negative, positive


@dataclass
class AugmentConfig:
    crop_pad: int = non_negative()
    hflip: bool


@dataclass
class DataConfig:
    root: str | None = existing_path()
    fashion_mnist_dir: str | None = existing_path()
    imbalance_ratio: float
    n_max: int | None = positive()
    class_order: Literal["label", "permutation"]
    order_seed: int
    split_seed: int
    cifar_labels: Literal["fine", "coarse"]
    many_above: int | None = non_negative()  # null (with few_below): from the counts
    few_below: int | None = non_negative()
    size: tuple[int, int] | None             # (height, width); null: the data set's own
    folder_size: tuple[int, int]             # image folders / list files when size is null
    channels: Literal[1, 3] | None
    mean: list[float] | None
    std: list[float] | None
    augment: AugmentConfig
    eval_batch_size: int = positive()
    eval_limit: int | None = positive()


@dataclass
class RealDataModel:
    backbone: str
    stem: Literal["cifar", "imagenet"]
    stem_stride: int = positive()
    backbone_kwargs: dict[str, Any]


@dataclass
class ModelConfig(RealDataModel):
    real_data: RealDataModel | None   # replaces the keys above for ImageFolder / list files


@dataclass
class LossConfig:
    name: Literal["abcnorm", "ce", "pc", "maxent", "la", "ldam"]
    lam: float
    tau: float
    pc_lam: float
    pc_pairs: Literal["different", "same", "all"]
    maxent_gamma: float
    la_tau: float
    ldam_max_m: float
    ldam_s: float
    drw_start_epoch: int | None
    drw_beta: float


@dataclass
class StageConfig:
    name: Literal["joint", "crt"]
    init_checkpoint: str | None = existing_path()
    samples_per_epoch: int | None = positive()
    sampling_seed: int | None


@dataclass
class ABCNormConfig(EngineConfig):
    data: DataConfig
    model: ModelConfig
    loss: LossConfig
    stage: StageConfig
    budget: BudgetConfig


CLASSIFIER_IO = ExportIO(inputs=("image",), outputs=("logits", "features"),
                         dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"},
                                       "features": {0: "batch"}})


def variant_of(extra: dict[str, Any]) -> str:
    return "classifier"


DESCRIPTOR = MethodDescriptor(
    name="abcnorm", title="ABC-Norm long-tailed classification", chapter="4",
    description="long-tailed classification with ABC-Norm and baselines (Chapter 4)",
    schema=ABCNormConfig, config_file="abcnorm.yaml",
    plugin="training.methods.abcnorm:build",
    variants={"classifier": Variant("classifier", (), CLASSIFIER_IO,
                                    "export.methods.abcnorm.views:classifier_view",
                                    "backbone + linear head; logits and the last feature map "
                                    "(Grad-CAM), any loss",
                                    # the pooled penultimate features
                                    domain=("features",), calibration="softmax",
                                    headline="top1",
                                    evaluate="export.methods.abcnorm.evaluation:top1")},
    variant_of=variant_of,
    tab="app.tabs.classify",
    limits="trained on long-tailed Fashion-MNIST (imbalance ratio 100); the class groups "
           "(many/medium/few) use the thresholds stored with the model.",
    default_runs=(BuildRun("abcnorm", seconds=66),
                  # the CE baseline the Classifier tab shows beside ABC-Norm when served: built
                  # on request (--only abcnorm_ce), kept out of the first build so that it
                  # finishes within 15 minutes
                  BuildRun("abcnorm_ce", ("loss.name=ce",), seconds=47, optional=True)),
    smoke=("train.batch_size=32",),
    docs="docs/abcnorm.md",
    post_export=("export.methods.abcnorm.assets:write_examples",),
)
