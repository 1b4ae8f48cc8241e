"""A model card's limits are its run's: the default data's facts for a default run, and no
claim about Fashion-MNIST or generated faces for a model trained on a user's folder."""
from __future__ import annotations

import pytest

from export.model_cards import card
from methods import get_method


@pytest.mark.parametrize("method", ["abcnorm", "qmil", "dcl", "seqfake"])
def test_limits_follow_the_runs_data(method):
    desc = get_method(method)
    assert desc.limits_for({"root": None}) == desc.limits
    assert desc.limits_for(None) == desc.limits
    mine = desc.limits_for({"root": "/data/my_photos"}, "image folder my_photos, 64 x 64 colour")
    assert "my_photos" in mine and mine != desc.limits
    for default_fact in ("Fashion-MNIST", "generated faces", "28 x 28"):
        assert default_fact not in mine


def test_the_card_of_a_users_model_names_its_data_not_the_default():
    desc = get_method("qmil")
    summary = {"steps": 3, "train_seconds": 1.0, "device": "cpu", "metrics": {"bag_acc": 0.5}}
    entry = {"extra": {"dataset": "image folder shapes (split), 64 x 64 colour"}}
    text = "\n".join(card("mine", desc, summary, {"data": {"root": "/x/shapes"}}, entry))
    limits = next(ln for ln in text.splitlines() if ln.startswith("Limits:"))
    assert "image folder shapes" in limits and "Fashion-MNIST" not in limits
    default = "\n".join(card("qmil", desc, summary, {"data": {"root": None}}, {}))
    assert desc.limits in default
