"""Sequential deepfake detection (thesis Chapter 5) as a training-engine plug-in.

``python -m training seqfake`` trains on generated faces (made under
``<artifacts>/data/seqfake/`` on first use, see :mod:`training.data.faces_synth`);
``--data DIR`` trains on a Seq-DeepFake folder: there, with ``model.backbone`` left at its
default, ``model.user_data`` and ``data.user_data`` replace the keys left at their defaults
(MobileNetV2 from the ImageNet weights that ship in a package, :mod:`training.imagenet`, at
its own input size) and the budget of :mod:`training.budget` sizes the run. ``model.arch`` picks the thesis model
(``seqfake``) or the SeqFakeFormer-style baseline (``seqfakeformer``). Loss weights in
``loss.weights`` switch the terms of eq. 5.18 on and off (the ablation).

Checkpoint ``extra``: ``preprocess`` (PreprocessSpec dict), ``labels`` (class names in id
order 1..L), ``task`` (components / attributes / binary), ``threshold`` (decoding
threshold on the fused sigmoid), ``decode_from`` (which logits the metrics decoded:
"fused" or "patch"), ``arch``, ``output_names`` (forward dict keys in order), ``data``
(what it was trained on), ``order_head`` (rank, slots or autoregressive: how the model
orders the edits), ``slots`` (5) and ``slot_decode`` (how a slot model's ``sequence`` is
read: ``eval.slot_decode``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from runtime.artifacts import artifacts_dir
from runtime.preprocess import PreprocessSpec
from training import distributed as dist_utils
from training.config import default_config_path, load_config
from training.data import faces_synth
from training.data.face_aug import FaceAugment
from training.data.sources import with_user_defaults
from training.data.seqdeepfake import (SeqDeepFakeDataset, SeqDeepFakeSplit, load_split,
                                       names_for)
from training.losses.seqfake import mil_probability, total_loss
from training.methods.base import Method
from training.metrics.seqfake import (expected_random_order_accuracy, adaptive_accuracy,
                                      exact_set_accuracy, fixed_accuracy, multilabel_accuracy,
                                      roc_auc, sequence_metrics, unpad, video_auc)
from training.imagenet import BUNDLED
from training.verdict import Chance, majority_share
from models.seqfake import decode_slots
from models.seqfakeformer import teacher_forcing_loss

TASKS = ("components", "attributes", "binary")
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def default_data_dir(artifacts: str | Path | None = None) -> Path:
    """Where the generated faces live: ``<artifacts>/data/seqfake``."""
    return artifacts_dir(artifacts) / "data" / "seqfake"


class SeqFakeMethod(Method):
    """The Chapter 5 model (or the SeqFakeFormer-style baseline) on Seq-DeepFake data."""

    name = "seqfake"

    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__(cfg)
        self.data_cfg, self.model_cfg = self._sections(cfg["data"], cfg["model"])
        self.loss_cfg, self.eval_cfg = cfg["loss"], cfg["eval"]
        self.task = self.data_cfg["task"]     # the schema checks it is one of TASKS
        self.arch = self.model_cfg["arch"]
        if self.arch == "seqfakeformer" and self.task == "binary":
            raise ValueError("the seqfakeformer baseline predicts sequences; use arch seqfake "
                             "for the binary task")
        size = self.data_cfg["img_size"]
        self.spec = PreprocessSpec(size=(size, size), channels=3, mean=MEAN, std=STD)
        self.num_classes = 1 if self.task == "binary" else 5
        self.threshold = self.eval_cfg["threshold"]
        self.decode_from = self.eval_cfg["decode_from"]
        self.slot_decode = self.eval_cfg["slot_decode"]
        # the slot order head predicts sequences; binary mode has none to predict
        self.order_head = (self.model_cfg["order_head"]
                           if self.arch == "seqfake" and self.task != "binary" else "rank")
        self._eval_split: SeqDeepFakeSplit | None = None

    @staticmethod
    def _sections(data: dict[str, Any], model: dict[str, Any]
                  ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The ``data`` and ``model`` sections the run uses: for a user's Seq-DeepFake folder
        (``data.root``) whose ``model.backbone`` the user did not choose, with their
        ``user_data`` keys (:func:`~training.data.sources.with_user_defaults`); the input
        size goes with the backbone, so a config naming its own backbone keeps its own."""
        yaml_model = load_config(default_config_path("seqfake"))["model"]
        chosen = (model["backbone"] != yaml_model["backbone"]    # --set, or pinned by --set
                  or (model.get("user_data") or {}).get("backbone")
                  != yaml_model["user_data"].get("backbone"))     # (training.config.pin_user_data)
        if not data["root"] or chosen:
            return data, {k: v for k, v in model.items() if k != "user_data"}
        return (with_user_defaults("seqfake", data),
                with_user_defaults("seqfake", model, section="model"))

    # --- data --------------------------------------------------------------------------
    def data_root(self) -> Path:
        """The Seq-DeepFake folder: ``data.root``, or the generated set (made if absent)."""
        root = self.data_cfg["root"]
        if root:
            return Path(root).expanduser()
        out = default_data_dir(self.cfg["run"]["artifacts"])
        gen = self.data_cfg["generate"]
        args = (gen["n_train"], gen["n_val"], gen["n_test"], gen["seed"])
        task = "attributes" if self.task == "attributes" else "components"
        if not faces_synth.is_generated(out, *args, task=task):
            if dist_utils.is_main():
                print(f"[seqfake] generating faces ({task}) under {out} (n_train={args[0]}, "
                      f"n_val={args[1]}, n_test={args[2]}, seed={args[3]}) ...", flush=True)
                faces_synth.generate(out, *args, task=task)
        if dist_utils.is_distributed():
            torch.distributed.barrier()
        return out

    def _load(self, split: str, limit_key: str) -> SeqDeepFakeSplit:
        return load_split(self.data_root(), self.task, split, self.spec,
                          self.data_cfg[limit_key])

    def train_dataset(self) -> SeqDeepFakeDataset:
        split = self._load(self.data_cfg["train_split"], "limit_train")
        aug = FaceAugment.from_config(self.cfg["aug"], self.task)
        return SeqDeepFakeDataset(split, self.spec, aug)

    def domain_images(self, split: str = "train") -> tuple[Any, np.ndarray | None]:
        """The training faces (no targets: the domain check models what a face of this data
        set looks like, real or edited), or the validation / evaluation faces with their
        per-component targets (:meth:`presence`); resized as training reads them."""
        if split == "train":
            return self._load(self.data_cfg["train_split"], "limit_train").images, None
        data = self._load("val", "limit_eval") if split == "val" else self.eval_split()
        return data.images, self.presence(data.labels)

    def presence(self, sequences: np.ndarray) -> np.ndarray:
        """0/1 targets (N, L) of padded 1-based sequences (N, slots): component c edited
        (binary task: any edit), the targets of the per-component probabilities."""
        seq = np.asarray(sequences)
        if self.task == "binary":
            return (seq > 0).any(axis=1, keepdims=True).astype(np.int64)
        return np.stack([(seq == c + 1).any(axis=1) for c in range(self.num_classes)],
                        axis=1).astype(np.int64)

    def eval_split(self) -> SeqDeepFakeSplit:
        if self._eval_split is None:
            self._eval_split = self._load(self.eval_cfg["split"], "limit_eval")
        return self._eval_split

    # --- model -------------------------------------------------------------------------
    def model_spec(self) -> dict[str, Any]:
        m = self.model_cfg
        kw: dict[str, Any] = {"num_classes": self.num_classes, "dim": m["dim"],
                              "heads": m["heads"], "img_size": self.spec.size[0],
                              "out_level": m["out_level"], "out_indices": list(m["out_indices"])}
        if self.arch == "seqfake":
            kw.update(depth=m["depth"], pos_embed=m["pos_embed"], dropout=m["dropout"],
                      order_head="slots" if self.order_head.startswith("slots") else "rank",
                      slot_memory="encoded_raw" if self.order_head == "slots_raw" else "encoded")
        else:
            kw.update(enc_depth=m["depth"], dec_depth=m["dec_depth"])
        return {"name": f"{self.arch}_{m['backbone']}", "kwargs": kw}

    # --- optimisation --------------------------------------------------------------------
    def loss(self, model: nn.Module, batch: Any, device: torch.device
             ) -> tuple[torch.Tensor, dict[str, float]]:
        x, seq = (t.to(device) for t in batch)
        if self.arch == "seqfakeformer":
            loss = teacher_forcing_loss(model, x, seq)
            return loss, {"loss_ce": float(loss.detach())}
        out = model(x)
        weights = dict(self.loss_cfg["weights"])
        if self.task == "binary":
            weights["rank"] = 0.0  # binary mode: no ranking loss
        n = out["u"].shape[1]
        ks = torch.randint(1, n, (self.loss_cfg["num_k"],)).to(device)
        return total_loss(out, seq, ks, weights, alpha=self.loss_cfg["alpha"],
                          a=self.loss_cfg["a"], tau=self.loss_cfg["tau"],
                          reg_reduction=self.loss_cfg["reg_reduction"])

    # --- evaluation --------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, model: nn.Module, split: SeqDeepFakeSplit, device: torch.device
                ) -> dict[str, np.ndarray]:
        """Model outputs over a split (no augmentation), as numpy arrays."""
        ds = SeqDeepFakeDataset(split, self.spec, None)
        loader = DataLoader(ds, batch_size=self.eval_cfg["batch_size"])
        keep = ("sequence",) if self.arch == "seqfakeformer" else ("logits", "logits_patch", "u")
        if self.order_head != "rank":
            keep = keep + ("sequence", "slot_logits")
        outs: dict[str, list[np.ndarray]] = {k: [] for k in keep}
        mil: list[np.ndarray] = []
        for x, _ in loader:
            out = model(x.to(device))
            for k in keep:
                outs[k].append(out[k].float().cpu().numpy())
            if "u" in out:
                n = out["u"].shape[1]
                # a fixed, evenly spaced set of k at evaluation (training samples them)
                ks = torch.linspace(1, n - 1, min(100, n - 1), device=device).round().long()
                mil.append(mil_probability(out["u"], ks, self.loss_cfg["a"],
                                           self.loss_cfg["tau"]).cpu().numpy())
        res = {k: np.concatenate(v) for k, v in outs.items()}
        if mil:
            res["mil_prob"] = np.concatenate(mil)
        return res

    def evaluate(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        split = self.eval_split()
        was_training = model.training
        model.eval()
        res = self.predict(model, split, device)
        model.train(was_training)
        targets = [unpad(t) for t in split.labels.tolist()]
        fake = [int(len(t) > 0) for t in targets]
        if self.arch == "seqfakeformer":
            return {**self._sequence_scores(res["sequence"], targets),
                    "n_eval": float(len(targets))}
        mil_auc = roc_auc(res["mil_prob"], fake)
        if self.task == "binary":
            score = 1 / (1 + np.exp(-res["logits"][:, 0]))
            videos = [str(Path(p).parent) for p in split.paths]
            return {"auc": roc_auc(score, fake), "video_auc": video_auc(score, fake, videos),
                    "acc": float(np.mean((score > self.threshold) == np.asarray(fake, bool))),
                    "mil_auc": mil_auc, "n_eval": float(len(targets))}
        logits = res["logits_patch"] if self.decode_from == "patch" else res["logits"]
        probs = 1 / (1 + np.exp(-logits))
        metrics = sequence_metrics(probs, targets, self.threshold)
        metrics.update(mil_auc=mil_auc, n_eval=float(len(targets)))
        if self.order_head != "rank":  # the slot head's sequences are the answer
            rank = {f"rank_{k}": v for k, v in metrics.items() if k.endswith("_acc")}
            seq = self.slot_sequences(res, self.slot_decode)
            metrics.update(self._sequence_scores(seq, targets), **rank)
        return metrics

    def slot_sequences(self, res: dict[str, np.ndarray], how: str) -> np.ndarray:
        """A slot model's predicted sequences (N, S) from :meth:`predict`'s outputs, read as
        ``how`` (``eval.slot_decode``, :func:`models.seqfake.decode_slots`) from the logits
        the metrics decode (``eval.decode_from``) and the slot logits."""
        logits = res["logits_patch"] if self.decode_from == "patch" else res["logits"]
        out = {"logits": torch.from_numpy(logits),
               "slot_logits": torch.from_numpy(res["slot_logits"])}
        return decode_slots(out, how, self.threshold).numpy()

    def _sequence_scores(self, sequences: np.ndarray, targets: list[list[int]]
                         ) -> dict[str, float]:
        """Fixed-Acc, Adaptive-Acc, multi-label and exact-set accuracy and the random-order
        control of predicted sequences (N, S) (0 = padding)."""
        preds = [unpad(s) for s in sequences.astype(int).tolist()]
        rf, ra = expected_random_order_accuracy(preds, targets)
        return {"fixed_acc": fixed_accuracy(preds, targets),
                "adaptive_acc": adaptive_accuracy(preds, targets),
                "multilabel_acc": multilabel_accuracy(preds, targets, self.num_classes),
                "exact_set_acc": exact_set_accuracy(preds, targets),
                "random_order_fixed_acc": rf, "random_order_adaptive_acc": ra}

    def user_folder(self) -> bool:
        """A user's Seq-DeepFake folder (``data.root``): the budget sizes the run."""
        return bool(self.data_cfg["root"])

    def default_pretrained(self) -> str | None:
        """A user's Seq-DeepFake folder with a backbone whose ImageNet weights ship
        (:mod:`training.imagenet`): "imagenet"; else random init."""
        return "imagenet" if self.user_folder() and self.model_cfg["backbone"] in BUNDLED \
            else None

    def chance(self) -> Chance:
        """Sequence accuracy (fixed_acc; binary task: acc) against always answering the
        commonest test sequence (or real/fake)."""
        targets = [tuple(unpad(t)) for t in self.eval_split().labels.tolist()]
        if self.task == "binary" and self.arch != "seqfakeformer":
            return Chance("acc", majority_share(len(t) > 0 for t in targets), len(targets),
                          "test faces")
        return Chance("fixed_acc", majority_share(targets), len(targets), "test faces")

    def alignment(self) -> str:
        """The face alignment of the training images (:mod:`runtime.align`): for a
        Seq-DeepFake folder its own (FFHQ for facial attributes, CelebA-HQ for facial
        components), the margin crop of the generated faces otherwise."""
        if not self.data_cfg["root"]:
            return "crop45"
        return "ffhq" if self.task == "attributes" else "celebahq"

    def extra_state(self) -> dict[str, Any]:
        root = self.data_cfg["root"]
        return {
            "preprocess": {**self.spec.to_dict(), "alignment": self.alignment()},
            "labels": list(names_for(self.task)) if self.task != "binary" else ["fake"],
            "task": self.task,
            "threshold": self.threshold,
            "decode_from": self.decode_from,
            "arch": self.arch,
            "order_head": self.order_head if self.arch == "seqfake" else "autoregressive",
            "slots": 5,
            "slot_decode": self.slot_decode,
            "data": (f"Seq-DeepFake folder {root}" if root else
                     "generated faces (training.data.faces_synth), not real deepfakes"),
        }


def build(cfg: dict[str, Any]) -> SeqFakeMethod:
    return SeqFakeMethod(cfg)
