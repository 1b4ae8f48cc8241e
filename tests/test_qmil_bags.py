"""The qMIL bag sampler: balance, sizes, masking, labels (eq. 2.1), seen/unseen split."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from training.data.bags import (PAD, BagDataset, bag_images, sample_bags, sample_bag_sizes,
                                trim_collate)

LABELS = np.repeat(np.arange(10), 30)  # 300 images, 30 per class
IMAGES = (np.arange(300)[:, None, None] % 256 * np.ones((1, 28, 28))).astype(np.uint8)


@pytest.mark.parametrize("pos_fraction", [0.5, 0.25])
def test_balance_and_labels(pos_fraction):
    seen = [0, 1, 2, 3, 4, 5, 6]
    b = sample_bags(LABELS, seen, 40, instance_classes=seen, pos_fraction=pos_fraction, seed=1)
    assert len(b) == 7 * 40
    for q in seen:
        rows = b.query == q
        assert rows.sum() == 40
        assert b.label[rows].sum() == round(40 * pos_fraction)
    # eq. 2.1 from the instance labels, and instance labels agree with the image pool
    has_q = ((b.instance_labels == b.query[:, None]) & b.mask).any(1)
    np.testing.assert_array_equal(has_q.astype(int), b.label)
    np.testing.assert_array_equal(LABELS[b.indices[b.mask]], b.instance_labels[b.mask])
    # only seen classes appear
    assert set(np.unique(b.instance_labels[b.mask])) <= set(seen)


def test_mask_and_padding():
    b = sample_bags(LABELS, [0, 1], 50, max_size=12, min_size=3, seed=0)
    assert b.indices.shape == (100, 12)
    assert (b.sizes >= 3).all() and (b.sizes <= 12).all()
    np.testing.assert_array_equal(b.mask, b.indices != PAD)
    np.testing.assert_array_equal(b.instance_labels[~b.mask], PAD)
    # real instances first, padding after
    for row, k in zip(b.mask, b.sizes):
        assert row[:k].all() and not row[k:].any()


def test_sizes_follow_normal_10_2():
    s = sample_bag_sizes(np.random.default_rng(0), 20000, 10, 2, 2, 16)
    assert abs(s.mean() - 10) < 0.05 and abs(s.std() - 2) < 0.1
    assert s.min() >= 2 and s.max() <= 16


def test_seeded():
    a = sample_bags(LABELS, [3, 4], 20, seed=5)
    b = sample_bags(LABELS, [3, 4], 20, seed=5)
    c = sample_bags(LABELS, [3, 4], 20, seed=6)
    np.testing.assert_array_equal(a.indices, b.indices)
    assert not np.array_equal(a.indices, c.indices)


def test_dataset_hides_instance_labels_and_zero_pads():
    b = sample_bags(LABELS, [0], 4, seed=0, max_size=16)
    ds = BagDataset(b, IMAGES)
    item = ds[0]
    assert set(item) == {"images", "mask", "query", "label"}
    k = int(b.sizes[0])
    assert item["images"].shape == (16, 1, 28, 28)
    assert torch.all(item["images"][k:] == 0) and not torch.all(item["images"][:k] == 0)
    x = bag_images(IMAGES, b.indices[:1])
    assert x.shape == (1, 16, 1, 28, 28)
    batch = trim_collate([ds[i] for i in range(4)])
    assert batch["images"].shape[1] == batch["mask"].shape[1] == int(b.sizes[:4].max())


def test_bad_arguments():
    with pytest.raises(ValueError):
        sample_bags(LABELS, [0], 4, instance_classes=[1, 2])  # query not among instances
    with pytest.raises(ValueError):
        sample_bags(LABELS, [0], 4, pos_fraction=1.5)
