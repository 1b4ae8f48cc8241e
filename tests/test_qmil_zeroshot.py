"""Zero-shot by iterative queries (thesis 2.3.4) and the qMIL metrics on tiny cases."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from models.qmil import masked_softmax
from training.metrics.qmil import (attention_accuracy, attention_chance, bag_accuracy)
from training.zeroshot import iterative_query

C = 4  # classes 0, 1 seen; 2 unseen (word-similar to 0); 3 seen


class OneHotMIL(nn.Module):
    """x_k = one-hot class (read from the pixel value), alpha_k = 5 <x_k, q>,
    p = sigmoid(10 * sum_k beta_k <x_k, q> - 5)."""

    def encode(self, images, mask):
        return nn.functional.one_hot(images[..., 0, 0, 0].long(), C).float()

    def head(self, x, mask, q):
        sim = (x * q[:, None]).sum(-1)
        alpha = 5 * sim
        beta = masked_softmax(alpha / 0.5, mask)
        logit = 10 * (beta * sim).sum(-1) - 5
        return {"logit": logit, "prob": torch.sigmoid(logit), "alpha": alpha, "beta": beta}

    def forward(self, images, mask, q):
        return self.head(self.encode(images, mask), mask, q)


def _bag(classes, k=5):
    imgs = torch.zeros(1, k, 1, 28, 28)
    mask = torch.zeros(1, k, dtype=torch.bool)
    for i, c in enumerate(classes):
        imgs[0, i] = c
        mask[0, i] = True
    return imgs, mask


EYE = torch.eye(C)
UNSEEN_Q = (0.6 * EYE[2] + 0.8 * EYE[0])[None]   # "truck", close to seen "car" (class 0)
SEEN = EYE[[0, 1, 3]]


def test_iterative_query_removes_seen_distractor():
    m = OneHotMIL()
    imgs, mask = _bag([0, 1, 1])                  # holds class 0, no unseen instance
    assert float(m(imgs, mask, UNSEEN_Q)["prob"]) > 0.5      # plain query: false positive
    out = iterative_query(m, imgs, mask, UNSEEN_Q, SEEN)
    assert float(out["prob"]) < 0.5                          # IQP: correct negative
    # "0" goes under query 0; both "1"s share query 1's attention and both go
    assert out["removed"][0].tolist() == [True, True, True, False, False]
    assert not out["keep"].any()


def test_iterative_query_keeps_the_unseen_instance():
    m = OneHotMIL()
    imgs, mask = _bag([0, 2, 1, 1])
    out = iterative_query(m, imgs, mask, UNSEEN_Q, SEEN)
    assert out["keep"][0].tolist() == [False, True, False, False, False]
    assert float(out["prob"]) > 0.5 and int(out["beta"][0].argmax()) == 1
    # a seen query answered negative removes nothing
    imgs, mask = _bag([2, 2])
    out = iterative_query(m, imgs, mask, UNSEEN_Q, SEEN)
    assert out["keep"].equal(mask)


def test_metrics_hand_worked():
    prob = np.array([0.9, 0.2, 0.6, 0.4])
    label = np.array([1, 0, 0, 1])
    assert bag_accuracy(prob, label) == 0.5
    beta = np.array([[0.7, 0.3, 0], [0.5, 0.5, 0], [0.1, 0.9, 0], [0.8, 0.2, 0]])
    inst = np.array([[3, 1, -1], [1, 1, -1], [2, 2, -1], [5, 3, -1]])
    query = np.array([3, 3, 3, 3])
    mask = inst >= 0
    assert attention_accuracy(beta, inst, query, label) == 0.5          # bags 0 (hit), 3 (miss)
    assert attention_accuracy(beta, inst, query, label, prob, over="predicted") == 0.5  # 0, 2
    assert attention_chance(inst, mask, query, label) == pytest.approx(0.5)
