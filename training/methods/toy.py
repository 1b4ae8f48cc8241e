"""A toy regression method that exercises the engine (resume, DDP) in tests."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from training.methods.base import Method


class ToyMethod(Method):
    name = "toy"

    def model_spec(self) -> dict[str, Any]:
        return {"name": "toy_regressor", "kwargs": {"in_dim": 8, "hidden": 16,
                                                    "dropout": float(self.cfg["dropout"])}}

    def train_dataset(self) -> TensorDataset:
        g = torch.Generator().manual_seed(123)
        x = torch.randn(int(self.cfg["n"]), 8, generator=g)
        y = x @ torch.linspace(-1, 1, 8).unsqueeze(1) + 0.1 * torch.randn(len(x), 1, generator=g)
        return TensorDataset(x, y)

    def loss(self, model: nn.Module, batch: Any, device: torch.device
             ) -> tuple[torch.Tensor, dict[str, float]]:
        x, y = (t.to(device) for t in batch)
        if self.cfg["step_sleep"]:  # lets the fault tests kill a run mid-epoch
            import time

            time.sleep(float(self.cfg["step_sleep"]))
        noise = torch.randn_like(x) * float(self.cfg["input_noise"])  # uses the RNG
        return F.mse_loss(model(x + noise), y), {}

    def evaluate(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        ds = self.train_dataset()
        with torch.no_grad():
            return {"mse": float(F.mse_loss(model(ds.tensors[0].to(device)),
                                            ds.tensors[1].to(device)))}


def build(cfg: dict[str, Any]) -> ToyMethod:
    return ToyMethod(cfg["toy"])
