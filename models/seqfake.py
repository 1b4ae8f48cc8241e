"""The sequential-deepfake network of thesis Chapter 5 (docs/seqfake.md, Eqs. (5.3)-(5.5)).

CNN (timm ResNet or MobileNetV2, ``features_only=True``) + a small FPN -> feature map (B, d, h, w) ->
N = h*w patch tokens, each l2-normalised (U), plus L learnable class tokens (V) -> a
transformer encoder phi. Two heads:

* patch stream f^U: conv over the (h, w) map of U~ then average pooling -> (B, L) logits;
* class-token stream f^V: one logit per class token (a linear map per token) -> (B, L).

Fused logits f = (f^U + f^V) / 2 (the inference head). The similarity matrix
S = max(U~ U~^T, 0) of the l2-normalised encoded patch tokens gives the sorted strict upper
triangle u (B, n), n = N(N-1)/2, used by the contrastive MIL loss, and a dissimilarity map
``dissim`` (B, h, w) = 1 - mean similarity of each patch to the other patches (the "where"
map the app shows).

Binary mode is ``num_classes=1`` (one class token).

Notation choices (the deviations docs/seqfake.md, Eq. (5.3) lists):
* The thesis says S is rectified "such that all of its elements are in [0, 1]", which
  holds only for unit-norm rows, so U~ is l2-normalised again after phi before S.
* A learnable positional embedding is added to U before phi (``pos_embed=True``); the thesis
  does not mention one, but the class tokens then know where each patch is. It fixes the
  input size to the one the model was built for (``img_size``).
"""
from __future__ import annotations

import math
from typing import Sequence

import timm
import torch
import torch.nn as nn
import torch.nn.functional as F

from models.registry import register_model

BACKBONES: tuple[str, ...] = ("resnet18", "resnet34", "resnet50", "mobilenetv2_100")
"""``model.backbone`` names: timm ResNets (random init unless a weights file is given) and
MobileNetV2 (its ImageNet weights ship offline: ``pretrained.weights: imagenet``)."""


class FPN(nn.Module):
    """A small top-down feature pyramid; returns the map at one pyramid level.

    Args:
        in_channels: channels of the backbone levels, finest first.
        dim: output channels d.
        out_level: which level to return (0 = finest).

    Shape: list of (B, C_i, H_i, W_i), finest first -> (B, d, H_out, W_out).
    """

    def __init__(self, in_channels: Sequence[int], dim: int, out_level: int = 0) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, dim, 1) for c in in_channels)
        self.smooth = nn.Sequential(nn.Conv2d(dim, dim, 3, padding=1), nn.BatchNorm2d(dim),
                                    nn.ReLU(inplace=True))
        self.out_level = out_level

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        x = self.lateral[-1](feats[-1])
        for i in range(len(feats) - 2, self.out_level - 1, -1):
            lat = self.lateral[i](feats[i])
            x = lat + F.interpolate(x, size=lat.shape[-2:], mode="nearest")
        return self.smooth(x)


class Attention(nn.Module):
    """Multi-head self-attention written with plain matmuls (ONNX-friendly, no fast path).

    Shape: (B, T, d) -> (B, T, d).
    """

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        qkv = self.qkv(x).reshape(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        att = torch.softmax((q @ k.transpose(-2, -1)) * self.scale, dim=-1)
        return self.proj((att @ v).transpose(1, 2).reshape(b, t, d))


class EncoderLayer(nn.Module):
    """Pre-norm transformer encoder layer. Shape: (B, T, d) -> (B, T, d)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 2.0, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.norm1(x)))
        return x + self.drop(self.mlp(self.norm2(x)))


class CrossAttention(nn.Module):
    """Multi-head attention of queries over a memory, plain matmuls (ONNX-friendly).

    Shape: q (B, T, d), mem (B, M, d) -> (B, T, d).
    """

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.q, self.kv, self.proj = nn.Linear(dim, dim), nn.Linear(dim, 2 * dim), nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mem: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        hd = d // self.heads
        q = self.q(x).reshape(b, t, self.heads, hd).transpose(1, 2)
        kv = self.kv(mem).reshape(b, mem.shape[1], 2, self.heads, hd).permute(2, 0, 3, 1, 4)
        att = torch.softmax((q @ kv[0].transpose(-2, -1)) * self.scale, dim=-1)
        return self.proj((att @ kv[1]).transpose(1, 2).reshape(b, t, d))


class SlotOrderHead(nn.Module):
    """The parallel order head (not in the thesis; docs/seqfake.md, "Parallel order head").

    S learned slot queries, one pre-norm decoder layer without a causal mask (self-attention
    among the slots, cross-attention to the encoded tokens, MLP), all slots in one pass;
    slot s predicts the component edited at step s + 1 among {0 = no edit / end, 1..L}.

    Shape: mem (B, M, d) -> logits (B, S, L + 1).
    """

    def __init__(self, dim: int, heads: int, num_classes: int, slots: int = 5,
                 mlp_ratio: float = 2.0) -> None:
        super().__init__()
        self.queries = nn.Parameter(torch.randn(1, slots, dim) * 0.02)
        self.n1, self.n2, self.n3, self.norm = (nn.LayerNorm(dim) for _ in range(4))
        self.self_attn, self.cross_attn = Attention(dim, heads), CrossAttention(dim, heads)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.head = nn.Linear(dim, num_classes + 1)

    def forward(self, mem: torch.Tensor) -> torch.Tensor:
        h = self.queries.expand(mem.shape[0], -1, -1)
        h = h + self.self_attn(self.n1(h))
        h = h + self.cross_attn(self.n2(h), mem)
        h = h + self.mlp(self.n3(h))
        return self.head(self.norm(h))


def slot_sequence(slot_logits: torch.Tensor) -> torch.Tensor:
    """Per-slot argmax, cut at the first "end" (0): every slot after it is 0.

    Shape: (B, S, L + 1) -> (B, S) long, ids 1..L in order, 0 = padding.
    """
    tok = slot_logits.argmax(-1)
    ended = torch.cumsum((tok == 0).long(), dim=1) > 0
    return tok.masked_fill(ended, 0)


SLOT_DECODES = ("slots", "hybrid_position", "hybrid_assign")
"""``eval.slot_decode``: how a slot model's ``sequence`` is read (:func:`decode_slots`)."""


def _detected(logits: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused probabilities sigmoid(logits) (B, L) and the detected mask (prob > threshold)."""
    prob = torch.sigmoid(logits)
    return prob, prob > threshold


def _order_detected(key: torch.Tensor, det: torch.Tensor, slots: int) -> torch.Tensor:
    """Detected components sorted by increasing ``key`` (B, L), as 1-based ids in S slots
    (0 = padding); undetected components are dropped."""
    b, n = key.shape
    big = torch.full_like(key, float(slots + n + 10))
    order = torch.argsort(torch.where(det, key, big), dim=1)
    keep = torch.gather(det, 1, order)
    tok = (order + 1) * keep.long()
    k = min(slots, n)
    tok = tok[:, :k]
    if k < slots:
        tok = torch.cat([tok, tok.new_zeros(b, slots - k)], dim=1)
    return tok


def hybrid_position_sequence(logits: torch.Tensor, slot_logits: torch.Tensor,
                             threshold: float) -> torch.Tensor:
    """The detected set of the fused probabilities (sigmoid(logits) > threshold, as the
    ranking reads it) ordered by the slot head: component c sits at its expected slot
    E[s | c] = sum_s s p_s(c) / sum_s p_s(c) (p_s the slot softmax over the L + 1 classes,
    c's column); ties go to the higher fused probability.

    Shape: logits (B, L), slot_logits (B, S, L + 1) -> (B, S) long, 0 = padding.
    """
    prob, det = _detected(logits, threshold)
    p = torch.softmax(slot_logits, dim=-1)[..., 1:]                        # (B, S, L)
    steps = torch.arange(1, p.shape[1] + 1, dtype=p.dtype, device=p.device).view(1, -1, 1)
    pos = (p * steps).sum(1) / p.sum(1).clamp_min(1e-12)                   # (B, L)
    return _order_detected(pos - 1e-4 * prob, det, slot_logits.shape[1])


def _injections(n: int, slots: int) -> torch.Tensor:
    """Every assignment of n components to distinct slots (n <= slots): (P, n) slot ids."""
    from itertools import permutations

    return torch.tensor(list(permutations(range(slots), n)), dtype=torch.long)


def hybrid_assign_sequence(logits: torch.Tensor, slot_logits: torch.Tensor,
                           threshold: float) -> torch.Tensor:
    """The detected set of the fused probabilities ordered by the assignment of detected
    components to distinct slots that maximises sum log p_s(c) (the Hungarian optimum,
    found exactly by enumerating the S!/(S-L)! assignments, 120 for S = L = 5); the
    detected components in the order of their slots.

    Shape: logits (B, L), slot_logits (B, S, L + 1) -> (B, S) long, 0 = padding.
    """
    prob, det = _detected(logits, threshold)
    s, n = slot_logits.shape[1], logits.shape[1]
    if n > s:
        return hybrid_position_sequence(logits, slot_logits, threshold)
    logp = torch.log_softmax(slot_logits, dim=-1)[..., 1:].transpose(1, 2)  # (B, L, S)
    perms = _injections(n, s).to(logits.device)                             # (P, L)
    comp = torch.arange(n, device=logits.device).view(1, -1).expand_as(perms)
    score = (logp[:, comp, perms] * det.unsqueeze(1).to(logp.dtype)).sum(-1)  # (B, P)
    best = perms[score.argmax(dim=1)]                                       # (B, L)
    return _order_detected(best.to(prob.dtype) - 1e-4 * prob, det, s)


def decode_slots(out: dict[str, torch.Tensor], how: str, threshold: float) -> torch.Tensor:
    """A slot model's sequence (B, S) read as ``how`` (:data:`SLOT_DECODES`): ``slots`` the
    slot argmaxes (:func:`slot_sequence`), ``hybrid_position`` / ``hybrid_assign`` the fused
    detected set ordered by the slots."""
    if how == "slots":
        return slot_sequence(out["slot_logits"])
    if how == "hybrid_position":
        return hybrid_position_sequence(out["logits"], out["slot_logits"], threshold)
    if how == "hybrid_assign":
        return hybrid_assign_sequence(out["logits"], out["slot_logits"], threshold)
    raise ValueError(f"slot decode must be one of {SLOT_DECODES}, got {how!r}")


SLOT_MEMORIES = ("encoded", "encoded_raw")
"""``model.slot_memory``: the tokens the slot head attends to (see :class:`SeqFakeNet`)."""
ORDER_HEADS = ("rank", "slots")
"""``model.order_head``: rank = the thesis' probability ranking; slots = :class:`SlotOrderHead`."""


def backbone_and_fpn(backbone: str, dim: int, out_level: int, in_chans: int = 3,
                     out_indices: Sequence[int] = (2, 3, 4)) -> tuple[nn.Module, FPN, int]:
    """A timm ``features_only`` backbone and an FPN on it.

    ``backbone``: a ResNet (:data:`BACKBONES`) or ``mobilenetv2_100``, whose ImageNet weights
    ship in a package (:mod:`training.imagenet`). ``out_indices`` picks the stages fed to the
    FPN, the same strides for both: (2, 3, 4) = strides 8, 16, 32; (2, 3) = strides 8, 16
    (the blocks after the last tap are not built: a lighter network). MobileNetV2's taps are
    the ends of its stride-8, -16 and -32 stages (``blocks.2``, ``blocks.4``, ``blocks.6``:
    32, 96 and 320 channels). Returns the backbone, the FPN and the stride of the FPN output.
    """
    if backbone not in BACKBONES:
        raise ValueError(f"model.backbone={backbone!r}: expected one of {', '.join(BACKBONES)}")
    net = timm.create_model(backbone, pretrained=False, features_only=True,
                            out_indices=tuple(out_indices), in_chans=in_chans)
    _drop_blocks_after_last_tap(net)
    fpn = FPN(net.feature_info.channels(), dim, out_level)
    return net, fpn, net.feature_info.reduction()[out_level]


def _drop_blocks_after_last_tap(net: nn.Module) -> None:
    """Remove the blocks of a timm MobileNet-style feature network (``blocks``, taps named
    ``blocks.<i>``) that come after its last tap: they would run without feeding the FPN
    (timm's ResNet feature networks already stop at their last tap)."""
    blocks = getattr(net, "blocks", None)
    if not isinstance(blocks, nn.Sequential):
        return
    last = max(int(name.split(".")[1]) for name in net.feature_info.module_name())
    net.blocks = blocks[: last + 1]


def pairwise_similarity(tokens: torch.Tensor) -> torch.Tensor:
    """S = max(T~ T~^T, 0) of row-l2-normalised tokens (eq. 5.4).

    Shape: (B, N, d) -> (B, N, N), entries in [0, 1].
    """
    t = F.normalize(tokens, dim=-1)
    return torch.clamp(t @ t.transpose(1, 2), min=0.0)


def upper_triangle_index(n: int) -> torch.Tensor:
    """Flat indices (into an N x N matrix) of its strict upper triangle. Shape: (N(N-1)/2,)."""
    iu = torch.triu_indices(n, n, offset=1)
    return iu[0] * n + iu[1]


def sorted_upper_triangle(s: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
    """u: the strict upper triangle of each S, sorted ascending (eq. 5.5).

    Args:
        s: (B, N, N).
        index: precomputed :func:`upper_triangle_index` (keeps ``triu_indices``, which
            ONNX lacks, out of the traced graph).

    Shape: (B, N, N) -> (B, N(N-1)/2).
    """
    n = s.shape[-1]
    if index is None:
        index = upper_triangle_index(n).to(s.device)
    flat = s.reshape(s.shape[0], n * n)
    return torch.sort(flat[:, index], dim=-1).values


def dissimilarity_map(s: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """1 - mean similarity of each token to the other tokens.

    Shape: (B, N, N) -> (B, h, w), N = h*w.
    """
    n = s.shape[-1]
    diag = torch.diagonal(s, dim1=-2, dim2=-1)
    mean_other = (s.sum(-1) - diag) / (n - 1)  # N >= 2 tokens
    return (1.0 - mean_other).reshape(s.shape[0], h, w)


class SeqFakeNet(nn.Module):
    """CNN + FPN + transformer with patch-token and class-token streams (Chapter 5).

    Args:
        backbone: a :data:`BACKBONES` name (timm ResNet or MobileNetV2).
        num_classes: L, the number of components/attributes (1 = binary mode).
        dim: token dimension d.
        depth: transformer layers (thesis: 1).
        heads: attention heads.
        img_size: input side the positional embedding is built for.
        out_level: FPN level used for tokens (0: stride 8, 1: stride 16).
        out_indices: backbone stages fed to the FPN ((2, 3, 4) or the lighter (2, 3)).
        pos_embed: add a learnable positional embedding to the patch tokens.
        dropout: dropout in the transformer.
        order_head: "rank" (the thesis: order = decreasing fused probability) or "slots"
            (adds :class:`SlotOrderHead` on the encoded tokens).
        slots: S, the slots of the slot head (the label sequence length).
        slot_memory: what the slot head attends to: "encoded" (the encoded tokens) or
            "encoded_raw" (also the FPN tokens before their l2 normalisation).

    Forward: x (B, 3, H, W) -> dict with
        ``logits`` (B, L) fused, ``logits_patch`` (B, L) f^U, ``logits_cls`` (B, L) f^V,
        ``u`` (B, n) sorted similarities, ``dissim`` (B, h, w); with the slot head also
        ``slot_logits`` (B, S, L + 1) and ``sequence`` (B, S) long (:func:`slot_sequence`).
    """

    def __init__(self, backbone: str = "resnet18", num_classes: int = 5, dim: int = 128,
                 depth: int = 1, heads: int = 4, img_size: int = 64, out_level: int = 0,
                 pos_embed: bool = True, dropout: float = 0.0,
                 out_indices: Sequence[int] = (2, 3, 4), order_head: str = "rank",
                 slots: int = 5, slot_memory: str = "encoded") -> None:
        super().__init__()
        if order_head not in ORDER_HEADS:
            raise ValueError(f"order_head must be one of {ORDER_HEADS}, got {order_head!r}")
        self.num_classes = num_classes
        self.order_head = order_head
        self.backbone, self.fpn, stride = backbone_and_fpn(backbone, dim, out_level,
                                                           out_indices=out_indices)
        self.grid = math.ceil(img_size / stride)
        n_tok = self.grid * self.grid
        self.pos = nn.Parameter(torch.zeros(1, n_tok, dim)) if pos_embed else None
        if self.pos is not None:
            nn.init.trunc_normal_(self.pos, std=0.02)
        self.register_buffer("triu_index", upper_triangle_index(n_tok), persistent=False)
        self.cls_tokens = nn.Parameter(torch.randn(1, num_classes, dim) * 0.02)
        self.encoder = nn.Sequential(*[EncoderLayer(dim, heads, dropout=dropout)
                                       for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head_patch = nn.Sequential(nn.Conv2d(dim, dim, 3, padding=1), nn.BatchNorm2d(dim),
                                        nn.ReLU(inplace=True), nn.Conv2d(dim, num_classes, 1))
        self.head_cls_w = nn.Parameter(torch.randn(num_classes, dim) * dim ** -0.5)
        self.head_cls_b = nn.Parameter(torch.zeros(num_classes))
        self.slot_head = (SlotOrderHead(dim, heads, num_classes, slots)
                          if order_head == "slots" else None)
        if slot_memory not in SLOT_MEMORIES:
            raise ValueError(f"slot_memory must be one of {SLOT_MEMORIES}, got {slot_memory!r}")
        self.slot_raw = (nn.Linear(dim, dim) if order_head == "slots"
                         and slot_memory == "encoded_raw" else None)

    def tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        """Patch tokens U (B, N, d), each l2-normalised, and the grid (h, w)."""
        return self._tokens_of(self.fpn(self.backbone(x)))

    @staticmethod
    def _tokens_of(fmap: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        b, d, h, w = fmap.shape
        return F.normalize(fmap.flatten(2).transpose(1, 2), dim=-1), h, w

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        fmap_in = self.fpn(self.backbone(x))
        u_tok, h, w = self._tokens_of(fmap_in)
        b, n_tok, d = u_tok.shape
        if self.pos is not None:
            u_tok = u_tok + self.pos
        z = torch.cat([self.cls_tokens.expand(b, -1, -1), u_tok], dim=1)
        z = self.norm(self.encoder(z))
        v_enc, u_enc = z[:, : self.num_classes], z[:, self.num_classes:]
        logits_cls = (v_enc * self.head_cls_w).sum(-1) + self.head_cls_b
        fmap = u_enc.transpose(1, 2).reshape(b, d, h, w)
        logits_patch = self.head_patch(fmap).mean(dim=(2, 3))
        s = pairwise_similarity(u_enc)
        slot = {} if self.slot_head is None else self._slot_outputs(z, fmap_in)
        return {
            **slot,
            "logits": 0.5 * (logits_patch + logits_cls),
            "logits_patch": logits_patch,
            "logits_cls": logits_cls,
            "u": sorted_upper_triangle(s, self.triu_index),
            "dissim": dissimilarity_map(s, h, w),
            # features (B, d): the pooled feature map before the tokens are normalised,
            # the penultimate features the domain check models (runtime/domain.py)
            "features": fmap_in.mean(dim=(2, 3)),
        }

    def _slot_outputs(self, z: torch.Tensor, fmap_in: torch.Tensor) -> dict[str, torch.Tensor]:
        """The slot head's ``slot_logits`` (B, S, L + 1) and ``sequence`` (B, S), attending
        to the encoded tokens z and, with ``slot_memory="encoded_raw"``, to the FPN tokens
        before their l2 normalisation (projected, plus the positional embedding)."""
        mem = z
        if self.slot_raw is not None:
            raw = self.slot_raw(fmap_in.flatten(2).transpose(1, 2))
            mem = torch.cat([z, raw if self.pos is None else raw + self.pos], dim=1)
        logits = self.slot_head(mem)
        return {"slot_logits": logits, "sequence": slot_sequence(logits)}


OUTPUT_NAMES: tuple[str, ...] = ("logits", "logits_patch", "logits_cls", "u", "dissim", "features")
"""The forward's dict keys in a fixed order (for ONNX export)."""


def _make(backbone: str, **kwargs) -> SeqFakeNet:
    kwargs["backbone"] = backbone  # the factory name decides the backbone
    return SeqFakeNet(**kwargs)


@register_model
def seqfake_resnet18(**kwargs) -> SeqFakeNet:
    """SeqFakeNet on ResNet-18 (the default on a CPU)."""
    return _make("resnet18", **kwargs)


@register_model
def seqfake_resnet34(**kwargs) -> SeqFakeNet:
    """SeqFakeNet on ResNet-34 (thesis Table 5.1)."""
    return _make("resnet34", **kwargs)


@register_model
def seqfake_resnet50(**kwargs) -> SeqFakeNet:
    """SeqFakeNet on ResNet-50 (thesis Tables 5.1, 5.3)."""
    return _make("resnet50", **kwargs)


@register_model
def seqfake_mobilenetv2_100(**kwargs) -> SeqFakeNet:
    """SeqFakeNet on MobileNetV2 (its ImageNet weights ship offline; the default for a
    user's Seq-DeepFake folder)."""
    return _make("mobilenetv2_100", **kwargs)
