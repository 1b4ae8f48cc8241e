"""App examples: component faces and attribute faces go to their own folders."""
from __future__ import annotations

import numpy as np
from PIL import Image

from methods.seqfake.assets import write_examples
from training.data import faces_synth


def test_face_examples_per_task(tmp_path):
    data = tmp_path / "data" / "seqfake"
    comp = faces_synth.generate(data, 4, 1, 3, seed=0, verbose=False)
    attr = faces_synth.generate(data, 4, 1, 3, seed=0, verbose=False, task="attributes")
    (tmp_path / "examples" / "faces").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "examples" / "faces" / "99_stale.png")
    write_examples(tmp_path)
    for folder, root in (("faces", comp), ("faces_attr", attr)):
        files = sorted((tmp_path / "examples" / folder).glob("*.png"))
        assert len(files) == 3, folder                          # the stale file is gone
        expected = sorted((root / "images" / "test").rglob("*.jpg"), key=lambda p: p.name)
        for f, src in zip(files, expected):
            assert Image.open(f).format == "PNG"
            assert np.array_equal(np.asarray(Image.open(f)), np.asarray(Image.open(src).convert("RGB")))


def test_face_examples_are_named_with_their_true_sequence(tmp_path):
    import csv

    from app.ui_common import example_truth
    from training.data.seqdeepfake import COMPONENT_NAMES

    data = tmp_path / "data" / "seqfake"
    comp = faces_synth.generate(data, 4, 1, 6, seed=0, verbose=False)
    write_examples(tmp_path)
    rows = list(csv.DictReader(open(comp / "annotations" / "test.csv")))
    files = sorted((tmp_path / "examples" / "faces").glob("*.png"))
    assert len(files) == 6
    for f, row in zip(files, rows):
        ids = [int(v) for v in row["label"].strip("[]").split(",") if int(v) > 0]
        truth = " ".join(COMPONENT_NAMES[i - 1] for i in ids) if ids else "real"
        assert example_truth(f) == truth, (f.name, row["label"])
    assert example_truth("upload.png") is None and example_truth("03_ankle-boot.png") == "ankle boot"


def test_model_cards_are_read_from_the_runs(tmp_path):
    """Every number of a card is the run's own: change summary.json, the card follows."""
    import json

    import yaml

    from export.model_cards import main

    run = tmp_path / "runs" / "qmil"
    run.mkdir(parents=True)
    summary = {"steps": 17, "train_seconds": 1.5, "device": "cpu", "world_size": 1,
               "git_commit": "abcdef123", "metrics": {"bag_acc": 0.8125, "att_acc": 0.5}}
    (run / "summary.json").write_text(json.dumps(summary))
    (run / "config.yaml").write_text(yaml.safe_dump({"train": {"epochs": 3, "batch_size": 16}}))
    out = tmp_path / "cards.md"
    assert main(["--artifacts", str(tmp_path), "--out", str(out)]) == 0
    text = out.read_text()
    assert "| bag_acc | 0.8125 |" in text and "17 steps in 1.5 s" in text
    assert "## `seqfake` - not built" in text                      # missing runs are named
    summary["metrics"]["bag_acc"] = 0.25
    (run / "summary.json").write_text(json.dumps(summary))
    main(["--artifacts", str(tmp_path), "--out", str(out)])
    assert "| bag_acc | 0.2500 |" in out.read_text()
