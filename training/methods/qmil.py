"""qMIL on Fashion-MNIST (or digit) bags (SPEC.md section 1), and the gated-attention MIL baseline.

Config sections (``training/configs/qmil.yaml``):
    data:  dataset (fashion_mnist | digits), root, unseen_classes (held out of training
           queries and training bags),
           train_queries (null = every seen class; one class for the gated baseline),
           bags_per_query, pos_fraction, size_mean/size_std/min_size/max_size, seed,
           eval_bags_per_query, eval_seed.
    model: name (qmil_lenet | qmil_timm | gated_mil_lenet) and its keyword arguments.
    loss:  lam (lambda of eq. 2.4; qMIL only, the baseline uses plain BCE).
    eval:  batch_size, strong_rel (iterative zero-shot queries).

Training bags are drawn from the train split with instances of the seen classes only; the
bags of each training query are the same whatever ``train_queries`` is (the full set is
sampled, then filtered), so the per-class baselines train on exactly qMIL's bags.
Evaluation bags come from the test split with a fixed seed.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn

from runtime.preprocess import FASHION_MNIST
from models.words import PACKAGE as WORD_PACKAGE
from models.words import get_word_vectors
from training.data.bags import PAD, BagDataset, BagSet, sample_bags, trim_collate
from training.data.fashion_mnist import ArrayDataset, load_fashion_mnist
from training.losses.qmil import qmil_loss
from training.methods.base import Method
from training.metrics.qmil import (attention_accuracy, attention_chance, bag_accuracy,
                                   per_query)
from training.zeroshot import predict_bags


def _key(name: str) -> str:
    return name.replace(" ", "_").replace("-", "_")


class QMILMethod(Method):
    """qMIL (or, with ``model.name: gated_mil_lenet``, the one-class gated-attention baseline)."""

    name = "qmil"

    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__(cfg)
        self.data_cfg, self.model_cfg = cfg["data"], cfg["model"]
        self.loss_cfg, self.eval_cfg = cfg["loss"], cfg["eval"]
        self._train: ArrayDataset | None = None
        self._test: ArrayDataset | None = None
        self.dataset = str(self.data_cfg["dataset"])
        self.class_names: list[str] = list(load_class_names(self.dataset))
        self.unseen = [self._class_id(c) for c in self.data_cfg["unseen_classes"] or []]
        self.seen = [i for i in range(len(self.class_names)) if i not in self.unseen]
        tq = self.data_cfg["train_queries"]
        self.train_queries = self.seen if not tq else [self._class_id(c) for c in tq]
        if any(q in self.unseen for q in self.train_queries):
            raise ValueError("train_queries may not contain unseen classes")
        self.gated = str(self.model_cfg["name"]).startswith("gated")
        if self.gated and len(self.train_queries) != 1:
            raise ValueError("the gated-attention baseline is one binary model per class: set "
                             "data.train_queries to one class name")
        wv = get_word_vectors()
        self.word_dim = wv.dim
        self.query_vectors = torch.from_numpy(wv.lookup_many(self.class_names))  # (C, D)
        self._eval_bags: dict[str, BagSet] = {}

    # --- helpers ---------------------------------------------------------------------
    def _class_id(self, c: str | int) -> int:
        if isinstance(c, int):
            if not 0 <= c < len(self.class_names):
                raise ValueError(f"class id {c} out of range")
            return c
        if c not in self.class_names:
            raise ValueError(f"unknown class {c!r}; classes: {', '.join(self.class_names)}")
        return self.class_names.index(c)

    def split(self, name: str) -> ArrayDataset:
        """The data set's split ("train" or "test"), loaded once."""
        attr = "_train" if name == "train" else "_test"
        if getattr(self, attr) is None:
            if self.dataset == "digits":
                from training.data.digits import load_digits

                setattr(self, attr, load_digits(name))
            else:
                setattr(self, attr, load_fashion_mnist(name, root=self.data_cfg["root"]))
        return getattr(self, attr)

    def _bag_kwargs(self) -> dict[str, Any]:
        d = self.data_cfg
        return {"size_mean": float(d["size_mean"]),
                "size_std": float(d["size_std"]),
                "min_size": int(d["min_size"]), "max_size": int(d["max_size"])}

    def train_bags(self) -> BagSet:
        """Training bags: every seen query's bags, filtered to ``train_queries``."""
        d = self.data_cfg
        bags = sample_bags(self.split("train").labels, self.seen,
                           int(d["bags_per_query"]), instance_classes=self.seen,
                           pos_fraction=float(d["pos_fraction"]),
                           seed=int(d["seed"]), **self._bag_kwargs())
        return bags.subset(np.flatnonzero(np.isin(bags.query, self.train_queries)))

    def eval_bags(self, kind: str = "seen") -> BagSet:
        """Balanced test-split bags. kind: "seen" (seen queries, seen-class instances),
        "zs_all" (unseen queries, instances of all classes), "zs_unseen" (unseen queries,
        unseen-class instances only)."""
        if kind not in self._eval_bags:
            d = self.data_cfg
            n = int(d["eval_bags_per_query"])
            seed = int(d["eval_seed"])
            labels = self.split("test").labels
            if kind == "seen":
                bags = sample_bags(labels, self.seen, n, instance_classes=self.seen,
                                   seed=seed, **self._bag_kwargs())
                bags = bags.subset(np.flatnonzero(np.isin(bags.query, self.train_queries)))
            elif kind == "zs_all":
                bags = sample_bags(labels, self.unseen, n, instance_classes=None,
                                   seed=seed + 1, **self._bag_kwargs())
            elif kind == "zs_unseen":
                bags = sample_bags(labels, self.unseen, n, instance_classes=self.unseen,
                                   seed=seed + 2, **self._bag_kwargs())
            else:
                raise ValueError(f"unknown eval bag kind {kind!r}")
            self._eval_bags[kind] = bags
        return self._eval_bags[kind]

    # --- domain check and calibration (export) -----------------------------------------
    def _unused_train(self) -> np.ndarray:
        """Indices of the seen-class training images that no training bag contains (int64):
        training-split images the model never saw, for validation bags."""
        used = np.unique(self.train_bags().indices)
        labels = self.split("train").labels
        keep = np.isin(labels, self.seen)
        keep[used[used != PAD]] = False
        return np.flatnonzero(keep)

    def domain_images(self, split: str = "train") -> tuple[Any, np.ndarray | None]:
        """Instances (uint8 (N, 28, 28)) and their classes: "train" the seen-class training
        images (what the bags are made of; the domain check is fitted on them), "val" those
        of them no training bag contains, "test" the test split's seen-class images."""
        if split == "val":
            idx = self._unused_train()
            data = self.split("train")
            return data.images[idx], data.labels[idx]
        data = self.split("train" if split == "train" else "test")
        keep = np.flatnonzero(np.isin(data.labels, self.seen))
        return data.images[keep], data.labels[keep]

    def calibration_items(self, split: str) -> tuple[list[dict[str, Any]], np.ndarray | None]:
        """Bags and their 0/1 labels for the bag temperature: "val" balanced bags of the
        training queries drawn only from training images no training bag contains (never
        the test bags, which measure the calibration), "test" the evaluation bags of
        :meth:`evaluate` (seen queries)."""
        if self.gated:
            return [], None
        if split == "val":
            pool = self._unused_train()
            if len(pool) < 2 * int(self.data_cfg["max_size"]):
                return [], None
            images = self.split("train").images[pool]
            labels = self.split("train").labels[pool]
            present = [q for q in self.train_queries if np.any(labels == q)]
            bags = sample_bags(labels, present, int(self.data_cfg["eval_bags_per_query"]),
                               instance_classes=self.seen, seed=int(self.data_cfg["eval_seed"]) + 7,
                               **self._bag_kwargs())
        else:
            bags, images = self.eval_bags("seen"), self.split("test").images
        q = self.query_vectors.numpy()
        items = [{"images": images[row[m]], "query": q[qi]}
                 for row, m, qi in zip(bags.indices, bags.mask, bags.query)]
        return items, bags.label.astype(np.int64)

    # --- model -----------------------------------------------------------------------
    def model_spec(self) -> dict[str, Any]:
        kw = {k: v for k, v in self.model_cfg.items() if k != "name"}
        if self.gated:
            kw = {k: kw[k] for k in ("encoder", "feat_dim", "attn_dim") if k in kw}
        else:
            kw["word_dim"] = self.word_dim
        return {"name": str(self.model_cfg["name"]), "kwargs": kw}

    def build_model(self) -> nn.Module:
        # importing the two model modules registers their names, so create_model does not
        # import every other model module (timm alone takes seconds)
        import models.gated_mil  # noqa: F401
        import models.qmil  # noqa: F401

        return super().build_model()

    # --- data ------------------------------------------------------------------------
    def train_dataset(self) -> BagDataset:
        return BagDataset(self.train_bags(), self.split("train").images, FASHION_MNIST)

    def collate_fn(self) -> Callable:
        return trim_collate

    # --- optimisation ----------------------------------------------------------------
    def forward(self, model: nn.Module, images: torch.Tensor, mask: torch.Tensor,
                query: torch.Tensor, device: torch.device) -> dict[str, torch.Tensor]:
        if self.gated:
            return model(images, mask)
        return model(images, mask, self.query_vectors.to(device)[query])

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor], device: torch.device
             ) -> tuple[torch.Tensor, dict[str, float]]:
        images, mask = batch["images"].to(device), batch["mask"].to(device)
        label = batch["label"].to(device)
        out = self.forward(model, images, mask, batch["query"].to(device), device)
        lam = 0.0 if self.gated else float(self.loss_cfg["lam"])
        loss, logs = qmil_loss(out["logit"], out["alpha"], mask, label, lam)
        logs["acc"] = float(((out["logit"].detach() > 0).float() == label).float().mean())
        return loss, logs

    # --- evaluation ------------------------------------------------------------------
    def predict(self, model: nn.Module, bags: BagSet, device: torch.device,
                iterative: bool = False) -> dict[str, np.ndarray]:
        """prob, beta, keep of ``model`` over test-split ``bags``."""
        return predict_bags(model, bags, self.split("test").images,
                            None if self.gated else self.query_vectors, device,
                            batch_size=int(self.eval_cfg["batch_size"]),
                            seen=self.seen if iterative else None,
                            strong_rel=float(self.eval_cfg["strong_rel"]))

    def evaluate(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        was_training = model.training
        model.eval()
        bags = self.eval_bags("seen")
        pred = self.predict(model, bags, device)
        vals = {"beta": pred["beta"], "instance_labels": bags.instance_labels,
                "query": bags.query, "label": bags.label}
        m: dict[str, float] = {
            "bag_acc": bag_accuracy(pred["prob"], bags.label),
            "att_acc": attention_accuracy(**vals),
            "att_acc_predicted": attention_accuracy(**vals, prob=pred["prob"], over="predicted"),
            "att_chance": attention_chance(bags.instance_labels, bags.mask, bags.query,
                                           bags.label),
        }
        acc_q = per_query({"prob": pred["prob"], "label": bags.label}, bags.query,
                          bag_accuracy, self.train_queries)
        att_q = per_query(vals, bags.query, attention_accuracy, self.train_queries)
        for c in self.train_queries:
            m[f"bag_acc/{_key(self.class_names[c])}"] = acc_q[c]
            m[f"att_acc/{_key(self.class_names[c])}"] = att_q[c]
        if self.unseen and not self.gated:
            zs = self.eval_bags("zs_all")
            m["zs_bag_acc"] = bag_accuracy(self.predict(model, zs, device)["prob"], zs.label)
            m["zs_iq_bag_acc"] = bag_accuracy(
                self.predict(model, zs, device, iterative=True)["prob"], zs.label)
            zu = self.eval_bags("zs_unseen")
            m["zs_unseen_only_bag_acc"] = bag_accuracy(self.predict(model, zu, device)["prob"],
                                                       zu.label)
        model.train(was_training)
        return m

    def extra_state(self) -> dict[str, Any]:
        return {
            "preprocess": FASHION_MNIST.to_dict(),
            "labels": list(self.class_names),
            "dataset": ("scikit-learn's digits" if self.dataset == "digits" else
                        "Fashion-MNIST (train split)") + ", 28 x 28 grayscale; bags of "
                       + ", ".join(self.class_names[i] for i in self.seen),
            "seen_classes": [self.class_names[i] for i in self.seen],
            "unseen_classes": [self.class_names[i] for i in self.unseen],
            "train_queries": [self.class_names[i] for i in self.train_queries],
            "word_vectors": WORD_PACKAGE,
            "word_dim": int(self.word_dim),
            "max_bag": int(self.data_cfg["max_size"]),
            "temperature": 1.0 if self.gated else float(self.model_cfg["temperature"]),
            "query_vectors": {n: [float(v) for v in self.query_vectors[i].tolist()]
                              for i, n in enumerate(self.class_names)},
            "gated": self.gated,
            "classifier_query": None if self.gated else self.model_cfg["classifier_query"],
            "strong_rel": float(self.eval_cfg["strong_rel"]),
        }


DATASETS = ("fashion_mnist", "digits")


def load_class_names(dataset: str = "fashion_mnist") -> tuple[str, ...]:
    """Class names (the query words) of ``dataset``, without loading the images."""
    if dataset == "digits":
        from training.data.digits import CLASS_NAMES as names
    elif dataset == "fashion_mnist":
        from training.data.fashion_mnist import CLASS_NAMES as names
    else:
        raise ValueError(f"data.dataset must be one of {DATASETS}, got {dataset!r}")
    return names


def build(cfg: dict[str, Any]) -> QMILMethod:
    return QMILMethod(cfg)
