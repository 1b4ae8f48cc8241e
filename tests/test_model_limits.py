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


def test_the_card_of_a_users_qmil_gives_the_values_its_run_used(tmp_path):
    """A user's folder run stores the YAML's values (image_size 28, temperature 0.5) with
    ``user_data`` beside them; its card shows what the run used (96 px, tau 1.0), and a
    default-data run's card shows the stored values unchanged."""
    from training.config import resolve_config

    desc = get_method("qmil")
    summary = {"steps": 3, "train_seconds": 1.0, "device": "cpu", "metrics": {"bag_acc": 0.5}}
    cfg = resolve_config("qmil", None, [f"data.root={tmp_path}"])
    mine = {"extra": {"data_source": {"format": "image_folder"}, "dataset": "image folder x"}}
    text = "\n".join(card("mine", desc, summary, cfg, mine))
    data_line = next(ln for ln in text.splitlines() if ln.startswith("- **Data**"))
    assert "image_size 96" in data_line and "image_size 28" not in data_line
    assert "- **Model on a user's data** (`model.user_data`): temperature 1.0 " \
           "(the default data's: 0.5)" in text
    own = resolve_config("qmil", None, [f"data.root={tmp_path}", "model.temperature=0.7"])
    own_line = next(ln for ln in card("mine", desc, summary, own, mine)
                    if ln.startswith("- **Model on a user's data**"))
    assert "temperature" not in own_line and "encoder mobilenetv2_100" in own_line
    default = "\n".join(card("qmil", desc, summary, resolve_config("qmil", None, []),
                             {"extra": {"data_source": {"format": "builtin"}}}))
    assert "image_size 28" in default and "Model on a user's data" not in default
