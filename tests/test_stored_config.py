"""A run trained before a config key existed is still exported and reported: the plug-in
is rebuilt from the stored config with today's defaults filling only the missing keys."""
from __future__ import annotations

import copy

import pytest

from training.config import resolve_config
from training.methods import plugin_for_run


@pytest.mark.parametrize("method", ["qmil", "dcl"])
def test_a_stored_config_without_a_new_key_gets_its_default(method, tmp_path):
    stored = resolve_config(method, overrides=["train.epochs=7", "data.max_size=12"]
                            if method == "qmil" else ["train.epochs=7"])
    stored["run"]["artifacts"] = "/elsewhere"
    old = copy.deepcopy(stored)
    del old["data"]["format"]  # the key appeared after the run was trained
    plugin = plugin_for_run(method, old, tmp_path)
    assert plugin.cfg["data"]["format"] == "auto"                   # today's default
    assert plugin.cfg["train"]["epochs"] == 7                        # the run's own values stay
    if method == "qmil":
        assert plugin.cfg["data"]["max_size"] == 12
    assert plugin.cfg["run"]["artifacts"] == str(tmp_path)
    assert "format" not in old["data"]  # the caller's dict is not changed


def test_a_stored_value_wins_over_todays_default(tmp_path):
    stored = resolve_config("qmil", overrides=["data.format=image_folder"])
    assert plugin_for_run("qmil", stored, tmp_path).cfg["data"]["format"] == "image_folder"
