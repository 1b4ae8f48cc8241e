"""A value the user gives wins over a folder's ``user_data`` default, even one equal to the
method's YAML default (training.config.pin_user_data, training.data.sources.with_user_defaults)."""
from __future__ import annotations

import yaml

from training.config import load_config, default_config_path, resolve_config
from training.data.sources import with_user_defaults


def _model(cfg: dict) -> dict:
    return with_user_defaults("seqfake", cfg["model"], section="model")


def test_a_folder_gets_its_user_data_values(tmp_path):
    yaml_default = load_config(default_config_path("seqfake"))["model"]
    cfg = resolve_config("seqfake", overrides=[f"data.root={tmp_path}"])
    assert _model(cfg)["backbone"] == yaml_default["user_data"]["backbone"] != \
        yaml_default["backbone"]


def test_set_to_the_yaml_default_is_kept_on_a_folder(tmp_path):
    yaml_default = load_config(default_config_path("seqfake"))["model"]["backbone"]
    cfg = resolve_config("seqfake", overrides=[f"data.root={tmp_path}",
                                               f"model.backbone={yaml_default}"])
    assert _model(cfg)["backbone"] == yaml_default
    data = with_user_defaults("seqfake", cfg["data"])        # a key not given keeps its overlay
    assert data["img_size"] == cfg["data"]["user_data"]["img_size"]


def test_a_config_file_value_is_kept_on_a_folder(tmp_path):
    size = load_config(default_config_path("qmil"))["data"]["image_size"]
    f = tmp_path / "mine.yaml"
    f.write_text(yaml.safe_dump({"data": {"image_size": size}}))
    cfg = resolve_config("qmil", f, [f"data.root={tmp_path}"])
    assert with_user_defaults("qmil", cfg["data"])["image_size"] == size
    plain = resolve_config("qmil", None, [f"data.root={tmp_path}"])
    assert with_user_defaults("qmil", plain["data"])["image_size"] != size


def test_the_face_model_named_on_a_folder_keeps_its_own_input_size(tmp_path):
    from tests.test_seqfake_backbone import write_fixture
    from training.methods import build_method

    root = write_fixture(tmp_path / "seq", n=2)
    yaml_cfg = load_config(default_config_path("seqfake"))
    own = build_method("seqfake", resolve_config("seqfake", overrides=[
        f"data.root={root}", f"model.backbone={yaml_cfg['model']['backbone']}"]))
    assert own.model_spec()["name"] == f"seqfake_{yaml_cfg['model']['backbone']}"
    assert own.spec.size[0] == yaml_cfg["data"]["img_size"] != \
        yaml_cfg["data"]["user_data"]["img_size"]
    folder = build_method("seqfake", resolve_config("seqfake", overrides=[f"data.root={root}"]))
    assert folder.spec.size[0] == yaml_cfg["data"]["user_data"]["img_size"]
