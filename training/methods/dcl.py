"""DCL plug-in: SimCLR-style two-view pre-training with NT-Xent, DCL or DCLW (Chapter 3).

Data: Fashion-MNIST train (uint8 28x28) by default; ``data.root`` / ``--data PATH`` reads
(``data.format``, auto-detected by :func:`training.data.sources.detect_format`) a
Fashion-MNIST IDX folder, an ImageFolder (``DIR/<class>/*`` or train/ val/ test/ trees:
:func:`training.data.folders.load_image_folder`) or any folder of images, nested or flat
(:mod:`training.data.unlabeled`; labels where its first-level sub-folders give them). A
user's images take ``data.user_data`` (64 px), their channels from the files (1 if every
file is grayscale, else 3; the encoder's ``in_chans`` follows) and ImageNet's mean/std
unless ``data.channels`` / ``data.mean`` / ``data.std`` are set; they are decoded once into
memory at the model's size (:mod:`training.data.images`, unreadable files skipped).
Two views per image from :mod:`training.data.ssl_aug`, normalised by the shared
:func:`runtime.preprocess.normalize`.
Monitor: weighted kNN (k=200, T=0.1) of test images against a fixed train subset, on the
l2-normalised backbone features (``model.embed``); on a user's folder, its labelled
training images against its test split (or, without one, a ``data.test_fraction`` of its
labelled images held out by ``data.split_seed``); no monitor without two labelled classes.
Optionally the same kNN for a random-init encoder of the same architecture, as a reference.

Config sections: ``model`` (registered name + kwargs), ``dcl`` (loss, temperature, sigma,
gather_distributed), ``data`` (root, train_subset), ``aug`` (:class:`AugConfig` fields),
``eval`` (k, temperature, gallery_size, test_size, batch_size, random_init_reference).
"""
from __future__ import annotations

import time
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import TensorDataset

from runtime.preprocess import FASHION_MNIST, PreprocessSpec, normalize
from training.data.fashion_mnist import CLASS_NAMES, ArrayDataset, load_fashion_mnist
from training.data.folders import FileDataset, load_image_folder, split_by_seed
from training.data.images import data_channels, decode_files, user_spec
from training.data.sources import detect_format, with_user_defaults
from training.data.unlabeled import scan_unlabeled_folder
from training.data.ssl_aug import AugConfig, two_views
from training.losses.dcl import build_loss
from training.methods.base import Method
from training.metrics.embed import embed_tensor, prepare
from training.metrics.knn import knn_accuracy
from training.imagenet import BUNDLED
from training.verdict import Chance, majority_share


class DCLMethod(Method):
    """Contrastive pre-training; ``dcl.loss`` picks ``simclr`` | ``dcl`` | ``dclw``."""

    name = "dcl"

    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__(cfg)
        self.dcl_cfg = dict(cfg["dcl"])
        self.data_cfg = dict(cfg["data"])
        self.eval_cfg = dict(cfg["eval"])
        self.loss_name = str(self.dcl_cfg["loss"]).lower()
        self.criterion = build_loss(self.loss_name,
                                    temperature=float(self.dcl_cfg["temperature"]),
                                    sigma=float(self.dcl_cfg["sigma"]),
                                    gather_distributed=bool(self.dcl_cfg["gather_distributed"]))
        root, fmt = self.data_cfg["root"], str(self.data_cfg["format"])
        self.format = "builtin" if not root else (
            detect_format(root, FORMATS) if fmt == "auto" else fmt)
        aug = dict(cfg["aug"])
        if self.user_data:  # aug.user_data: colour changes for a user's images
            aug = with_user_defaults("dcl", aug, section="aug")
        self.aug = AugConfig.from_dict(aug)
        model = dict(cfg["model"])
        if self.user_data:  # a user's images: data.user_data, model.user_data
            self.data_cfg = with_user_defaults("dcl", self.data_cfg)
            model = with_user_defaults("dcl", model, section="model")
        self._model_spec = {"name": str(model["name"]), "kwargs": dict(model["kwargs"])}
        part = dict(cfg.get("partial") or {"train_stages": 0, "views": 2})
        if self.user_data:  # partial.user_data: the cut for a user's images
            part = with_user_defaults("dcl", part, section="partial")
        part.pop("user_data", None)
        self.train_stages, self.views = int(part["train_stages"]), int(part["views"])
        if self.train_stages and self.views < 2:
            raise ValueError(f"partial.views={self.views}: two views of an image make a "
                             f"positive pair; set partial.views to 2 or more")
        self._maps: torch.Tensor | None = None  # (V, N, C, h, w): the trunk's maps of views
        self._eval_maps: dict[str, torch.Tensor] = {}
        self._cuts: Any = weakref.WeakKeyDictionary()  # backbone -> its partial.Split
        self._files: dict[str, FileDataset] = {}
        self.layout = ""
        self.class_names: list[str] = list(CLASS_NAMES)
        if self.user_data:
            self._scan_user_data()
        self.spec = self._preprocess()
        self._train: ArrayDataset | None = None
        self._test: ArrayDataset | None = None
        self._eval_cache: dict[str, torch.Tensor] | None = None
        self._random_ref: float | None = None
        self._embedding_dim: int | None = None

    # --- data source -------------------------------------------------------------------
    @property
    def user_data(self) -> bool:
        """True for a user's image folder (labelled or not)."""
        return self.format in ("image_folder", "unlabeled")

    def _scan_user_data(self) -> None:
        """List the user's files: training images, and the labelled kNN queries."""
        d = self.data_cfg
        frac, seed = float(d["test_fraction"]), int(d["split_seed"])
        if self.format == "image_folder":
            s = load_image_folder(d["root"], 0.0, frac, seed)
            self._files = {"train": s.train, "test": s.test}
            self.layout = s.layout
        else:
            tree = scan_unlabeled_folder(d["root"])
            self._files = {"train": tree, "test": tree.subset(np.zeros(0, np.int64))}
            self.layout = "every image under the folder"
            labelled = np.flatnonzero(tree.labels >= 0)
            if len(set(tree.labels[labelled].tolist())) >= 2:  # kNN on the labelled ones
                part = tree.subset(labelled)
                gallery, queries = split_by_seed(part, (frac,), seed)
                self._files["knn_gallery"], self._files["test"] = gallery, queries
                self.layout += (f"; kNN monitor on its labelled images ({len(gallery)} "
                                f"gallery, {len(queries)} queries, seed {seed})")
        self.class_names = list(self._files["train"].class_names)

    def _preprocess(self) -> PreprocessSpec:
        d, size = self.data_cfg, int(self.data_cfg["image_size"])
        if not self.user_data:
            return PreprocessSpec(size=(size, size), channels=1,
                                  mean=tuple(float(m) for m in d["mean"] or FASHION_MNIST.mean),
                                  std=tuple(float(s) for s in d["std"] or FASHION_MNIST.std))
        channels = int(d["channels"] or data_channels(self._files["train"].paths))
        return user_spec(size, channels, d["mean"], d["std"])

    def _decoded(self, name: str) -> ArrayDataset:
        """A user's split decoded at the model's size (uint8 (N, H, W[, 3]))."""
        return decode_files(self._files[name], self.spec,
                            f"{self.data_cfg['root']} ({name})").data

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    # --- model -------------------------------------------------------------------------
    def model_spec(self) -> dict[str, Any]:
        """The encoder's name and kwargs; ``in_chans`` follows the data's channels."""
        kw = dict(self._model_spec["kwargs"])
        if self.user_data or self.spec.channels != int(kw.get("in_chans", 1)):
            kw["in_chans"] = int(self.spec.channels)
        return {"name": self._model_spec["name"], "kwargs": kw}

    # --- data --------------------------------------------------------------------------
    def _train_data(self) -> ArrayDataset:
        if self._train is None:
            ds = self._decoded("train") if self.user_data else \
                load_fashion_mnist("train", root=self.data_cfg["root"])
            n = self.data_cfg["train_subset"]
            if n:
                idx = np.random.default_rng(int(self.data_cfg["subset_seed"])).permutation(
                    len(ds))[: int(n)]
                ds = ds.subset(np.sort(idx))
            self._train = ds
        return self._train

    def _unused_train(self) -> tuple[Any, np.ndarray | None]:
        """Fashion-MNIST training images outside ``train_subset`` (never the test split,
        which measures the model), with their classes; none on a user's folder or without a
        subset."""
        n = self.data_cfg["train_subset"]
        if self.user_data or not n:
            return [], None
        ds = load_fashion_mnist("train", root=self.data_cfg["root"])
        idx = np.random.default_rng(int(self.data_cfg["subset_seed"])).permutation(len(ds))
        rest = ds.subset(np.sort(idx[int(n):]))
        return rest.images, rest.labels

    def _test_data(self) -> ArrayDataset:
        if self._test is None:
            self._test = self._decoded("test") if self.user_data else \
                load_fashion_mnist("test", root=self.data_cfg["root"])
        return self._test

    def domain_images(self, split: str = "train") -> tuple[Any, np.ndarray | None]:
        """The pre-training images, the validation images (Fashion-MNIST training images
        the ``train_subset`` left out; none otherwise) or the test split; their classes
        (None where some images have none)."""
        if split == "val":
            return self._unused_train()
        ds = self._train_data() if split == "train" else self._test_data()
        labels = ds.labels if len(ds.labels) and (ds.labels >= 0).all() else None
        return ds.images, labels

    def train_dataset(self) -> TensorDataset:
        """uint8 images (N, H, W) or (N, H, W, 3); labels are not used in pre-training.
        With a partial cut: the images' indices into the cached trunk maps of their views."""
        if self.partial:
            return TensorDataset(torch.arange(len(self._train_data())))
        return TensorDataset(torch.from_numpy(self._train_data().images))

    # --- partial fine-tuning on cached trunk maps (training/partial.py) -----------------
    @property
    def partial(self) -> bool:
        """True when the encoder's early stages stay at their starting weights (a start
        other than random and ``partial.train_stages`` > 0): their maps of
        ``partial.views`` augmented views of every training image are computed once and
        the last ``train_stages`` stages, the head conv and the projection train on them."""
        return self.train_stages > 0 and self.start_weights() is not None

    def cut(self, backbone: nn.Module) -> Any:
        """``backbone`` cut before its last ``partial.train_stages`` stages."""
        from training.partial import split_backbone

        if backbone not in self._cuts:
            self._cuts[backbone] = split_backbone(backbone, self.train_stages)
        return self._cuts[backbone]

    def _starting_model(self) -> nn.Module:
        """The encoder as the engine starts it: built under ``run.seed``, then the starting
        weights."""
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
        return model

    def trained_parts(self) -> str | None:
        """What the plan line says is frozen and what trains (None: the whole network)."""
        if not self.partial:
            return None
        if not hasattr(self, "_cut_words"):
            with torch.random.fork_rng(devices=[]):
                self._cut_words = self.cut(self.build_model().backbone).describe()
        return f"{self._cut_words}, {self.views} cached views of each image; projection trained"

    def train_precision(self, autocast: str) -> str:
        """The cached path trains in float32 (no autocast); else the engine's autocast."""
        return "float32" if self.partial else autocast

    def view_maps(self, batch_size: int = 64) -> torch.Tensor:
        """The starting trunk's float32 maps of ``partial.views`` augmented views (``aug``)
        of every training image, (V, N, C, h, w) on the CPU, computed once (seeded by
        ``run.seed``)."""
        if self._maps is None:
            from training.data.ssl_aug import augment, uint8_to_unit
            from training.partial import trunk_maps

            t0 = time.perf_counter()
            trunk = self.cut(self._starting_model().backbone).trunk
            images = torch.from_numpy(self._train_data().images)
            gen = torch.Generator().manual_seed(int(self.cfg["run"]["seed"]))
            views = []
            for _ in range(self.views):
                chunks = []
                for s in range(0, len(images), batch_size):
                    x = uint8_to_unit(images[s:s + batch_size])
                    if tuple(x.shape[-2:]) != tuple(self.spec.size):
                        x = torch.nn.functional.interpolate(x, size=tuple(self.spec.size),
                                                            mode="bilinear", align_corners=False)
                    v = augment(x, self.aug, gen)
                    chunks.append(trunk_maps(trunk, torch.from_numpy(normalize(v.numpy(),
                                                                                self.spec))))
                views.append(torch.cat(chunks))
            self._maps = torch.stack(views)
            print(f"[dcl] frozen encoder trunk: maps {tuple(self._maps.shape[2:])} of "
                  f"{self.views} views of the {len(images)} training images computed once "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
        return self._maps

    def parameters_to_train(self, model: nn.Module) -> list[nn.Parameter]:
        """Every parameter, less the trunk's with a partial cut."""
        if self.partial:
            for p in self.cut(model.backbone).trunk_params:
                p.requires_grad_(False)
        return [p for p in model.parameters() if p.requires_grad]

    def _partial_loss(self, model: nn.Module, index: torch.Tensor, device: torch.device
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """Projections of two different cached views of each image of ``index``, in
        float32: the trained stages, the pooling and the projection head."""
        maps = self.view_maps()
        n = len(index)
        a = torch.randint(self.views, (n,))
        b = (a + torch.randint(1, self.views, (n,))) % self.views  # never the same view
        x = torch.cat([maps[a, index], maps[b, index]]).to(device)
        with torch.autocast(device.type, enabled=False):
            h = self.cut(model.backbone).tail(x)
            return model.projector(h).chunk(2)

    # --- optimisation ------------------------------------------------------------------
    def loss(self, model: nn.Module, batch: Any, device: torch.device
             ) -> tuple[torch.Tensor, dict[str, float]]:
        images = batch[0] if isinstance(batch, (list, tuple)) else batch
        if self.partial:
            p1, p2 = self._partial_loss(model, images, device)
        else:
            v1, v2 = two_views(images, self.spec, self.aug)
            out = model(torch.cat([v1, v2]).to(device, non_blocking=True))  # one pass, 2B views
            p1, p2 = out["projection"].chunk(2)
        loss = self.criterion(p1, p2)
        with torch.no_grad():
            pos = torch.nn.functional.cosine_similarity(p1, p2, dim=1).mean().item()
        return loss, {"pos_cos": pos}

    # --- evaluation --------------------------------------------------------------------
    def _eval_tensors(self) -> dict[str, torch.Tensor]:
        """Prepared gallery (a fixed train subset) and test inputs, built once (empty on a
        user's folder without two labelled classes)."""
        if self._eval_cache is None:
            if self.user_data:
                train = self._decoded("knn_gallery") if "knn_gallery" in self._files \
                    else self._train_data()
                test = self._test_data()
                keep = np.flatnonzero(train.labels >= 0)
                train = train.subset(keep)
                if len(set(train.labels.tolist())) < 2 or len(test) == 0:
                    train, test = train.subset(keep[:0]), test.subset(np.zeros(0, np.int64))
            else:
                train = load_fashion_mnist("train", root=self.data_cfg["root"])
                test = self._test_data()
            g_n = min(int(self.eval_cfg["gallery_size"]), len(train))
            t_n = min(int(self.eval_cfg["test_size"]), len(test))
            g_idx = np.sort(np.random.default_rng(12345).permutation(len(train))[:g_n])
            t_idx = np.sort(np.random.default_rng(54321).permutation(len(test))[:t_n])
            self._eval_cache = {
                "gallery_x": prepare(train.images[g_idx], self.spec) if g_n else torch.zeros(0),
                "gallery_y": torch.from_numpy(train.labels[g_idx]),
                "test_x": prepare(test.images[t_idx], self.spec) if t_n else torch.zeros(0),
                "test_y": torch.from_numpy(test.labels[t_idx]),
            }
        return self._eval_cache

    def knn_top1(self, model: nn.Module, device: torch.device, cached: bool = True) -> float:
        """Weighted kNN top-1 of the test subset against the gallery subset, in [0, 1]
        (NaN without labelled images); with a partial cut and ``cached``, from the cached
        trunk maps when they are ``model``'s."""
        d = self._eval_tensors()
        if len(d["test_y"]) == 0:
            return float("nan")
        bs = int(self.eval_cfg["batch_size"])
        if cached and self.partial and self._cached_for(model):
            gal, qry = (self._embed_cached(model, k, device, bs) for k in ("gallery_x", "test_x"))
        else:
            gal = embed_tensor(model, d["gallery_x"], device, bs)
            qry = embed_tensor(model, d["test_x"], device, bs)
        return knn_accuracy(qry, d["test_y"], gal, d["gallery_y"], num_classes=self.num_classes,
                            k=min(int(self.eval_cfg["k"]), len(d["gallery_y"])),
                            temperature=float(self.eval_cfg["temperature"]))

    def _cached_for(self, model: nn.Module, n: int = 4) -> bool:
        """True when the cached kNN maps are ``model``'s trunk's (computed from it when none
        are cached yet; checked on the first ``n`` gallery images otherwise)."""
        from training.partial import trunk_maps

        net = getattr(model, "module", model)
        trunk = self.cut(net.backbone).trunk
        d = self._eval_tensors()
        dev = next(trunk.parameters()).device
        if not self._eval_maps:
            self._eval_maps = {k: torch.cat([trunk_maps(trunk, d[k][i:i + 64].to(dev)).cpu()
                                             for i in range(0, len(d[k]), 64)])
                               for k in ("gallery_x", "test_x")}
            return True
        now = trunk_maps(trunk, d["gallery_x"][:n].to(dev)).cpu()
        return bool(torch.allclose(now, self._eval_maps["gallery_x"][:n], atol=1e-4, rtol=1e-3))

    @torch.no_grad()
    def _embed_cached(self, model: nn.Module, key: str, device: torch.device, bs: int
                      ) -> torch.Tensor:
        """``model.embed`` of the kNN images ``key`` from their cached trunk maps (eval
        mode; the same values as the whole network, tests/test_partial.py)."""
        net = getattr(model, "module", model)
        tail = self.cut(net.backbone).tail
        was_training = net.training
        net.eval()
        maps = self._eval_maps[key]
        with torch.autocast(device.type, enabled=False):
            out = [torch.nn.functional.normalize(tail(maps[i:i + bs].to(device)), dim=1).cpu()
                   for i in range(0, len(maps), bs)]
        net.train(was_training)
        return torch.cat(out) if out else torch.zeros(0, net.feature_dim)

    def random_init_knn_top1(self, device: torch.device, seed: int = 0) -> float:
        """kNN top-1 of an untrained encoder of the same architecture (RNG state untouched)."""
        if self._random_ref is None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                ref = self.build_model().to(device)
            self._random_ref = self.knn_top1(ref, device, cached=False)
        return self._random_ref

    def evaluate(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        if len(self._eval_tensors()["test_y"]) == 0:
            return {}  # no labels: no kNN monitor
        metrics = {"knn_top1": self.knn_top1(model, device)}
        if self.eval_cfg["random_init_reference"]:
            metrics["knn_top1_random_init"] = self.random_init_knn_top1(device)
        return metrics

    def user_folder(self) -> bool:
        return self.user_data

    def default_pretrained(self) -> str | None:
        """A user's images with an encoder whose ImageNet weights ship
        (:mod:`training.imagenet`): "imagenet"; else random init."""
        backbone = self._model_spec["kwargs"].get("backbone")
        return "imagenet" if self.user_data and self._model_spec["name"] == "dcl_encoder" \
            and backbone in BUNDLED else None

    def chance(self) -> Chance | None:
        """kNN top-1 against always answering the largest test class; None without labels."""
        labels = self._eval_tensors()["test_y"].tolist()
        return Chance("knn_top1", majority_share(labels), len(labels), "test images") \
            if labels else None

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
        n = len(self._train_data())
        if self.user_data:
            h, w = self.spec.size
            look = f"{h} x {w} {'grayscale' if self.spec.channels == 1 else 'colour'}"
            dataset = f"image folder {Path(self.data_cfg['root']).name} ({self.layout}), {look}"
            training = f"{n} images of {Path(self.data_cfg['root']).name} (labels unused)"
        else:
            dataset = "Fashion-MNIST (train split), 28 x 28 grayscale"
            training = "Fashion-MNIST train (60k, labels unused)" \
                if not self.data_cfg["train_subset"] \
                else f"Fashion-MNIST train subset of {int(self.data_cfg['train_subset'])} (labels unused)"
        return {
            "preprocess": self.spec.to_dict(),
            "labels": list(self.class_names),
            "dataset": dataset,
            "data_source": {"format": self.format, "root": self.data_cfg["root"],
                            "layout": self.layout, "images": n,
                            "skipped": sum(len(f.skipped) for f in self._files.values())},
            "loss": self.loss_name,
            "embedding_dim": dim,
            "embed_method": "embed",
            "temperature": float(self.criterion.temperature),
            "sigma": float(getattr(self.criterion, "sigma", self.dcl_cfg["sigma"])),
            "knn": {"k": int(self.eval_cfg["k"]),
                    "temperature": float(self.eval_cfg["temperature"])},
            "training_data": training,
        }


FORMATS = ("idx", "image_folder", "unlabeled")


def build(cfg: dict[str, Any]) -> DCLMethod:
    return DCLMethod(cfg)
