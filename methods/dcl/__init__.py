"""DCL, decoupled contrastive learning (thesis Chapter 3): descriptor and config schema.

Network: :mod:`models.dcl`; training plug-in: :mod:`training.methods.dcl`; app tab:
:mod:`app.tabs.retrieval` (kNN over a gallery built by :mod:`export.methods.dcl.assets`);
defaults: ``training/configs/dcl.yaml``; docs: docs/dcl.md.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from methods.base import BuildRun, ExportIO, MethodDescriptor, Variant
from methods.schema import BudgetConfig, EngineConfig, existing_path, probability, positive


@dataclass
class ModelUserDataConfig:
    """Keys that replace those of ``model`` for a user's images."""
    name: Literal["dcl_resnet18", "dcl_encoder", "dcl_small_cnn"]
    kwargs: dict[str, Any]


@dataclass
class ModelConfig:
    name: Literal["dcl_resnet18", "dcl_encoder", "dcl_small_cnn"]
    kwargs: dict[str, Any]                # the factory's keyword arguments (models/dcl.py)
    user_data: ModelUserDataConfig


@dataclass
class PartialUserDataConfig:
    """Keys that replace those of ``partial`` for a user's images."""
    train_stages: int
    views: int = positive()


@dataclass
class PartialConfig:
    train_stages: int                     # the encoder's last stages trained on cached maps
    views: int = positive()               # cached augmented views of each training image
    user_data: PartialUserDataConfig


@dataclass
class LossConfig:
    loss: Literal["simclr", "dcl", "dclw"]
    temperature: float
    sigma: float
    gather_distributed: bool


@dataclass
class UserDataConfig:
    """Keys that replace those of ``data`` for a user's image folder."""
    image_size: int = positive()


@dataclass
class DataConfig:
    root: str | None = existing_path()
    format: Literal["auto", "idx", "image_folder", "unlabeled"]
    train_subset: int | None = positive()
    subset_seed: int
    image_size: int = positive()
    channels: Literal[1, 3] | None
    mean: list[float] | None
    std: list[float] | None
    test_fraction: float = probability()
    split_seed: int
    user_data: UserDataConfig


@dataclass
class AugUserDataConfig:
    """Keys that replace those of ``aug`` for a user's colour images."""
    channel_shuffle_p: float = probability()
    gray_p: float = probability()


@dataclass
class AugConfig:
    crop_scale: tuple[float, float]
    crop_ratio: tuple[float, float]
    flip_p: float = probability()
    brightness: float
    contrast: float
    jitter_p: float = probability()
    channel_shuffle_p: float = probability()
    gray_p: float = probability()
    user_data: AugUserDataConfig


@dataclass
class EvalConfig:
    k: int = positive()
    temperature: float
    gallery_size: int = positive()
    test_size: int = positive()
    batch_size: int = positive()
    random_init_reference: bool


@dataclass
class DCLConfig(EngineConfig):
    model: ModelConfig
    partial: PartialConfig
    dcl: LossConfig
    data: DataConfig
    aug: AugConfig
    eval: EvalConfig
    budget: BudgetConfig


EMBED_IO = ExportIO(inputs=("image",), outputs=("embedding",),
                    dynamic_axes={"image": {0: "batch"}, "embedding": {0: "batch"}})


def variant_of(extra: dict[str, Any]) -> str:
    return "encoder"


DESCRIPTOR = MethodDescriptor(
    name="dcl", title="Decoupled contrastive learning", chapter="3",
    description="decoupled contrastive learning pre-training (Chapter 3)",
    schema=DCLConfig, config_file="dcl.yaml",
    plugin="training.methods.dcl:build",
    variants={"encoder": Variant("encoder", (), EMBED_IO, "export.methods.dcl.views:embed_view",
                                 "the encoder's l2-normalised embedding (any backbone)",
                                 domain=("embedding",), headline="knn_top1",
                                 evaluate="export.methods.dcl.evaluation:knn_top1",
                                 assets="export.methods.dcl.assets:stage_gallery")},
    variant_of=variant_of,
    tab="app.tabs.retrieval",
    limits="self-supervised on Fashion-MNIST (28 x 28 grayscale), short CPU budget; "
           "retrieval quality on other image domains is untested.",
    default_runs=(BuildRun("dcl", seconds=382),),
    smoke=("data.train_subset=256", "eval.gallery_size=256", "eval.test_size=256",
           "eval.random_init_reference=false", "train.batch_size=32"),
    docs="docs/dcl.md",
    post_export=("export.methods.dcl.assets:post_export",),
)
