"""Export views of the sequential deepfake variants (contracts in :mod:`methods.seqfake`).

* thesis / attributes / binary: image (B, 3, S, S) -> probs (B, L) = sigmoid(logits),
  logits (B, L), u (B, n) token dissimilarities, dissim (B, h, w) where-map, features
  (B, d) pooled backbone features (the domain check's).
* slots (the thesis model with the parallel order head, ``model.order_head=slots``): the
  thesis outputs, then step_probs (B, S, L + 1) softmax per slot (0 = no edit / end) and
  sequence (B, S) int64, the per-slot argmax cut at the first end (0 after it), or with
  ``extra.slot_decode`` a hybrid decoding (the fused detected set in the slots' order).
* seqfakeformer: image -> probs (B, L) (per component, the largest probability the decoder
  gives it over the slots), step_probs (B, S, L + 1) softmax per slot (0 = no edit),
  sequence (B, S) int64 greedy tokens (0 = no edit), features (B, d) the mean encoder token.
* published (the authors' SeqFakeFormer, :class:`PublishedOnnx`): image -> probs, step_logits
  (B, S, V) each step's logits over the authors' vocabulary (zero after EOS), sequence (B, S)
  int64 the authors' greedy answer, steps (B,) int64, features (B, d).
* sbi (SBI's EfficientNet-B4, :class:`SbiOnnx`): image -> probs (B, 1) fakeness
  softmax(logits)[:, 1], logits (B, 2), features (B, 1792).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from export.view import ExportView, image_view
from models.seqfake import decode_slots


class ThesisOnnx(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor):
        out = self.model(image)
        return (torch.sigmoid(out["logits"]), out["logits"], out["u"], out["dissim"],
                out["features"])


class SlotsOnnx(nn.Module):
    """The slot variant; ``sequence`` read as ``decode`` (``eval.slot_decode``,
    :func:`models.seqfake.decode_slots`; the hybrid decodings need the checkpoint's
    ``threshold``) from the logits the metrics decoded (``logits`` or ``logits_patch``)."""

    def __init__(self, model: nn.Module, decode: str = "slots", threshold: float | None = None,
                 decode_from: str = "fused") -> None:
        super().__init__()
        if decode != "slots" and threshold is None:
            raise ValueError(f"slot decode {decode!r} needs the checkpoint's threshold")
        self.model, self.decode, self.threshold = model, decode, threshold
        self.key = "logits_patch" if decode_from == "patch" else "logits"

    def forward(self, image: torch.Tensor):
        out = self.model(image)
        seq = out["sequence"] if self.decode == "slots" else decode_slots(
            {"logits": out[self.key], "slot_logits": out["slot_logits"]}, self.decode,
            float(self.threshold))
        return (torch.sigmoid(out["logits"]), out["logits"], out["u"], out["dissim"],
                out["features"], torch.softmax(out["slot_logits"], dim=-1), seq)


class DecoderOnnx(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor):
        out = self.model(image)
        step = torch.softmax(out["logits"], dim=-1)          # (B, S, L + 1)
        probs = step[:, :, 1:].amax(dim=1)                   # (B, L)
        return probs, step, out["sequence"], out["features"]


class PublishedOnnx(nn.Module):
    """The authors' SeqFakeFormer (:mod:`models.seqfakeformer_published`): probs (B, L) the
    largest softmax probability of each edit over the steps that ran, step_logits (B, 5, V),
    sequence (B, 5) int64, steps (B,) int64, features (B, d)."""

    def __init__(self, model: nn.Module, n_labels: int) -> None:
        super().__init__()
        self.model, self.n_labels = model, n_labels

    def forward(self, image: torch.Tensor):
        out = self.model(image)
        ran = (torch.arange(out["logits"].shape[1], device=image.device)[None]
               < out["steps"][:, None]).float()                      # (B, S)
        step = torch.softmax(out["logits"], dim=-1)[:, :, 1:1 + self.n_labels]
        probs = (step * ran[:, :, None]).amax(dim=1)
        return probs, out["logits"], out["sequence"], out["steps"], out["features"]


class SbiOnnx(nn.Module):
    """SBI's detector (:class:`models.sbi.SBIDetector`): probs (B, 1), logits, features."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor):
        out = self.model(image)
        return out["fake_prob"][:, None], out["logits"], out["features"]


def thesis_view(model: nn.Module, extra: dict[str, Any]) -> ExportView:
    return image_view(ThesisOnnx(model.eval()), extra)


def slots_view(model: nn.Module, extra: dict[str, Any]) -> ExportView:
    """``extra.slot_decode`` picks the sequence's decoding (checkpoints without it: slots)."""
    return image_view(SlotsOnnx(model.eval(), extra.get("slot_decode", "slots"),
                                extra.get("threshold"), extra.get("decode_from", "fused")),
                      extra)


def decoder_view(model: nn.Module, extra: dict[str, Any]) -> ExportView:
    return image_view(DecoderOnnx(model.eval()), extra)


def published_view(model: nn.Module, extra: dict[str, Any]) -> ExportView:
    return image_view(PublishedOnnx(model.eval(), len(extra["labels"])), extra)


def _unit_images(size: int, batch: int, seed: int) -> torch.Tensor:
    """(batch, 3, size, size) uniform in [0, 1): pixels / 255, what SBI's network reads."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, size, size, generator=g)


def sbi_view(model: nn.Module, extra: dict[str, Any]) -> ExportView:
    """Traced and checked on images in [0, 1] (SBI's inputs are pixels / 255, no mean or
    std), not the standard-normal images of :func:`export.view.image_view`."""
    size = int(extra["preprocess"]["size"][0])
    return ExportView(SbiOnnx(model.eval()), (_unit_images(size, 2, 0),),
                      [(_unit_images(size, 1, 1),)])
