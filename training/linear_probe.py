"""Linear probe: a logistic-regression layer on frozen backbone features.

``python -m training.linear_probe --checkpoint artifacts/runs/dcl/checkpoint.pt`` embeds
Fashion-MNIST train/test with the checkpoint's encoder, fits the probe on train features and
reports test top-1 (writes ``linear_probe.json`` beside the checkpoint).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F


def fit_linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor,
                     test_y: torch.Tensor, num_classes: int, epochs: int = 30,
                     batch_size: int = 512, lr: float = 1e-2, weight_decay: float = 1e-5,
                     seed: int = 0) -> dict[str, float]:
    """Train a linear classifier on frozen features; return train/test top-1.

    Features are standardised with the training mean/std first. Adam, cosine learning rate.

    Args:
        train_x: training features. Shape: (N, F).
        train_y: training labels. Shape: (N,).
        test_x: test features. Shape: (M, F).
        test_y: test labels. Shape: (M,).
        num_classes: C.

    Returns:
        ``{"linear_train_top1", "linear_test_top1"}`` in [0, 1].
    """
    g = torch.Generator().manual_seed(seed)
    mean, std = train_x.mean(0, keepdim=True), train_x.std(0, keepdim=True) + 1e-6
    xtr, xte = (train_x - mean) / std, (test_x - mean) / std
    ytr, yte = train_y.long(), test_y.long()
    head = nn.Linear(xtr.shape[1], num_classes)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        head.reset_parameters()
    opt = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=weight_decay)
    steps = epochs * max(1, (len(xtr) + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in range(epochs):
        perm = torch.randperm(len(xtr), generator=g)
        for i in range(0, len(xtr), batch_size):
            idx = perm[i:i + batch_size]
            loss = F.cross_entropy(head(xtr[idx]), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    with torch.no_grad():
        acc_tr = (head(xtr).argmax(1) == ytr).float().mean().item()
        acc_te = (head(xte).argmax(1) == yte).float().mean().item()
    return {"linear_train_top1": acc_tr, "linear_test_top1": acc_te}


def probe_checkpoint(path: str | Path, epochs: int = 30, device: str = "cpu") -> dict[str, float]:
    """Linear probe of a DCL checkpoint on Fashion-MNIST (train -> test)."""
    from runtime.preprocess import PreprocessSpec
    from training.checkpoint import load_trained
    from training.data.fashion_mnist import load_fashion_mnist
    from training.metrics.embed import embed_tensor, prepare

    model, ckpt = load_trained(path)
    spec = PreprocessSpec.from_dict(ckpt["extra"]["preprocess"])
    dev = torch.device(device)
    model.to(dev)
    tr, te = load_fashion_mnist("train"), load_fashion_mnist("test")
    ftr = embed_tensor(model, prepare(tr.images, spec), dev, normalized=False)
    fte = embed_tensor(model, prepare(te.images, spec), dev, normalized=False)
    return fit_linear_probe(ftr, torch.from_numpy(tr.labels), fte, torch.from_numpy(te.labels),
                            len(tr.class_names), epochs=epochs)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.linear_probe", description=__doc__)
    p.add_argument("--checkpoint", required=True, help="a dcl run's checkpoint.pt")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    t0 = time.time()
    try:
        res = probe_checkpoint(args.checkpoint, args.epochs, args.device)
    except (FileNotFoundError, KeyError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    res["seconds"] = round(time.time() - t0, 1)
    from runtime.artifacts import write_json_atomic

    write_json_atomic(Path(args.checkpoint).parent / "linear_probe.json", res)
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    from runtime.cli import run_main

    raise SystemExit(run_main(main))
