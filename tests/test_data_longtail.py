"""Long-tailed subsets: counts, no mislabelled / dropped / duplicated samples, groups."""
from __future__ import annotations

import json

import numpy as np
import pytest

from training.data.fashion_mnist import ArrayDataset
from training.data.longtail import (class_balanced_indices, class_groups, class_order,
                                    longtail_profile, make_longtail)


def _balanced(n_per_class: int = 50, c: int = 5, seed: int = 0) -> ArrayDataset:
    """Shuffled balanced set; each image's pixels store its own label and index."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.repeat(np.arange(c), n_per_class)).astype(np.int64)
    images = np.zeros((len(labels), 2, 2), dtype=np.int64)
    images[:, 0, 0] = labels
    images[:, 0, 1] = np.arange(len(labels))
    return ArrayDataset(images, labels, tuple(f"c{i}" for i in range(c)))


def test_profile_is_exponential_from_head_to_tail():
    prof = longtail_profile(6000, 10, 100)
    assert prof[0] == 6000 and prof[-1] == 60
    assert all(a > b for a, b in zip(prof, prof[1:]))
    for r, n in enumerate(prof):
        assert n == int(6000 * 100 ** (-r / 9))
    assert longtail_profile(50, 5, 1) == [50] * 5


def test_subset_counts_labels_and_uniqueness():
    ds = _balanced()
    split = make_longtail(ds.labels, ratio=10, seed=3)
    sub = ds.subset(split.indices)
    # no duplicates, indices valid
    assert len(np.unique(split.indices)) == len(split.indices)
    assert split.indices.min() >= 0 and split.indices.max() < len(ds)
    # every kept image keeps its own label (pixel [0,0] stores it) and its identity
    assert (sub.images[:, 0, 0] == sub.labels).all()
    assert (sub.images[:, 0, 1] == split.indices).all()
    # per-class counts follow the profile in label order, and nothing else is dropped
    prof = longtail_profile(50, 5, 10)
    assert split.class_counts == prof
    assert np.bincount(sub.labels, minlength=5).tolist() == prof
    assert len(sub) == sum(prof)


def test_permuted_class_order_puts_other_classes_in_the_tail():
    ds = _balanced()
    split = make_longtail(ds.labels, ratio=10, order="permutation", order_seed=1, seed=0)
    prof = longtail_profile(50, 5, 10)
    assert sorted(split.order) == list(range(5)) and split.order != list(range(5))
    for rank, cls in enumerate(split.order):
        assert split.class_counts[cls] == prof[rank]
    assert np.bincount(ds.labels[split.indices], minlength=5).tolist() == split.class_counts
    assert class_order(5, "permutation", 1) == split.order  # seeded


def test_seeds_make_it_reproducible():
    ds = _balanced()
    a = make_longtail(ds.labels, ratio=10, seed=0)
    b = make_longtail(ds.labels, ratio=10, seed=0)
    c = make_longtail(ds.labels, ratio=10, seed=1)
    assert np.array_equal(a.indices, b.indices)
    assert not np.array_equal(a.indices, c.indices)
    assert a.class_counts == c.class_counts


def test_split_record_is_json():
    split = make_longtail(_balanced().labels, ratio=10, n_max=40)
    rec = json.loads(json.dumps(split.to_dict()))
    assert rec["class_counts"][0] == 40 and rec["ratio"] == 10.0
    assert rec["indices"] == split.indices.tolist()


def test_errors_are_clear():
    with pytest.raises(ValueError, match="profile needs"):
        make_longtail(_balanced(n_per_class=10).labels, ratio=10, n_max=20)
    with pytest.raises(ValueError):
        class_order(5, "random")


def test_groups_thresholds_and_boundaries():
    counts = [101, 100, 20, 19, 1000]
    assert class_groups(counts) == ["many", "medium", "medium", "few", "many"]
    fm = longtail_profile(6000, 10, 100)
    groups = class_groups(fm, many_above=1000, few_below=200)
    assert groups.count("many") == 4 and groups.count("medium") == 3 and groups.count("few") == 3
    with pytest.raises(ValueError):
        class_groups(counts, many_above=10, few_below=20)


def test_class_balanced_sampling_is_balanced():
    labels = np.array([0] * 900 + [1] * 90 + [2] * 10)
    idx = class_balanced_indices(labels, 6000, seed=0)
    freq = np.bincount(labels[idx], minlength=3) / len(idx)
    assert np.allclose(freq, 1 / 3, atol=0.03)
    assert set(idx[labels[idx] == 2].tolist()) <= set(range(990, 1000))


def test_group_thresholds_derived_from_the_counts():
    from training.data.longtail import derived_group_thresholds

    # Fashion-MNIST-LT (6000 ... 60): thirds by rank give the fixed 1000 / 200 split
    fm = longtail_profile(6000, 10, 100)
    t = derived_group_thresholds(fm)
    assert class_groups(fm, **t) == class_groups(fm, many_above=1000, few_below=200)
    # worked by hand: 7 classes, ranks 1-3 many, 4-5 medium, 6-7 few
    counts = [50, 9, 40, 3, 30, 20, 10]
    t = derived_group_thresholds(counts)
    assert t == {"many_above": 20, "few_below": 10}
    assert class_groups(counts, **t) == ["many", "few", "many", "few", "many", "medium",
                                         "medium"]
    # a user's folder of equal classes: all medium, never all "few" as 1000 / 200 would say
    assert set(class_groups([30] * 5, **derived_group_thresholds([30] * 5))) == {"medium"}
    assert class_groups([30, 12], **derived_group_thresholds([30, 12])) == ["many", "medium"]
    with pytest.raises(ValueError):
        derived_group_thresholds([])
