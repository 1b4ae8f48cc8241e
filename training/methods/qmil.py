"""qMIL on Fashion-MNIST (or digit) bags (thesis Chapter 2; docs/qmil.md), and the
gated-attention MIL baseline.

Data (``data.root`` / ``--data PATH``, its format by ``data.format``, auto-detected by
:func:`training.data.sources.detect_format`):
    built-in   (root null) ``data.dataset``: Fashion-MNIST or scikit-learn's digits;
    idx        a folder with the Fashion-MNIST IDX files;
    image_folder  ``DIR/<class>/*`` (or train/ val/ test/ trees): bags sampled from it as
               from Fashion-MNIST; the folder names are the query words (underscores and
               hyphens read as spaces; a name with no word vector is an error that lists
               every such name with close known words);
    bag_csv    a bag manifest ``bag_id,path,labels[,split]`` (:mod:`training.data.bag_manifest`):
               its bags as they are, each asked about each of its labels (positive) and as
               many other words (negative); the vocabulary of labels are the query words.
A user's data (image_folder, bag_csv) takes ``data.user_data`` for the keys left at their
YAML defaults (:func:`training.data.sources.with_user_defaults`)
(image size 64, no unseen classes), its channels from the files (1 if every image is
grayscale, else 3) unless ``data.channels`` is set, and ImageNet's mean/std unless
``data.mean``/``data.std`` are.

Config sections (``training/configs/qmil.yaml``):
    data:  dataset (fashion_mnist | digits), root, format, unseen_classes (held out of
           training queries and training bags),
           train_queries (null = every seen class; one class for the gated baseline),
           bags_per_query, pos_fraction, size_mean/size_std/min_size/max_size, seed,
           eval_bags_per_query, eval_seed, image_size, channels, mean, std,
           val_fraction / test_fraction / split_seed (a user's folder or manifest without
           its own splits), user_data.
    model: name (qmil_lenet | qmil_timm | gated_mil_lenet) and its keyword arguments.
    loss:  lam (lambda of eq. 2.4; qMIL only, the baseline uses plain BCE).
    eval:  batch_size, strong_rel (iterative zero-shot queries).

Training bags are drawn from the train split with instances of the seen classes only; the
bags of each training query are the same whatever ``train_queries`` is (the full set is
sampled, then filtered), so the per-class baselines train on exactly qMIL's bags.
Evaluation bags come from the test split with a fixed seed.
"""
from __future__ import annotations

import time
import weakref
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn

from runtime.preprocess import FASHION_MNIST, PreprocessSpec, to_uint8
from runtime.words import KINDS as WORD_PACKAGES
from runtime.words import EmptyQueryError, UnknownWordError, kind_of
from runtime.words import vectors as word_vectors
from training.data.bag_manifest import BagManifest, label_word, read_bag_manifest, split_bags
from training.data.bags import (PAD, BagDataset, BagSet, bag_images, sample_bags,
                                 trim_collate)
from training.data.fashion_mnist import ArrayDataset, load_fashion_mnist
from training.data.folders import ImageFolderSplits, load_image_folder
from training.data.images import data_channels, decode_files, user_spec
from training.data.sources import detect_format, with_user_defaults
from training.losses.qmil import qmil_loss, semantic_consistency
from training.methods.base import Method
from training.metrics.qmil import (attention_accuracy, attention_chance, bag_accuracy,
                                   per_query)
from training.imagenet import BUNDLED
from training.verdict import Chance, majority_share
from training.zeroshot import anchor_words, predict_bags


def _key(name: str) -> str:
    return name.replace(" ", "_").replace("-", "_")


TRAINING_KEYS: tuple[str, ...] = ("freeze_backbone", "train_stages", "cache_views", "view_aug",
                                  "word_vectors")
"""``model`` keys the method reads (how the encoder trains, the query vectors' package); the
rest of the section, without ``user_data``, is the network's keyword arguments."""


class QMILMethod(Method):
    """qMIL (or, with ``model.name: gated_mil_lenet``, the one-class gated-attention baseline)."""

    name = "qmil"

    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__(cfg)
        self.data_cfg, self.model_cfg = dict(cfg["data"]), dict(cfg["model"])
        self.loss_cfg, self.eval_cfg = cfg["loss"], cfg["eval"]
        self._splits: dict[str, ArrayDataset] = {}
        self.dataset = str(self.data_cfg["dataset"])
        self.format = self._data_format()
        if self.user_data:  # a user's folder or manifest: its own defaults (data.user_data,
            self.data_cfg = with_user_defaults("qmil", self.data_cfg)   # model.user_data)
            self.model_cfg = with_user_defaults("qmil", self.model_cfg, section="model")
        self.model_cfg.pop("user_data", None)
        # a run stored without the key trained its whole encoder
        self.freeze_backbone = bool(self.model_cfg.pop("freeze_backbone", False))
        # with a frozen backbone: its last stages that train on the cached maps of the rest
        # (training/partial.py), views of each training image cached, and their augmentation
        self.train_stages = int(self.model_cfg.pop("train_stages", 0) or 0)
        self.cache_views = max(1, int(self.model_cfg.pop("cache_views", 1) or 1))
        self.view_aug = self.model_cfg.pop("view_aug", None)
        self._features: dict[str, torch.Tensor] = {}  # split -> frozen trunk's outputs
        self._train_views: torch.Tensor | None = None  # (V, N, ...): view 0 the images
        self._cuts: Any = weakref.WeakKeyDictionary()  # backbone -> its partial.Split
        self._folder: ImageFolderSplits | None = None
        self._manifest: BagManifest | None = None
        self.class_names: list[str] = list(self._load_class_names())
        self.spec = self._preprocess()
        self.unseen = [self._class_id(c) for c in self.data_cfg["unseen_classes"] or []]
        if self.unseen and self.format == "bag_csv":
            raise ValueError("data.unseen_classes needs instance classes (an image folder); "
                             "a bag manifest has bag labels only: set data.unseen_classes=[]")
        self.seen = [i for i in range(len(self.class_names)) if i not in self.unseen]
        tq = self.data_cfg["train_queries"]
        self.train_queries = self.seen if not tq else [self._class_id(c) for c in tq]
        if any(q in self.unseen for q in self.train_queries):
            raise ValueError("train_queries may not contain unseen classes")
        self.gated = str(self.model_cfg["name"]).startswith("gated")
        if self.gated and len(self.train_queries) != 1:
            raise ValueError("the gated-attention baseline is one binary model per class: set "
                             "data.train_queries to one class name")
        # model.word_vectors: glove | minilm (a run stored without the key used GloVe)
        self.word_kind = kind_of(self.model_cfg.pop("word_vectors", None))
        self.word_dim = word_vectors(self.word_kind).dim
        self.query_vectors = torch.from_numpy(query_vectors(self.class_names, self.format,
                                                            self.word_kind))
        self._anchors: torch.Tensor | None = None
        self._eval_bags: dict[str, BagSet] = {}

    # --- data source -------------------------------------------------------------------
    @property
    def user_data(self) -> bool:
        """True for a user's image folder or bag manifest."""
        return self.format in ("image_folder", "bag_csv")

    def _data_format(self) -> str:
        """"builtin" (root null), or the format of ``data.root``."""
        root, fmt = self.data_cfg["root"], str(self.data_cfg["format"])
        if not root:
            return "builtin"
        return detect_format(root, FORMATS) if fmt == "auto" else fmt

    def _load_class_names(self) -> tuple[str, ...]:
        d = self.data_cfg
        if self.format == "image_folder":
            self._folder = load_image_folder(d["root"], float(d["val_fraction"]),
                                             float(d["test_fraction"]), int(d["split_seed"]))
            words = [label_word(n) for n in self._folder.train.class_names]
            clash = sorted({w for w in words if words.count(w) > 1})
            if clash:
                raise ValueError(f"folder names that read as the same query word: "
                                 f"{', '.join(clash)} (underscores and hyphens read as spaces)")
            return tuple(words)
        if self.format == "bag_csv":
            self._manifest = read_bag_manifest(d["root"])
            if len(self._manifest.words) < 2:
                raise ValueError(f"{d['root']}: a bag manifest needs at least two label words "
                                 f"(found {list(self._manifest.words)})")
            return self._manifest.words
        return load_class_names("fashion_mnist" if self.format == "idx" else self.dataset)

    def _preprocess(self) -> PreprocessSpec:
        d, size = self.data_cfg, int(self.data_cfg["image_size"])
        if not self.user_data:
            mean, std = d["mean"] or FASHION_MNIST.mean, d["std"] or FASHION_MNIST.std
            return PreprocessSpec(size=(size, size), channels=1,
                                  mean=tuple(float(m) for m in mean),
                                  std=tuple(float(s) for s in std))
        paths = self._folder.train.paths if self._folder else self._manifest.paths  # type: ignore[union-attr]
        channels = int(d["channels"] or data_channels(paths))
        return user_spec(size, channels, d["mean"], d["std"])

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
        """The images of split "train", "val" or "test" at the model's size (uint8
        (N, H, W) or (N, H, W, 3)), loaded once. Built-in data has no "val" split (its
        validation images are the training images no bag holds, :meth:`_unused_train`); a
        bag manifest's three splits are one pool that its bags index."""
        if self.format == "bag_csv":
            name = "pool"
        if name not in self._splits:
            if self._folder is not None:
                files = getattr(self._folder, name)
                data = decode_files(files, self.spec, f"{self.data_cfg['root']} ({name})").data
            elif self._manifest is not None:
                data = self._decode_manifest()
            elif self.dataset == "digits" and self.format == "builtin":
                from training.data.digits import load_digits

                data = load_digits(name)
            else:
                data = load_fashion_mnist(name, root=self.data_cfg["root"])
            if not self.user_data and tuple(data.images.shape[1:3]) != tuple(self.spec.size):
                data = ArrayDataset(np.stack([to_uint8(im, self.spec) for im in data.images]),
                                    data.labels, data.class_names)
            self._splits[name] = data
        return self._splits[name]

    def _decode_manifest(self) -> ArrayDataset:
        """The manifest's images; bags lose the images that fail to decode (a bag left
        empty is dropped)."""
        m = self._manifest
        assert m is not None
        from training.data.folders import FileDataset

        files = FileDataset(list(m.paths), np.full(len(m.paths), PAD, np.int64), m.words)
        pool = decode_files(files, self.spec, str(self.data_cfg["root"]))
        if pool.skipped:
            new = {p: i for i, p in enumerate(pool.paths)}
            remap = np.asarray([new.get(p, PAD) for p in m.paths], dtype=np.int64)
            keep = []
            for b in range(len(m)):
                idx = remap[m.members[b]]
                m.members[b] = idx[idx != PAD]
                keep.append(len(m.members[b]) > 0)
            for field_name in ("bag_ids", "members", "labels", "split"):
                setattr(m, field_name, [v for v, k in zip(getattr(m, field_name), keep) if k])
            m.paths = list(pool.paths)
        return pool.data

    def _bag_kwargs(self) -> dict[str, Any]:
        d = self.data_cfg
        return {"size_mean": float(d["size_mean"]),
                "size_std": float(d["size_std"]),
                "min_size": int(d["min_size"]), "max_size": int(d["max_size"])}

    def train_bags(self) -> BagSet:
        """Training bags: every seen query's bags, filtered to ``train_queries``."""
        d = self.data_cfg
        if self.format == "bag_csv":
            return self._manifest_bags("train", int(d["seed"]))
        bags = sample_bags(self.split("train").labels, self.seen,
                           int(d["bags_per_query"]), instance_classes=self.seen,
                           pos_fraction=float(d["pos_fraction"]),
                           seed=int(d["seed"]), **self._bag_kwargs())
        return bags.subset(np.flatnonzero(np.isin(bags.query, self.train_queries)))

    def _present(self, labels: np.ndarray, classes: list[int]) -> list[int]:
        """The classes of ``classes`` with an image in ``labels`` (a user's small test
        split may lack one)."""
        return [c for c in classes if np.any(labels == c)]

    def eval_bags(self, kind: str = "seen") -> BagSet:
        """Balanced test-split bags. kind: "seen" (seen queries, seen-class instances),
        "zs_all" (unseen queries, instances of all classes), "zs_unseen" (unseen queries,
        unseen-class instances only)."""
        if kind not in self._eval_bags:
            d = self.data_cfg
            n = int(d["eval_bags_per_query"])
            seed = int(d["eval_seed"])
            if self.format == "bag_csv":
                if kind != "seen":
                    raise ValueError(f"no {kind!r} bags in a bag manifest (no unseen words)")
                self._eval_bags[kind] = self._manifest_bags("test", seed)
                return self._eval_bags[kind]
            labels = self.split("test").labels
            seen = self._present(labels, self.seen)
            unseen = self._present(labels, self.unseen)
            if kind == "seen":
                bags = sample_bags(labels, seen, n, instance_classes=seen,
                                   seed=seed, **self._bag_kwargs())
                bags = bags.subset(np.flatnonzero(np.isin(bags.query, self.train_queries)))
            elif kind == "zs_all":
                bags = sample_bags(labels, unseen, n, instance_classes=None,
                                   seed=seed + 1, **self._bag_kwargs())
            elif kind == "zs_unseen":
                bags = sample_bags(labels, unseen, n, instance_classes=unseen,
                                   seed=seed + 2, **self._bag_kwargs())
            else:
                raise ValueError(f"unknown eval bag kind {kind!r}")
            self._eval_bags[kind] = bags
        return self._eval_bags[kind]

    def _manifest_bags(self, split: str, seed: int) -> BagSet:
        """The manifest's bags of ``split``, each asked about every training query among
        its labels (positive) and as many other training queries drawn with ``seed``
        (negative; one for a bag without labels). Instance classes are unknown (PAD)."""
        self.split("train")  # decodes the pool (bags lose undecodable images)
        m = self._manifest
        assert m is not None
        d = self.data_cfg
        rows = split_bags(m, float(d["val_fraction"]), float(d["test_fraction"]),
                          int(d["split_seed"]))[split]
        rng = np.random.default_rng(seed)
        queries = set(self.train_queries)
        pairs: list[tuple[int, int, int]] = []
        for b in rows:
            pos = [q for q in m.labels[b] if q in queries]
            neg = [q for q in self.train_queries if q not in m.labels[b]]
            chosen = rng.choice(neg, size=min(len(neg), max(len(pos), 1)), replace=False) \
                if neg else []
            pairs += [(int(b), q, 1) for q in pos] + [(int(b), int(q), 0) for q in chosen]
        kmax = max([int(d["max_size"])] + [len(m.members[b]) for b in rows])
        indices = np.full((len(pairs), kmax), PAD, dtype=np.int64)
        for r, (b, _, _) in enumerate(pairs):
            indices[r, :len(m.members[b])] = m.members[b]
        mask = indices != PAD
        query = np.asarray([q for _, q, _ in pairs], dtype=np.int64)
        label = np.asarray([y for _, _, y in pairs], dtype=np.int64)
        return BagSet(indices, mask, query, label, np.full_like(indices, PAD))

    def _val_bags(self) -> tuple[BagSet, np.ndarray] | None:
        """Validation bags (never training or test images) and the pool they index, or None
        when there are too few validation images."""
        d = self.data_cfg
        if self.format == "bag_csv":
            bags = self._manifest_bags("val", int(d["eval_seed"]) + 7)
            return (bags, self.split("val").images) if len(bags) >= 2 else None
        if self.format == "image_folder":
            data = self.split("val")
            images, labels = data.images, data.labels
        else:
            pool = self._unused_train()
            images = self.split("train").images[pool]
            labels = self.split("train").labels[pool]
        if len(labels) < 2 * int(d["max_size"]) and not self.user_data:
            return None
        present = self._present(labels, self.train_queries)
        seen = self._present(labels, self.seen)
        if not present or len(seen) < 2:
            return None
        bags = sample_bags(labels, present, int(d["eval_bags_per_query"]),
                           instance_classes=seen, seed=int(d["eval_seed"]) + 7,
                           **self._bag_kwargs())
        return bags, images

    # --- domain check and calibration (export) -----------------------------------------
    def _unused_train(self) -> np.ndarray:
        """Indices of the seen-class training images that no training bag contains (int64):
        training-split images the model never saw, for validation bags."""
        used = np.unique(self.train_bags().indices)
        labels = self.split("train").labels
        keep = np.isin(labels, self.seen)
        keep[used[used != PAD]] = False
        return np.flatnonzero(keep)

    def _bag_members(self, bags: BagSet) -> np.ndarray:
        """The distinct pool indices the bags hold: int64 (n,)."""
        idx = np.unique(bags.indices)
        return idx[idx != PAD]

    def domain_images(self, split: str = "train") -> tuple[Any, np.ndarray | None]:
        """Instances (uint8 (N, H, W) or (N, H, W, 3)) and their classes: "train" the
        seen-class training images (what the bags are made of; the domain check is fitted
        on them), "val" images no training bag contains (built-in data: training images
        of no bag; a user's folder: its validation split), "test" the test split's
        seen-class images. A bag manifest: the images of that split's bags, no classes."""
        if self.format == "bag_csv":
            bags = {"train": self.train_bags, "test": self.eval_bags}.get(
                split, lambda: self._manifest_bags("val", 0))()
            return self.split(split).images[self._bag_members(bags)], None
        if split == "val" and self.format != "image_folder":
            idx = self._unused_train()
            data = self.split("train")
            return data.images[idx], data.labels[idx]
        data = self.split(split if split in ("train", "val") else "test")
        keep = np.flatnonzero(np.isin(data.labels, self.seen))
        return data.images[keep], data.labels[keep]

    def calibration_items(self, split: str) -> tuple[list[dict[str, Any]], np.ndarray | None]:
        """Bags and their 0/1 labels for the bag temperature: "val" balanced bags of the
        training queries drawn only from images no training bag contains (never the test
        bags, which measure the calibration), "test" the evaluation bags of
        :meth:`evaluate` (seen queries)."""
        if self.gated:
            return [], None
        if split == "val":
            val = self._val_bags()
            if val is None:
                return [], None
            bags, images = val
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
        if self.user_data or self.spec != FASHION_MNIST:  # the data's format (built-in: the
            kw["in_chans"] = int(self.spec.channels)      # models' defaults, 1 x 28 x 28)
            kw["image_size"] = int(self.spec.size[0])
        return {"name": str(self.model_cfg["name"]), "kwargs": kw}

    def build_model(self) -> nn.Module:
        # importing the two model modules registers their names, so create_model does not
        # import every other model module (timm alone takes seconds)
        import models.gated_mil  # noqa: F401
        import models.qmil  # noqa: F401

        return super().build_model()

    # --- frozen backbone --------------------------------------------------------------
    @property
    def frozen(self) -> bool:
        """True when the timm encoder's backbone stays at its starting weights
        (``model.freeze_backbone`` and a start other than random): its features of every
        image are computed once (:meth:`backbone_features`) and only the projection and the
        attention/query head train, on bags of those features."""
        return (self.freeze_backbone and not self.gated
                and self.model_cfg["name"] == "qmil_timm" and self.start_weights() is not None)

    def _starting_backbone(self) -> nn.Module:
        """The encoder's backbone as the engine starts it: built under ``run.seed`` (the
        same random init for what the weights do not cover), then the starting weights."""
        from training.imagenet import load_imagenet
        from training.pretrained import load_pretrained

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(self.cfg["run"]["seed"]))
            model = self.build_model()
        w, module = self.start_weights(), str(self.cfg["pretrained"]["module"])
        if w == "imagenet":
            load_imagenet(model, module)
        elif w is not None:
            load_pretrained(model, w, module)
        return model.encoder.backbone

    def cut(self, backbone: nn.Module) -> Any:
        """``backbone`` cut into its frozen trunk and the ``train_stages`` last stages that
        train (:func:`training.partial.split_backbone`; 0: the whole backbone frozen)."""
        from training.partial import split_backbone

        if backbone not in self._cuts:
            self._cuts[backbone] = split_backbone(backbone, self.train_stages)
        return self._cuts[backbone]

    def trained_parts(self) -> str | None:
        """What the plan line says is frozen and what trains (None: the whole network)."""
        if not self.frozen:
            return None
        views = f", {self.cache_views} cached views of each training image" \
            if self.cache_views > 1 else ""
        return f"{self._cut_text()}{views}; projection and attention/query head trained"

    def _cut_text(self) -> str:
        """:meth:`training.partial.Split.describe` of this run's cut (built once)."""
        if not hasattr(self, "_cut_words"):
            with torch.random.fork_rng(devices=[]):
                self._cut_words = self.cut(self.build_model().encoder.backbone).describe()
        return self._cut_words

    def train_precision(self, autocast: str) -> str:
        """The cached path trains in float32 (no autocast); else the engine's autocast."""
        return "float32" if self.frozen else autocast

    def _trunk_outputs(self, trunk: nn.Module, images: np.ndarray, batch_size: int,
                       generator: torch.Generator | None = None) -> torch.Tensor:
        """The trunk's float32 outputs of ``images`` (uint8), or of one random view of
        each (``generator`` given: ``view_aug``'s crops, flips and jitter)."""
        from training.data.ssl_aug import AugConfig, augment, uint8_to_unit
        from training.partial import trunk_maps
        from runtime.preprocess import normalize

        dev = next(trunk.parameters()).device
        chunks = []
        for s in range(0, len(images), batch_size):
            idx = np.arange(s, min(s + batch_size, len(images)))
            if generator is None:
                x = torch.from_numpy(bag_images(images, idx, self.spec))
            else:
                v = augment(uint8_to_unit(torch.from_numpy(images[idx])),
                            AugConfig.from_dict(self.view_aug), generator)
                x = torch.from_numpy(normalize(v.numpy(), self.spec))
            chunks.append(trunk_maps(trunk, x.to(dev)).cpu())
        return torch.cat(chunks)

    def backbone_features(self, split: str, backbone: nn.Module | None = None,
                          batch_size: int = 64) -> torch.Tensor:
        """The frozen trunk's outputs of every image of ``split``, computed once in eval
        mode (``backbone``: the starting one): float32 on the CPU, the pooled features
        (N, F) with ``train_stages`` 0, else the maps (N, C, h, w) the trained stages read.
        The training split also caches ``cache_views - 1`` augmented views of each image
        (:meth:`train_views`)."""
        if split not in self._features:
            t0 = time.perf_counter()
            net = (backbone if backbone is not None else self._starting_backbone())
            trunk = self.cut(net).trunk
            images = self.split(split).images
            if len(images) == 0:
                self._features[split] = torch.zeros(0, int(getattr(net, "num_features", 0)))
                return self._features[split]
            self._features[split] = self._trunk_outputs(trunk, images, batch_size)
            self._train_views, views = None, ""
            if split == "train" and self.cache_views > 1:
                gen = torch.Generator().manual_seed(int(self.cfg["run"]["seed"]))
                extra = [self._trunk_outputs(trunk, images, batch_size, gen)
                         for _ in range(self.cache_views - 1)]
                self._train_views = torch.stack([self._features[split], *extra])
                views = f" and {self.cache_views - 1} augmented views of each"
            what = "features" if self.train_stages == 0 else \
                f"maps {tuple(self._features[split].shape[1:])}"
            print(f"[qmil] frozen encoder trunk: {what} of the {len(images)} {split} images"
                  f"{views} computed once ({time.perf_counter() - t0:.0f} s)", flush=True)
        return self._features[split]

    def train_views(self) -> torch.Tensor:
        """The cached training views (V, N, ...): view 0 the images themselves."""
        feats = self.backbone_features("train")
        return feats.unsqueeze(0) if self._train_views is None else self._train_views

    def parameters_to_train(self, model: nn.Module) -> list[nn.Parameter]:
        """Every parameter, less the encoder's backbone when it is frozen (its cached
        features are then checked against ``model``'s backbone and recomputed from it if
        they differ)."""
        if not self.frozen:
            return super().parameters_to_train(model)
        for p in self.cut(model.encoder.backbone).trunk_params:
            p.requires_grad_(False)
        backbone = model.encoder.backbone
        if not self.features_match(model, "train"):
            self._features.pop("train", None)
            self.backbone_features("train", backbone)
        return [p for p in model.parameters() if p.requires_grad]

    def features_match(self, model: nn.Module, split: str, n: int = 4) -> bool:
        """True when ``split``'s cached features are ``model``'s backbone's (checked on
        its first ``n`` images, in eval mode)."""
        if split not in self._features:
            return False
        from training.partial import trunk_maps

        trunk = self.cut(model.encoder.backbone).trunk
        n = min(n, len(self._features[split]))
        x = torch.from_numpy(bag_images(self.split(split).images, np.arange(n), self.spec))
        now = trunk_maps(trunk, x.to(next(trunk.parameters()).device)).cpu()
        return bool(torch.allclose(now, self._features[split][:n], atol=1e-4, rtol=1e-3))

    def _cached_for(self, model: nn.Module, split: str) -> bool:
        """True when ``split``'s cached features are ``model``'s backbone's (computed from
        it when none are cached yet)."""
        if split not in self._features:
            self.backbone_features(split, model.encoder.backbone)
            return True
        return self.features_match(model, split)

    def _head_on_features(self, model: nn.Module, feats: torch.Tensor, indices: torch.Tensor,
                          mask: torch.Tensor, query: torch.Tensor, device: torch.device,
                          views: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The model's outputs from the cached trunk outputs ``feats`` (N, ...) or, with
        ``views`` (V, N, ...), a random view of each instance: the trained stages and the
        projection of the real instances of ``indices`` (padding: zero features, as the
        whole network gives them in training), then the head."""
        mask = mask.to(device) != 0
        idx = indices.to(mask.device)[mask]
        if views is not None and len(views) > 1:
            chosen = views[torch.randint(len(views), (len(idx),)), idx.cpu()]
        else:
            chosen = feats[idx.cpu()]
        real = model.encoder.proj(self.cut(model.encoder.backbone).tail(chosen.to(device)))
        x = real.new_zeros(*mask.shape, real.shape[-1])
        x[mask] = real
        return model.head(x, mask, self.query_vectors.to(device)[query.to(device)])

    def _predict_features(self, model: nn.Module, bags: BagSet, device: torch.device
                          ) -> dict[str, np.ndarray]:
        """:meth:`predict` from the test split's cached backbone features (the same
        outputs as the whole model in eval mode: padding gets no attention either way)."""
        model.eval()
        feats = self.backbone_features("test")
        n, kmax = bags.mask.shape
        prob, beta = np.zeros(n, np.float32), np.zeros((n, kmax), np.float32)
        step = int(self.eval_cfg["batch_size"])
        with torch.no_grad():
            for start in range(0, n, step):
                rows = np.arange(start, min(start + step, n))
                k = int(bags.mask[rows].sum(1).max())
                out = self._head_on_features(
                    model, feats, torch.from_numpy(bags.indices[rows, :k].astype(np.int64)),
                    torch.from_numpy(bags.mask[rows, :k].copy()),
                    torch.from_numpy(bags.query[rows].astype(np.int64)), device)
                prob[rows] = out["prob"].float().cpu().numpy()
                beta[rows, :k] = out["beta"].float().cpu().numpy()
        return {"prob": prob, "beta": beta, "keep": bags.mask.copy()}

    # --- data ------------------------------------------------------------------------
    def train_dataset(self) -> BagDataset | BagIndexDataset:
        """Bags of images; with a frozen backbone, bags of image indices into the cached
        features (:meth:`backbone_features`), trained on one thread unless ``train.threads``
        is set."""
        if self.frozen:
            if not self.cfg["train"]["threads"] and torch.get_num_threads() > 1:
                # the head's steps are too small to share between threads: on a busy CPU
                # two threads made them 25x slower (reports/own_data.md)
                torch.set_num_threads(1)
                print("[qmil] training the head on 1 thread (train.threads=N for more)",
                      flush=True)
            return BagIndexDataset(self.train_bags())
        return BagDataset(self.train_bags(), self.split("train").images, self.spec)

    def collate_fn(self) -> Callable:
        return index_collate if self.frozen else trim_collate

    # --- optimisation ----------------------------------------------------------------
    def forward(self, model: nn.Module, images: torch.Tensor, mask: torch.Tensor,
                query: torch.Tensor, device: torch.device) -> dict[str, torch.Tensor]:
        if self.gated:
            return model(images, mask)
        return model(images, mask, self.query_vectors.to(device)[query])

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor], device: torch.device
             ) -> tuple[torch.Tensor, dict[str, float]]:
        mask, label = batch["mask"].to(device), batch["label"].to(device)
        if "indices" in batch:  # a frozen trunk: its cached outputs, then the rest (float32)
            with torch.autocast(device.type, enabled=False):
                out = self._head_on_features(model, self.backbone_features("train"),
                                             batch["indices"], mask, batch["query"], device,
                                             views=self.train_views())
        else:
            out = self.forward(model, batch["images"].to(device), mask,
                               batch["query"].to(device), device)
        lam = 0.0 if self.gated else float(self.loss_cfg["lam"])
        loss, logs = qmil_loss(out["logit"], out["alpha"], mask, label, lam)
        sc_weight = 0.0 if self.gated else float(self.loss_cfg["sc_weight"])
        if sc_weight > 0:
            sc = self.consistency(model, device)
            loss = loss + sc_weight * sc
            logs["sc"] = float(sc.detach())
        logs["acc"] = float(((out["logit"].detach() > 0).float() == label).float().mean())
        return loss, logs

    def anchors(self) -> torch.Tensor:
        """Word vectors of the semantic-consistency term's anchor words (``loss.sc_vocab``
        frequent words, none naming or containing an unseen class), computed once."""
        if self._anchors is None:
            words = anchor_words(int(self.loss_cfg["sc_vocab"]),
                                 [self.class_names[i] for i in self.unseen + self.seen])
            self._anchors = torch.from_numpy(word_vectors(self.word_kind).lookup_many(words))
        return self._anchors

    def consistency(self, model: nn.Module, device: torch.device) -> torch.Tensor:
        """L_sc (training/losses/qmil.py) over the training queries and ``loss.sc_anchors``
        anchor words drawn afresh each step."""
        pool = self.anchors()
        n = min(int(self.loss_cfg["sc_anchors"]), len(pool))
        pick = torch.randperm(len(pool))[:n]
        words = torch.cat([self.query_vectors[self.train_queries], pool[pick]]).to(device)
        return semantic_consistency(model.query_embedding(words), words)

    # --- evaluation ------------------------------------------------------------------
    def predict(self, model: nn.Module, bags: BagSet, device: torch.device,
                iterative: bool = False) -> dict[str, np.ndarray]:
        """prob, beta, keep of ``model`` over test-split ``bags`` (from the cached
        features when the backbone is frozen and ``model``'s is the cached one)."""
        if self.frozen and not iterative and self._cached_for(model, "test"):
            return self._predict_features(model, bags, device)
        return predict_bags(model, bags, self.split("test").images,
                            None if self.gated else self.query_vectors, device,
                            batch_size=int(self.eval_cfg["batch_size"]),
                            seen=self.seen if iterative else None,
                            strong_rel=float(self.eval_cfg["strong_rel"]), spec=self.spec)

    def evaluate(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        was_training = model.training
        model.eval()
        bags = self.eval_bags("seen")
        pred = self.predict(model, bags, device)
        vals = {"beta": pred["beta"], "instance_labels": bags.instance_labels,
                "query": bags.query, "label": bags.label}
        m: dict[str, float] = {"bag_acc": bag_accuracy(pred["prob"], bags.label)}
        known = bool((bags.instance_labels != PAD).any())  # a bag manifest has no classes
        if known:
            m.update({
                "att_acc": attention_accuracy(**vals),
                "att_acc_predicted": attention_accuracy(**vals, prob=pred["prob"],
                                                        over="predicted"),
                "att_chance": attention_chance(bags.instance_labels, bags.mask, bags.query,
                                               bags.label),
            })
        acc_q = per_query({"prob": pred["prob"], "label": bags.label}, bags.query,
                          bag_accuracy, self.train_queries)
        att_q = per_query(vals, bags.query, attention_accuracy, self.train_queries) \
            if known else {}
        for c in self.train_queries:
            m[f"bag_acc/{_key(self.class_names[c])}"] = acc_q[c]
            if known:
                m[f"att_acc/{_key(self.class_names[c])}"] = att_q[c]
        m = {k: v for k, v in m.items() if v == v}  # a query without test bags: NaN
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

    def user_folder(self) -> bool:
        return self.user_data

    def default_pretrained(self) -> str | None:
        """A user's folder or manifest with a timm encoder whose ImageNet weights ship
        (:mod:`training.imagenet`): "imagenet"; else random init."""
        timm_encoder = self.model_cfg["name"] == "qmil_timm" or self.gated
        return "imagenet" if self.user_data and timm_encoder and \
            self.model_cfg["encoder"] in BUNDLED else None

    def chance(self) -> Chance:
        """Bag accuracy against always answering the commoner bag label (0.5 for balanced
        bags). The test bags reuse the test images, so the independent items are the fewer
        of bags and distinct test images."""
        bags = self.eval_bags("seen")
        labels = np.asarray(bags.label).astype(int).tolist()
        n_bags = len(labels)
        n = n_bags  # a bag manifest: its test bags are the items
        if self.format != "bag_csv":
            n = min(n_bags, int(np.isin(self.split("test").labels, self.seen).sum())) or n_bags
        return Chance("bag_acc", majority_share(labels), n,
                      "test bags" if n == n_bags else f"test images ({n_bags} bags)")

    def extra_state(self) -> dict[str, Any]:
        return {
            "preprocess": self.spec.to_dict(),
            "labels": list(self.class_names),
            "dataset": self._describe_data() + "; bags of "
                       + ", ".join(self.class_names[i] for i in self.seen),
            "data_source": self._data_source(),
            "seen_classes": [self.class_names[i] for i in self.seen],
            "unseen_classes": [self.class_names[i] for i in self.unseen],
            "train_queries": [self.class_names[i] for i in self.train_queries],
            "word_vectors": WORD_PACKAGES[self.word_kind],
            "word_dim": int(self.word_dim),
            "max_bag": int(self.data_cfg["max_size"]),
            "temperature": 1.0 if self.gated else float(self.model_cfg["temperature"]),
            "query_vectors": {n: [float(v) for v in self.query_vectors[i].tolist()]
                              for i, n in enumerate(self.class_names)},
            "gated": self.gated,
            "classifier_query": None if self.gated else self.model_cfg["classifier_query"],
            "strong_rel": float(self.eval_cfg["strong_rel"]),
            "frozen": f"encoder.backbone: {self._cut_text()}"
                      f" (at its starting weights)" if self.frozen else None,
        }


    def _describe_data(self) -> str:
        h, w = self.spec.size
        look = f"{h} x {w} {'grayscale' if self.spec.channels == 1 else 'colour'}"
        if self._folder is not None:
            return f"image folder {Path(self.data_cfg['root']).name} ({self._folder.layout}), {look}"
        if self._manifest is not None:
            return f"bag manifest {Path(self.data_cfg['root']).name} ({len(self._manifest)} bags), {look}"
        name = "scikit-learn's digits" if self.dataset == "digits" and self.format == "builtin" \
            else "Fashion-MNIST (train split)"
        return f"{name}, {look}"

    def _data_source(self) -> dict[str, Any]:
        """Format, path and what was left out (recorded with the model)."""
        out: dict[str, Any] = {"format": self.format, "root": self.data_cfg["root"]}
        if self._folder is not None:
            out.update(layout=self._folder.layout, skipped=len(self._folder.skipped),
                       images={s: len(getattr(self._folder, s)) for s in ("train", "val", "test")})
        if self._manifest is not None:
            out.update(bags=len(self._manifest), skipped=len(self._manifest.skipped),
                       dropped_bags=len(self._manifest.dropped_bags))
        return out


class BagIndexDataset(torch.utils.data.Dataset):
    """Bags as image indices (for a frozen backbone's cached features): each item holds
    ``indices`` int64 (K_max,) (``PAD`` for padding), ``mask`` bool (K_max,), ``query``
    int64 () and ``label`` float32 ()."""

    def __init__(self, bags: BagSet) -> None:
        self.bags = bags

    def __len__(self) -> int:
        return len(self.bags)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        b = self.bags
        return {"indices": torch.from_numpy(b.indices[i].astype(np.int64)),
                "mask": torch.from_numpy(b.mask[i].copy()),
                "query": torch.tensor(int(b.query[i])),
                "label": torch.tensor(float(b.label[i]))}


def index_collate(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack :class:`BagIndexDataset` items, dropping padding columns no bag uses."""
    out = {k: torch.stack([it[k] for it in items]) for k in items[0]}
    k = int(out["mask"].sum(1).max())
    out["indices"], out["mask"] = out["indices"][:, :k], out["mask"][:, :k]
    return out


DATASETS = ("fashion_mnist", "digits")
FORMATS = ("idx", "image_folder", "bag_csv")


def query_vectors(names: list[str], fmt: str = "builtin", kind: str = "glove") -> np.ndarray:
    """Unit word vectors of the class names (the query words): float32 (C, D).

    Args:
        kind: model.word_vectors, "glove" or "minilm" (:data:`runtime.words.KINDS`).

    Raises:
        ValueError: names without a word vector, every one listed with close known words.
    """
    wv = word_vectors(kind)
    missing: list[str] = []
    for n in names:
        try:
            wv.tokens(n)
        except UnknownWordError as exc:
            close = ", ".join(exc.suggestions) or "none found"
            part = "" if exc.word == n else f"{exc.word!r} has no vector; "
            missing.append(f"{n!r} ({part}close known words: {close})")
        except EmptyQueryError:
            missing.append(f"{n!r} (no word in it)")
    if missing:
        what = {"image_folder": "folder names", "bag_csv": "manifest labels"}.get(fmt, "class names")
        raise ValueError(f"{len(missing)} {what} have no word vector ({wv.name}), so "
                         f"they cannot be query words: {'; '.join(missing)}. Rename them to "
                         f"known words (underscores and hyphens read as spaces)")
    return wv.lookup_many(names)


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
