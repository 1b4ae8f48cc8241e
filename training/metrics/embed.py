"""Embed images with a contrastive encoder through the shared preprocessing."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn as nn

from runtime.preprocess import PreprocessSpec, to_input


def prepare(images: np.ndarray | Sequence[np.ndarray], spec: PreprocessSpec) -> torch.Tensor:
    """uint8 images (N, H, W[, C]) -> normalised float tensor (N, C, H', W') via ``to_input``."""
    return torch.from_numpy(to_input(list(images), spec))


@torch.no_grad()
def embed_tensor(model: nn.Module, x: torch.Tensor, device: torch.device,
                 batch_size: int = 512, normalized: bool = True) -> torch.Tensor:
    """Backbone embeddings of prepared inputs, in eval mode.

    Args:
        model: a :class:`models.dcl.ContrastiveEncoder` (or a DDP wrapper of one).
        x: prepared inputs. Shape: (N, C, H, W).
        device: where to run.
        batch_size: images per forward pass.
        normalized: l2-normalised (``embed``) or raw backbone features (``features``).

    Returns:
        Shape: (N, F), on the CPU.
    """
    net = getattr(model, "module", model)
    was_training = net.training
    net.eval()
    fn = net.embed if normalized else net.features
    out = [fn(x[i:i + batch_size].to(device)).float().cpu() for i in range(0, len(x), batch_size)]
    net.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, net.feature_dim)
