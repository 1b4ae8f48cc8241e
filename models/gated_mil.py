"""Gated-attention deep MIL (Ilse, Tomczak & Welling, ICML 2018), the qMIL baseline.

One binary model per class (it has no query input). For a bag of instance features
H = (h_1..h_K) (M = 500, from the same LeNet encoder as qMIL):
    a_k = w^T (tanh(V h_k) * sigmoid(U h_k)),   V, U in R^{L x M}, L = 128,
    beta = softmax(a) over the real instances, z = sum_k beta_k h_k, logit = linear(z).

Eval forward: images (B, K, 1, 28, 28), mask bool (B, K) -> logit (B,), prob (B,),
alpha (B, K) (the unnormalised a, 0 on padding), beta (B, K) (0 on padding).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from models.qmil import build_encoder, encode_bags, masked_softmax
from models.registry import register_model


class GatedAttentionMIL(nn.Module):
    """Gated-attention MIL pooling + linear bag classifier.

    Args:
        encoder: "lenet" or a timm model name.
        feat_dim: M (500 in Ilse et al.).
        attn_dim: L (128 in Ilse et al.).
        in_chans, image_size: instance image format.
    """

    def __init__(self, encoder: str = "lenet", feat_dim: int = 500, attn_dim: int = 128,
                 in_chans: int = 1, image_size: int = 28) -> None:
        super().__init__()
        self.encoder = build_encoder(encoder, in_chans, feat_dim, image_size)
        self.attention_V = nn.Linear(feat_dim, attn_dim)
        self.attention_U = nn.Linear(feat_dim, attn_dim)
        self.attention_w = nn.Linear(attn_dim, 1)
        self.classifier = nn.Linear(feat_dim, 1)

    def forward(self, images: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """images (B, K, C, H, W), mask bool (B, K) -> logit, prob (B,), alpha, beta (B, K)."""
        mask = mask != 0
        h = encode_bags(self.encoder, images, mask, packed=self.training)   # (B, K, M)
        gate = torch.tanh(self.attention_V(h)) * torch.sigmoid(self.attention_U(h))
        alpha = self.attention_w(gate).squeeze(-1) * mask.to(h.dtype)        # (B, K)
        beta = masked_softmax(alpha, mask)
        z = torch.bmm(beta.unsqueeze(1), h).squeeze(1)                      # (B, M)
        logit = self.classifier(z).squeeze(-1)
        return {"logit": logit, "prob": torch.sigmoid(logit), "alpha": alpha, "beta": beta}


@register_model
def gated_mil_lenet(**kwargs) -> GatedAttentionMIL:
    """Gated-attention MIL (M = 500, L = 128) with the LeNet encoder."""
    return GatedAttentionMIL(**kwargs)
