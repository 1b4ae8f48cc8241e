"""A SeqFakeFormer-style baseline (Shao et al., ECCV 2022) for the Chapter 5 ablation.

Same backbone + FPN as :mod:`models.seqfake`; the spatial tokens (with a learnable
positional embedding) go through a transformer encoder, and an autoregressive transformer
decoder predicts the manipulation sequence slot by slot over the vocabulary
{0 = no manipulation, 1..L, SOS = L + 1}. Training uses teacher forcing (input
``[SOS, y_1, .., y_{S-1}]``, target ``[y_1, .., y_S]``, cross-entropy per slot); inference
decodes greedily for S = 5 steps (a fixed, unrolled loop). This is a re-implementation of
the idea at this project's scale, not the authors' code or configuration.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.registry import register_model
from models.seqfake import EncoderLayer, backbone_and_fpn


class _MHA(nn.Module):
    """Multi-head attention with plain matmuls. Shapes: q (B, T, d), kv (B, M, d) -> (B, T, d)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.q, self.kv, self.proj = nn.Linear(dim, dim), nn.Linear(dim, 2 * dim), nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mem: torch.Tensor, mask: torch.Tensor | None = None
                ) -> torch.Tensor:
        b, t, d = x.shape
        m = mem.shape[1]
        hd = d // self.heads
        q = self.q(x).reshape(b, t, self.heads, hd).transpose(1, 2)
        kv = self.kv(mem).reshape(b, m, 2, self.heads, hd).permute(2, 0, 3, 1, 4)
        att = (q @ kv[0].transpose(-2, -1)) * self.scale
        if mask is not None:
            att = att + mask
        out = torch.softmax(att, dim=-1) @ kv[1]
        return self.proj(out.transpose(1, 2).reshape(b, t, d))


class DecoderLayer(nn.Module):
    """Pre-norm decoder layer: causal self-attention, cross-attention, MLP."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 2.0) -> None:
        super().__init__()
        self.n1, self.n2, self.n3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.self_attn, self.cross_attn = _MHA(dim, heads), _MHA(dim, heads)
        self.mlp = nn.Sequential(nn.Linear(dim, int(dim * mlp_ratio)), nn.GELU(),
                                 nn.Linear(int(dim * mlp_ratio), dim))

    def forward(self, x: torch.Tensor, mem: torch.Tensor, causal: torch.Tensor) -> torch.Tensor:
        h = self.n1(x)
        x = x + self.self_attn(h, h, causal)
        x = x + self.cross_attn(self.n2(x), mem)
        return x + self.mlp(self.n3(x))


class SeqFakeFormerNet(nn.Module):
    """CNN + FPN + transformer encoder-decoder predicting the manipulation sequence.

    Args:
        backbone: timm ResNet name or ``mobilenetv2_100``.
        num_classes: L (vocabulary 0..L plus SOS).
        slots: sequence length S (5).
        dim, heads, enc_depth, dec_depth: transformer sizes.
        img_size: input side (fixes the positional embedding).
        out_level: FPN level of the tokens.
        out_indices: backbone stages fed to the FPN.

    Forward: x (B, 3, H, W), optional ``tgt_in`` (B, S) long (teacher forcing) ->
        dict with ``logits`` (B, S, L + 1) and ``sequence`` (B, S) long (greedy argmax;
        under teacher forcing the per-slot argmax).
    """

    def __init__(self, backbone: str = "resnet18", num_classes: int = 5, slots: int = 5,
                 dim: int = 128, heads: int = 4, enc_depth: int = 1, dec_depth: int = 1,
                 img_size: int = 64, out_level: int = 0,
                 out_indices: Sequence[int] = (2, 3, 4)) -> None:
        super().__init__()
        self.num_classes, self.slots, self.sos = num_classes, slots, num_classes + 1
        self.backbone, self.fpn, stride = backbone_and_fpn(backbone, dim, out_level,
                                                           out_indices=out_indices)
        n_tok = math.ceil(img_size / stride) ** 2
        self.pos = nn.Parameter(torch.randn(1, n_tok, dim) * 0.02)
        self.encoder = nn.Sequential(*[EncoderLayer(dim, heads) for _ in range(enc_depth)])
        self.embed = nn.Embedding(num_classes + 2, dim)
        self.step_pos = nn.Parameter(torch.randn(1, slots, dim) * 0.02)
        self.decoder = nn.ModuleList(DecoderLayer(dim, heads) for _ in range(dec_depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes + 1)
        causal = torch.triu(torch.full((slots, slots), float("-inf")), diagonal=1)
        self.register_buffer("causal", causal, persistent=False)

    def memory(self, x: torch.Tensor) -> torch.Tensor:
        """Encoded image tokens (B, N, d)."""
        fmap = self.fpn(self.backbone(x))
        tok = fmap.flatten(2).transpose(1, 2) + self.pos
        return self.encoder(tok)

    def decode_step(self, mem: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        """Logits (B, T, L + 1) for decoder inputs ``tgt_in`` (B, T)."""
        t = tgt_in.shape[1]
        h = self.embed(tgt_in) + self.step_pos[:, :t]
        for layer in self.decoder:
            h = layer(h, mem, self.causal[:t, :t])
        return self.head(self.norm(h))

    def forward(self, x: torch.Tensor, tgt_in: torch.Tensor | None = None
                ) -> dict[str, torch.Tensor]:
        mem = self.memory(x)
        if tgt_in is not None:
            logits = self.decode_step(mem, tgt_in)
            return {"logits": logits, "sequence": logits.argmax(-1)}
        seq = torch.full((x.shape[0], 1), self.sos, dtype=torch.long, device=x.device)
        logits = self.decode_step(mem, seq)
        for _ in range(self.slots - 1):
            seq = torch.cat([seq, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
            logits = self.decode_step(mem, seq)
        # features (B, d): the mean encoder token, what the domain check models
        return {"logits": logits, "sequence": logits.argmax(-1), "features": mem.mean(dim=1)}


def teacher_forcing_loss(model: nn.Module, x: torch.Tensor, seq: torch.Tensor
                         ) -> torch.Tensor:
    """Cross-entropy over the S slots with teacher forcing. seq (B, S) long, 0 = NA."""
    net = model.module if hasattr(model, "module") else model
    sos = torch.full_like(seq[:, :1], net.sos)
    out = model(x, torch.cat([sos, seq[:, :-1]], dim=1))
    return F.cross_entropy(out["logits"].reshape(-1, out["logits"].shape[-1]), seq.reshape(-1))


@register_model
def seqfakeformer_resnet18(**kwargs) -> SeqFakeFormerNet:
    """SeqFakeFormer-style baseline on ResNet-18."""
    kwargs["backbone"] = "resnet18"
    return SeqFakeFormerNet(**kwargs)


@register_model
def seqfakeformer_resnet34(**kwargs) -> SeqFakeFormerNet:
    kwargs["backbone"] = "resnet34"
    return SeqFakeFormerNet(**kwargs)


@register_model
def seqfakeformer_resnet50(**kwargs) -> SeqFakeFormerNet:
    kwargs["backbone"] = "resnet50"
    return SeqFakeFormerNet(**kwargs)


@register_model
def seqfakeformer_mobilenetv2_100(**kwargs) -> SeqFakeFormerNet:
    """SeqFakeFormer-style baseline on MobileNetV2 (ImageNet weights ship offline)."""
    kwargs["backbone"] = "mobilenetv2_100"
    return SeqFakeFormerNet(**kwargs)
