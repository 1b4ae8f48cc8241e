"""Weighted kNN classifier on embeddings (InstDisc, Wu et al. 2018; as in SimCLR/DCL repos).

For a query q and its k nearest bank vectors by cosine similarity s_1..s_k with labels
c_1..c_k, class c scores sum_{m: c_m = c} exp(s_m / T); the prediction is the top class.
Thesis section 3.4: k = 200, T = 0.1 (docs/dcl.md, "Equations").
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def knn_scores(query: torch.Tensor, bank: torch.Tensor, bank_labels: torch.Tensor,
               num_classes: int, k: int = 200, temperature: float = 0.1,
               chunk: int = 1024) -> torch.Tensor:
    """Class scores of the weighted kNN vote.

    Args:
        query: query embeddings (normalised here). Shape: (Q, D).
        bank: reference embeddings (normalised here). Shape: (N, D).
        bank_labels: int labels of the bank. Shape: (N,).
        num_classes: C.
        k: neighbours (capped at N).
        temperature: T of the exp(s / T) weights.
        chunk: queries per matrix product (memory bound).

    Returns:
        Shape: (Q, C).
    """
    query, bank = F.normalize(query.float(), dim=1), F.normalize(bank.float(), dim=1)
    bank_labels = bank_labels.to(query.device).long()
    k = min(int(k), bank.shape[0])
    out = []
    for start in range(0, query.shape[0], chunk):
        sim = query[start:start + chunk] @ bank.T  # (q, N)
        top_sim, top_idx = sim.topk(k, dim=1)
        weights = torch.exp(top_sim / temperature)
        votes = torch.zeros(sim.shape[0], num_classes, device=query.device)
        votes.scatter_add_(1, bank_labels[top_idx], weights)
        out.append(votes)
    return torch.cat(out) if out else torch.zeros(0, num_classes)


def knn_predict(query: torch.Tensor, bank: torch.Tensor, bank_labels: torch.Tensor,
                num_classes: int, k: int = 200, temperature: float = 0.1) -> torch.Tensor:
    """Predicted class per query. Shapes: (Q, D), (N, D), (N,) -> (Q,)."""
    return knn_scores(query, bank, bank_labels, num_classes, k, temperature).argmax(dim=1)


def knn_accuracy(query: torch.Tensor, query_labels: torch.Tensor, bank: torch.Tensor,
                 bank_labels: torch.Tensor, num_classes: int, k: int = 200,
                 temperature: float = 0.1) -> float:
    """Top-1 accuracy of the weighted kNN classifier, in [0, 1]."""
    pred = knn_predict(query, bank, bank_labels, num_classes, k, temperature)
    return float((pred.cpu() == query_labels.cpu().long()).float().mean())
