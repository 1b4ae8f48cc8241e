"""ABC-Norm method plug-in: long-tailed classification (thesis Chapter 4; docs/abcnorm.md).

Data (section ``data``):
- default: long-tailed Fashion-MNIST (imbalance ratio ``data.imbalance_ratio``, class order
  ``data.class_order`` = label | permutation), evaluated on the full balanced test set;
- ``data.root`` / ``--data DIR``: CIFAR-10/100 (python-pickle layout, optionally made
  long-tailed), an ImageFolder tree (train/ + val/ or test/) or iNaturalist-style list files,
  with an optional class-count file (see :mod:`training.data.folders`).

Loss (section ``loss``, ``loss.name``): abcnorm | ce | pc | maxent | la | ldam (LDAM with
deferred re-weighting from epoch ``loss.drw_start_epoch``).

Stage (section ``stage``): ``joint`` (end-to-end, instance-balanced sampling) or ``crt``
(classifier re-training: load ``stage.init_checkpoint``, freeze the backbone, re-initialise
the linear head and train it with class-balanced sampling).

Train batches are float images in [0, 1]; augmentation (random crop with zero padding,
horizontal flip) happens in :meth:`loss`, then :func:`runtime.preprocess.normalize`.
Evaluation inputs go through :func:`runtime.preprocess.to_input`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import Dataset

from runtime.preprocess import FASHION_MNIST, PreprocessSpec, normalize, to_array, to_input
from training.data.fashion_mnist import ArrayDataset, load_fashion_mnist
from training.data.folders import FileDataset, find_cifar, load_cifar, load_folder_splits
from training.data.longtail import (class_balanced_indices, class_groups,
                                    derived_group_thresholds, make_longtail)
from training.losses.abcnorm import ABCNormLoss
from training.losses.longtail_baselines import (CrossEntropyLoss, LDAMLoss, LogitAdjustedLoss,
                                                MaxEntLoss, PairwiseConfusionLoss,
                                                drw_class_weights)
from training.methods.base import Method
from training.metrics.longtail import confusion_matrix, longtail_accuracy
from training.imagenet import BUNDLED
from training.verdict import Chance, majority_share

LOSSES = ("abcnorm", "ce", "pc", "maxent", "la", "ldam")
CIFAR_SPEC = PreprocessSpec(size=(32, 32), channels=3, mean=(0.4914, 0.4822, 0.4465),
                            std=(0.2470, 0.2435, 0.2616))


def build_loss(cfg: dict[str, Any], class_counts: Sequence[int]) -> nn.Module:
    """The loss named by ``cfg["name"]`` (one of :data:`LOSSES`), with its parameters."""
    name = str(cfg["name"]).lower()
    if name == "abcnorm":
        return ABCNormLoss(class_counts, lam=float(cfg["lam"]),
                           tau=float(cfg["tau"]))
    if name == "ce":
        return CrossEntropyLoss()
    if name == "pc":
        return PairwiseConfusionLoss(lam=float(cfg["pc_lam"]),
                                     pairs=str(cfg["pc_pairs"]))
    if name == "maxent":
        return MaxEntLoss(gamma=float(cfg["maxent_gamma"]))
    if name == "la":
        return LogitAdjustedLoss(class_counts, tau=float(cfg["la_tau"]))
    if name == "ldam":
        return LDAMLoss(class_counts, max_margin=float(cfg["ldam_max_m"]),
                        s=float(cfg["ldam_s"]))
    raise ValueError(f"unknown loss {name!r}; choose from {', '.join(LOSSES)}")


class ImageArrayDataset(Dataset):
    """In-memory images prepared with :func:`runtime.preprocess.to_array` (not normalised).

    Items: (float32 tensor (C, H, W) in [0, 1], int label).
    """

    def __init__(self, data: ArrayDataset, spec: PreprocessSpec) -> None:
        self.x = torch.from_numpy(np.stack([to_array(im, spec) for im in data.images]))
        self.labels = np.asarray(data.labels, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.x[i], int(self.labels[i])


class ImageFileDataset(Dataset):
    """Image files decoded on access, prepared with :func:`runtime.preprocess.to_array`."""

    def __init__(self, data: FileDataset, spec: PreprocessSpec) -> None:
        self.data, self.spec = data, spec
        self.labels = np.asarray(data.labels, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return torch.from_numpy(to_array(self.data.load(i), self.spec)), int(self.labels[i])


class ResampledDataset(Dataset):
    """A fixed re-indexing of a data set (class-balanced sampling for cRT)."""

    def __init__(self, base: Dataset, indices: np.ndarray) -> None:
        self.base, self.indices = base, np.asarray(indices, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Any:
        return self.base[int(self.indices[i])]


def augment(x: torch.Tensor, pad: int, hflip: bool) -> torch.Tensor:
    """Random crop with zero padding and random horizontal flip, per image.

    Args:
        x: images in [0, 1]. Shape: (B, C, H, W).
    Returns:
        Same shape. Uses torch's global RNG (captured by the engine's checkpoints).
    """
    b, _, h, w = x.shape
    if pad > 0:
        padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
        dy = torch.randint(0, 2 * pad + 1, (b,)).tolist()
        dx = torch.randint(0, 2 * pad + 1, (b,)).tolist()
        x = torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(b)])
    if hflip:
        flip = torch.rand(b) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
    return x


class ABCNormMethod(Method):
    """Long-tailed classification with ABC-Norm or a baseline loss (see module docstring)."""

    name = "abcnorm"

    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__(cfg)
        self.data_cfg: dict[str, Any] = cfg["data"]
        self.model_cfg: dict[str, Any] = cfg["model"]
        self.loss_cfg: dict[str, Any] = cfg["loss"]
        self.stage_cfg: dict[str, Any] = cfg["stage"]
        self.seed = cfg["run"]["seed"]
        self.stage = str(self.stage_cfg["name"])
        if self.stage not in ("joint", "crt"):
            raise ValueError(f"stage.name must be 'joint' or 'crt', got {self.stage!r}")
        self.last_eval: dict[str, Any] = {}
        self._load_data()
        self.loss_name = str(self.loss_cfg["name"]).lower()
        self.criterion = build_loss(self.loss_cfg, self.class_counts)

    # --- data ------------------------------------------------------------------------
    def _spec(self, default: PreprocessSpec) -> PreprocessSpec:
        d = self.data_cfg
        return PreprocessSpec(
            size=tuple(int(s) for s in d["size"] or default.size),  # type: ignore[arg-type]
            channels=int(d["channels"] or default.channels),
            mean=tuple(float(m) for m in d["mean"] or default.mean),
            std=tuple(float(s) for s in d["std"] or default.std))

    def _longtail(self, train: ArrayDataset) -> ArrayDataset:
        d = self.data_cfg
        ratio = float(d["imbalance_ratio"] or 1)
        split = make_longtail(train.labels, ratio=ratio, order=str(d["class_order"]),
                              order_seed=int(d["order_seed"]),
                              seed=int(d["split_seed"]),
                              n_max=d["n_max"], num_classes=len(train.class_names))
        self.split_info = {k: v for k, v in split.to_dict().items() if k != "indices"}
        unused = np.setdiff1d(np.arange(len(train)), split.indices)
        self._unused = train.subset(unused)   # training-split images the long tail left out
        return train.subset(split.indices)

    def _load_data(self) -> None:
        d = self.data_cfg
        root = d["root"]
        self.split_info: dict[str, Any] = {}
        self.counts_source = "counted"
        self.real_data = bool(root)
        self.folder_data = False  # an ImageFolder / list files (a user's images)
        if not root:
            self.spec = self._spec(FASHION_MNIST)
            train = self._longtail(load_fashion_mnist("train", d["fashion_mnist_dir"]))
            test = load_fashion_mnist("test", d["fashion_mnist_dir"])
            self.dataset_name = f"Fashion-MNIST-LT (ratio {self.split_info['ratio']:g}, " \
                                f"class order {d['class_order']})"
            self._set_arrays(train, test)
            return
        try:
            find_cifar(root)
            is_cifar = True
        except FileNotFoundError:
            is_cifar = False
        if is_cifar:
            self.spec = self._spec(CIFAR_SPEC)
            train = load_cifar(root, "train", str(d["cifar_labels"]))
            if float(d["imbalance_ratio"] or 1) > 1:
                train = self._longtail(train)
            self.dataset_name = f"CIFAR ({root})"
            self._set_arrays(train, load_cifar(root, "test", str(d["cifar_labels"])))
            return
        self.spec = self._spec(PreprocessSpec(size=tuple(d["folder_size"]), channels=3,
                                              mean=(0.485, 0.456, 0.406),
                                              std=(0.229, 0.224, 0.225)))
        splits = load_folder_splits(root)
        self.folder_data = True
        self.class_names = tuple(splits.train.class_names)
        self.class_counts = splits.class_counts
        self.counts_source = splits.counts_source
        self.train_labels = np.asarray(splits.train.labels)
        self._train = ImageFileDataset(splits.train, self.spec)
        self._domain_images: Any = list(splits.train.paths)
        self._eval_files = splits.eval
        self._val_files = splits.val  # val/ beside test/: the temperature's images
        self._eval_x: np.ndarray | None = None
        self.eval_labels = np.asarray(splits.eval.labels)
        self.dataset_name = f"image folder ({Path(root).name})"
        self._set_groups()

    def _set_arrays(self, train: ArrayDataset, test: ArrayDataset) -> None:
        self.class_names = tuple(train.class_names)
        self.class_counts = np.bincount(train.labels, minlength=len(self.class_names)).tolist()
        if min(self.class_counts) <= 0:
            raise ValueError("every class needs at least one training image")
        self.train_labels = np.asarray(train.labels)
        self._train = ImageArrayDataset(train, self.spec)
        self._domain_images = train.images
        limit = self.data_cfg["eval_limit"]  # first N test images (quick checks only)
        self._eval_images = test.images[:limit] if limit else test.images
        self._eval_x = None  # normalised with to_input on first evaluation
        self.eval_labels = np.asarray(test.labels[:limit] if limit else test.labels)
        self._set_groups()

    def _set_groups(self) -> None:
        many, few = self.data_cfg["many_above"], self.data_cfg["few_below"]
        if (many is None) != (few is None):
            raise ValueError("data.many_above and data.few_below: set both, or neither (null: "
                             "derived from the training counts)")
        if many is None:
            self.group_thresholds = derived_group_thresholds(self.class_counts)
            self.group_rule = ("derived from the training counts: classes ranked by count, "
                               "the first third 'many', the last third 'few'")
        else:
            self.group_thresholds = {"many_above": int(many), "few_below": int(few)}
            self.group_rule = "set in the config (data.many_above / data.few_below)"
        self.groups = class_groups(self.class_counts, **self.group_thresholds)

    def domain_images(self, split: str = "train") -> tuple[Any, np.ndarray | None]:
        """The (long-tailed) training images, the validation images (Fashion-MNIST: the
        training-split images the long-tailed subset left out), or the evaluation images,
        and their classes."""
        if split == "train":
            return self._domain_images, self.train_labels
        if split == "val":  # never the evaluation images: those measure the calibration
            if getattr(self, "_unused", None) is not None and len(self._unused):
                return self._unused.images, self._unused.labels
            if getattr(self, "_val_files", None) is not None:
                return list(self._val_files.paths), np.asarray(self._val_files.labels)
            return [], None
        if getattr(self, "_eval_files", None) is not None:
            return list(self._eval_files.paths), self.eval_labels
        return self._eval_images, self.eval_labels

    def train_dataset(self) -> Dataset:
        if self.stage == "crt":
            n = int(self.stage_cfg["samples_per_epoch"] or len(self._train))
            idx = class_balanced_indices(self.train_labels, n,
                                         seed=self.seed if self.stage_cfg["sampling_seed"] is None
                                         else self.stage_cfg["sampling_seed"])
            return ResampledDataset(self._train, idx)
        return self._train

    # --- model -----------------------------------------------------------------------
    def model_spec(self) -> dict[str, Any]:
        m = self.model_cfg
        if self.real_data and m["real_data"]:  # e.g. mobilenetv2_100 for ImageFolder data
            m = {**m, **m["real_data"]}
        return {"name": "lt_classifier", "kwargs": {
            "backbone": str(m["backbone"]),
            "num_classes": len(self.class_names),
            "in_chans": int(self.spec.channels),
            "stem": str(m["stem"]),
            "stem_stride": int(m["stem_stride"]),
            "backbone_kwargs": dict(m["backbone_kwargs"]),
        }}

    def build_model(self) -> nn.Module:
        model = super().build_model()
        if self.stage == "crt":
            from training.checkpoint import load_checkpoint

            path = self.stage_cfg["init_checkpoint"]
            if not path:
                raise ValueError("stage 'crt' needs stage.init_checkpoint (a stage-1 checkpoint)")
            ckpt = load_checkpoint(path)
            if ckpt.get("model_spec") != self.model_spec():
                raise ValueError(f"{path} holds {ckpt.get('model_spec')}, not {self.model_spec()}")
            model.load_state_dict(ckpt["model"])
            model.reset_head()
            model.freeze_backbone()
        return model

    # --- optimisation ----------------------------------------------------------------
    def on_epoch_start(self, model: nn.Module, epoch: int) -> None:
        """LDAM's deferred re-weighting: class-balanced CE weights from ``drw_start_epoch``."""
        if isinstance(self.criterion, LDAMLoss):
            start = self.loss_cfg["drw_start_epoch"]
            on = start is not None and int(start) >= 0 and epoch >= int(start)
            self.criterion.set_class_weights(
                drw_class_weights(self.class_counts, float(self.loss_cfg["drw_beta"]))
                if on else None)

    def loss(self, model: nn.Module, batch: Any, device: torch.device
             ) -> tuple[torch.Tensor, dict[str, float]]:
        x, y = batch
        aug = self.data_cfg["augment"]
        x = augment(x, pad=int(aug["crop_pad"]), hflip=bool(aug["hflip"]))
        x = torch.from_numpy(normalize(x.numpy(), self.spec)).to(device)
        y = y.to(device)
        self.criterion.to(device)
        logits = model(x)
        loss = self.criterion(logits, y)
        acc = (logits.argmax(1) == y).float().mean().item()
        return loss, {"train_acc": acc}

    # --- evaluation ------------------------------------------------------------------
    def _eval_batches(self, batch_size: int) -> Any:
        n = len(self.eval_labels)
        for s in range(0, n, batch_size):
            if hasattr(self, "_eval_images"):
                if self._eval_x is None:
                    self._eval_x = to_input(list(self._eval_images), self.spec)
                yield self._eval_x[s:s + batch_size]
            else:
                ims = [self._eval_files.load(i) for i in range(s, min(n, s + batch_size))]
                yield to_input(ims, self.spec)

    @torch.no_grad()
    def predict_eval(self, model: nn.Module, device: torch.device,
                     batch_size: int = 500) -> np.ndarray:
        """Logits on the evaluation split. Shape: (N, C)."""
        was_training = model.training
        model.eval()
        out = [model(torch.from_numpy(xb).to(device)).float().cpu()
               for xb in self._eval_batches(batch_size)]
        model.train(was_training)
        return torch.cat(out).numpy()

    def evaluate(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        logits = self.predict_eval(model, device, int(self.data_cfg["eval_batch_size"]))
        preds = logits.argmax(1)
        metrics = longtail_accuracy(self.eval_labels, preds, self.groups)
        cm = confusion_matrix(self.eval_labels, preds, len(self.class_names))
        self.last_eval = {"preds": preds, "targets": self.eval_labels, "confusion": cm}
        return {k: v for k, v in metrics.items() if v == v}  # drop NaN (empty groups)

    def user_folder(self) -> bool:
        return self.folder_data

    def default_pretrained(self) -> str | None:
        """A user's folder (ImageFolder / list files, not CIFAR) with a backbone whose
        ImageNet weights ship (:mod:`training.imagenet`): "imagenet"; else random init."""
        backbone = self.model_spec()["kwargs"]["backbone"]
        return "imagenet" if self.folder_data and backbone in BUNDLED else None

    def chance(self) -> Chance:
        """top-1 against always answering the largest test class (1/C when balanced)."""
        return Chance("top1", majority_share(self.eval_labels.tolist()),
                      len(self.eval_labels), "test images")

    def extra_state(self) -> dict[str, Any]:
        return {
            "preprocess": self.spec.to_dict(),
            "labels": list(self.class_names),
            "class_counts": [int(c) for c in self.class_counts],
            "class_counts_source": self.counts_source,
            "groups": list(self.groups),
            "group_thresholds": dict(self.group_thresholds),
            "group_rule": self.group_rule,
            "loss": self.loss_name,
            "loss_config": {k: v for k, v in self.loss_cfg.items()
                            if isinstance(v, (int, float, str, bool)) or v is None},
            "stage": self.stage,
            "dataset": self.dataset_name,
            "longtail_split": self.split_info,
            "outputs": {"logits": "(B, C)", "features": "(B, Cf, h, w) last feature map"},
        }


def build(cfg: dict[str, Any]) -> ABCNormMethod:
    return ABCNormMethod(cfg)
