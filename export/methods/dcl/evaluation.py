"""DCL's headline test metric through an exported encoder (fp32 or int8)."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from training.metrics.knn import knn_accuracy


def knn_top1(model: Any, plugin: Any) -> tuple[float, int]:
    """Weighted kNN top-1 of the training evaluation (same gallery and test subsets, k and
    temperature: ``plugin.knn_top1``), with the embeddings (N, D) computed by ``model``
    (:class:`runtime.engine.OnnxModel`). Returns (knn_top1, test images)."""
    d = plugin._eval_tensors()  # the prepared subsets training's knn_top1 uses
    bs = int(plugin.eval_cfg["batch_size"])

    def embed(x: torch.Tensor) -> torch.Tensor:
        a = x.numpy()
        return torch.from_numpy(np.concatenate(
            [model.run({"image": a[i:i + bs]})["embedding"] for i in range(0, len(a), bs)]))

    acc = knn_accuracy(embed(d["test_x"]), d["test_y"], embed(d["gallery_x"]), d["gallery_y"],
                       num_classes=plugin.num_classes,
                       k=min(int(plugin.eval_cfg["k"]), len(d["gallery_y"])),
                       temperature=float(plugin.eval_cfg["temperature"]))
    return acc, int(len(d["test_y"]))
