"""DCL plug-in: SimCLR-style two-view pre-training with NT-Xent, DCL or DCLW (Chapter 3).

Data: Fashion-MNIST train (uint8 28x28), two views per image from
:mod:`training.data.ssl_aug`, normalised by the shared :func:`runtime.preprocess.normalize`.
Monitor: weighted kNN (k=200, T=0.1) of test images against a fixed train subset, on the
l2-normalised backbone features (``model.embed``). Optionally the same kNN for a
random-init encoder of the same architecture, as a reference.

Config sections: ``model`` (registered name + kwargs), ``dcl`` (loss, temperature, sigma,
gather_distributed), ``data`` (root, train_subset), ``aug`` (:class:`AugConfig` fields),
``eval`` (k, temperature, gallery_size, test_size, batch_size, random_init_reference).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import TensorDataset

from runtime.preprocess import FASHION_MNIST, PreprocessSpec
from training.data.fashion_mnist import ArrayDataset, load_fashion_mnist
from training.data.ssl_aug import AugConfig, two_views
from training.losses.dcl import build_loss
from training.methods.base import Method
from training.metrics.embed import embed_tensor, prepare
from training.metrics.knn import knn_accuracy


class DCLMethod(Method):
    """Contrastive pre-training; ``dcl.loss`` picks ``simclr`` | ``dcl`` | ``dclw``."""

    name = "dcl"

    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__(cfg)
        self.dcl_cfg = dict(cfg["dcl"])
        self.data_cfg = dict(cfg["data"])
        self.eval_cfg = dict(cfg["eval"])
        model = cfg["model"]
        self._model_spec = {"name": str(model["name"]), "kwargs": dict(model["kwargs"])}
        self.loss_name = str(self.dcl_cfg["loss"]).lower()
        self.criterion = build_loss(self.loss_name,
                                    temperature=float(self.dcl_cfg["temperature"]),
                                    sigma=float(self.dcl_cfg["sigma"]),
                                    gather_distributed=bool(self.dcl_cfg["gather_distributed"]))
        self.aug = AugConfig.from_dict(cfg["aug"])
        size = int(self.data_cfg["image_size"])
        self.spec = PreprocessSpec(size=(size, size), channels=1, mean=FASHION_MNIST.mean,
                                   std=FASHION_MNIST.std)
        self._train: ArrayDataset | None = None
        self._eval_cache: dict[str, torch.Tensor] | None = None
        self._random_ref: float | None = None
        self._embedding_dim: int | None = None

    # --- model -------------------------------------------------------------------------
    def model_spec(self) -> dict[str, Any]:
        return {"name": self._model_spec["name"], "kwargs": dict(self._model_spec["kwargs"])}

    # --- data --------------------------------------------------------------------------
    def _train_data(self) -> ArrayDataset:
        if self._train is None:
            ds = load_fashion_mnist("train", root=self.data_cfg["root"])
            n = self.data_cfg["train_subset"]
            if n:
                idx = np.random.default_rng(int(self.data_cfg["subset_seed"])).permutation(
                    len(ds))[: int(n)]
                ds = ds.subset(np.sort(idx))
            self._train = ds
        return self._train

    def domain_images(self, split: str = "train") -> tuple[Any, np.ndarray | None]:
        """The pre-training images (or the test split); their classes."""
        ds = self._train_data() if split == "train" else load_fashion_mnist(
            "test", root=self.data_cfg["root"])
        return ds.images, ds.labels

    def train_dataset(self) -> TensorDataset:
        """uint8 images (N, 28, 28); labels are not used in pre-training."""
        return TensorDataset(torch.from_numpy(self._train_data().images))

    # --- optimisation ------------------------------------------------------------------
    def loss(self, model: nn.Module, batch: Any, device: torch.device
             ) -> tuple[torch.Tensor, dict[str, float]]:
        images = batch[0] if isinstance(batch, (list, tuple)) else batch
        v1, v2 = two_views(images, self.spec, self.aug)
        out = model(torch.cat([v1, v2]).to(device, non_blocking=True))  # one pass, 2B views
        p1, p2 = out["projection"].chunk(2)
        loss = self.criterion(p1, p2)
        with torch.no_grad():
            pos = torch.nn.functional.cosine_similarity(p1, p2, dim=1).mean().item()
        return loss, {"pos_cos": pos}

    # --- evaluation --------------------------------------------------------------------
    def _eval_tensors(self) -> dict[str, torch.Tensor]:
        """Prepared gallery (a fixed train subset) and test inputs, built once."""
        if self._eval_cache is None:
            train = load_fashion_mnist("train", root=self.data_cfg["root"])
            test = load_fashion_mnist("test", root=self.data_cfg["root"])
            g_n = min(int(self.eval_cfg["gallery_size"]), len(train))
            t_n = min(int(self.eval_cfg["test_size"]), len(test))
            g_idx = np.sort(np.random.default_rng(12345).permutation(len(train))[:g_n])
            t_idx = np.sort(np.random.default_rng(54321).permutation(len(test))[:t_n])
            self._eval_cache = {
                "gallery_x": prepare(train.images[g_idx], self.spec),
                "gallery_y": torch.from_numpy(train.labels[g_idx]),
                "test_x": prepare(test.images[t_idx], self.spec),
                "test_y": torch.from_numpy(test.labels[t_idx]),
            }
        return self._eval_cache

    def knn_top1(self, model: nn.Module, device: torch.device) -> float:
        """Weighted kNN top-1 of the test subset against the gallery subset, in [0, 1]."""
        d = self._eval_tensors()
        bs = int(self.eval_cfg["batch_size"])
        gal = embed_tensor(model, d["gallery_x"], device, bs)
        qry = embed_tensor(model, d["test_x"], device, bs)
        return knn_accuracy(qry, d["test_y"], gal, d["gallery_y"], num_classes=10,
                            k=int(self.eval_cfg["k"]),
                            temperature=float(self.eval_cfg["temperature"]))

    def random_init_knn_top1(self, device: torch.device, seed: int = 0) -> float:
        """kNN top-1 of an untrained encoder of the same architecture (RNG state untouched)."""
        if self._random_ref is None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                ref = self.build_model().to(device)
            self._random_ref = self.knn_top1(ref, device)
        return self._random_ref

    def evaluate(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        metrics = {"knn_top1": self.knn_top1(model, device)}
        if self.eval_cfg["random_init_reference"]:
            metrics["knn_top1_random_init"] = self.random_init_knn_top1(device)
        return metrics

    def extra_state(self) -> dict[str, Any]:
        """What export and serving need besides the weights.

        ``preprocess`` (PreprocessSpec dict), ``labels`` (class names by id), ``loss``
        (simclr | dcl | dclw), ``embedding_dim`` (size of ``embed``'s output), ``embed_method``
        (the method to export for retrieval), ``temperature``/``sigma``, ``knn`` settings.
        """
        if self._embedding_dim is None:
            with torch.random.fork_rng(devices=[]):
                self._embedding_dim = int(self.build_model().feature_dim)
        dim = self._embedding_dim
        return {
            "preprocess": self.spec.to_dict(),
            "labels": _class_names(),
            "dataset": "Fashion-MNIST (train split), 28 x 28 grayscale",
            "loss": self.loss_name,
            "embedding_dim": dim,
            "embed_method": "embed",
            "temperature": float(self.criterion.temperature),
            "sigma": float(getattr(self.criterion, "sigma", self.dcl_cfg["sigma"])),
            "knn": {"k": int(self.eval_cfg["k"]),
                    "temperature": float(self.eval_cfg["temperature"])},
            "training_data": "Fashion-MNIST train (60k, labels unused)"
            if not self.data_cfg["train_subset"]
            else f"Fashion-MNIST train subset of {int(self.data_cfg['train_subset'])} (labels unused)",
        }


def _class_names() -> list[str]:
    from training.data.fashion_mnist import CLASS_NAMES

    return list(CLASS_NAMES)


def build(cfg: dict[str, Any]) -> DCLMethod:
    return DCLMethod(cfg)
