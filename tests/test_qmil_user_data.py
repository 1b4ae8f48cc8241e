"""qMIL on a user's data: folder names as query words, a bag manifest CSV, grayscale data
kept 1-channel, and clear errors (tiny runs; the end-to-end test is
tests/test_user_folder_e2e.py)."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from PIL import Image

from training.__main__ import main as train_main
from training.config import resolve_config
from training.data.shapes import draw, write_shapes_folder
from training.methods import build_method

TINY = ["train.max_steps=2", "train.batch_size=4", "data.bags_per_query=4",
        "data.eval_bags_per_query=4", "data.size_mean=3", "data.size_std=1", "data.max_size=4",
        "data.image_size=32", "model.feat_dim=16", "model.embed_dim=8", "model.attn_dim=8",
        "model.classifier_hidden=8", "train.threads=1"]


def _method(root, *sets):
    return build_method("qmil", resolve_config("qmil", None, [f"data.root={root}", *sets]))


def test_folder_names_are_the_query_words(tmp_path):
    write_shapes_folder(tmp_path, ("circle", "square", "star"), per_class=3, size=16,
                        layout="tree")
    (tmp_path / "square").rename(tmp_path / "Ice_cream")       # underscores read as spaces
    (tmp_path / "star").rename(tmp_path / "t-shirt")           # hyphens too; GloVe's t-shirt
    m = _method(tmp_path)
    assert m.format == "image_folder" and m.class_names == ["ice cream", "circle", "t shirt"]  # sorted folder names
    assert m.spec.size == (96, 96) and m.spec.channels == 3 and m.unseen == []   # user_data
    from runtime.words import get_word_vectors

    wv = get_word_vectors()
    np.testing.assert_allclose(m.query_vectors[0].numpy(), wv.lookup("ice cream"), atol=1e-6)
    assert wv.tokens("t shirt") == ["t-shirt"]


def test_names_without_a_word_vector_are_listed_with_suggestions(tmp_path):
    write_shapes_folder(tmp_path, ("circle", "square", "star"), per_class=2, size=16,
                        layout="tree")
    (tmp_path / "square").rename(tmp_path / "sqaure")
    (tmp_path / "star").rename(tmp_path / "zzqxv_blob")
    with pytest.raises(ValueError) as info:
        _method(tmp_path)
    msg = str(info.value)
    assert msg.startswith("2 folder names have no word vector")
    assert re.search(r"'sqaure' \(close known words: [^)]*\bsquare\b", msg)
    assert "'zzqxv blob'" in msg and "'zzqxv' has no vector" in msg


def _manifest(root, gray: bool) -> None:
    rng = np.random.default_rng(0)
    rows = ["bag_id,path,labels"]
    for b in range(12):
        shapes = [("circle", "square", "triangle")[int(k)] for k in rng.integers(0, 3, 3)]
        for i, s in enumerate(shapes):
            im = Image.fromarray(draw(s, 24, rng))
            (root / "img").mkdir(exist_ok=True)
            im.convert("L").save(root / "img" / f"{b}_{i}.png") if gray else \
                im.save(root / "img" / f"{b}_{i}.png")
            rows.append(f"b{b},img/{b}_{i}.png,{';'.join(sorted(set(shapes))) if i == 0 else ''}")
    (root / "bags.csv").write_text("\n".join(rows) + "\n")


def test_a_bag_manifest_trains_and_grayscale_stays_one_channel(tmp_path):
    _manifest(tmp_path, gray=True)
    art = tmp_path / "art"
    assert train_main(["qmil", "--data", str(tmp_path / "bags.csv"), "--artifacts", str(art),
                       "--no-progress", *[x for s in TINY for x in ("--set", s)]]) == 0
    ck = torch.load(art / "runs/qmil/checkpoint.pt", weights_only=True)
    ex = ck["extra"]
    assert ex["labels"] == ["circle", "square", "triangle"]
    assert ex["preprocess"]["channels"] == 1 and ex["preprocess"]["size"] == [32, 32]
    assert ck["model_spec"]["kwargs"]["in_chans"] == 1
    assert ex["data_source"] == {"format": "bag_csv", "root": str(tmp_path / "bags.csv"),
                                 "bags": 12, "skipped": 0, "dropped_bags": 0}
    assert "bag_acc" in ck["metrics"] and "att_acc" not in ck["metrics"]  # no instance classes
    m = build_method("qmil", ck["config"])
    bags = m.train_bags()
    # each bag: its labels (positive) and as many other words as there are (negative)
    holds = {tuple(m._manifest.members[b]): set(m._manifest.labels[b]) for b in range(12)}
    for row, q, y in zip(bags.indices, bags.query, bags.label):
        assert (int(q) in holds[tuple(row[row >= 0])]) == bool(y)
    assert 0 < (bags.label == 0).sum() <= (bags.label == 1).sum()
    items, labels = m.calibration_items("test")
    assert len(items) == len(labels) and items[0]["images"].shape[1:] == (32, 32)
    with pytest.raises(ValueError, match="unseen_classes"):
        _method(tmp_path / "bags.csv", "data.user_data.unseen_classes=[circle]")


def test_a_users_folder_takes_model_user_data_for_keys_left_at_their_defaults(tmp_path):
    """tau: 1.0 on a user's folder (model.user_data), the thesis' 0.5 on the built-in data,
    a value set by the user kept, and the thesis preset tau 0.5 on a folder too; the network
    is built with it and the exported state records it."""
    write_shapes_folder(tmp_path, ("circle", "square", "triangle"), per_class=3, size=16,
                        layout="tree")
    folder = _method(tmp_path)
    assert folder.model_cfg["temperature"] == 1.0 and "user_data" not in folder.model_cfg
    assert folder.build_model().temperature == 1.0
    assert folder.model_spec()["kwargs"]["temperature"] == 1.0
    builtin = build_method("qmil", resolve_config("qmil", None, []))
    assert builtin.model_cfg["temperature"] == 0.5 and "user_data" not in builtin.model_cfg
    assert _method(tmp_path, "model.temperature=0.7").model_cfg["temperature"] == 0.7
    assert _method(tmp_path, "model.user_data.temperature=0.5").build_model().temperature == 0.5
    from training.config import default_config_path

    thesis = default_config_path("qmil").parent / "thesis" / "qmil.yaml"
    preset = build_method("qmil", resolve_config("qmil", str(thesis), [f"data.root={tmp_path}"]))
    assert preset.model_cfg["temperature"] == 0.5
