"""App examples: per-task face folders, examples the served model answers (or labelled with
its answer), the examples tables' expected-answer column, and model cards."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from export.methods.seqfake.assets import write_examples
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


# --- examples the served model answers (export.examples) ----------------------------------
def _judge(answers: dict[str, str]):
    """A judge that answers from the example's file name (``NN_<label>.png``): the answer
    listed for the label, else the label's own truth."""
    from export.examples import Judge

    def answer(path):
        label = path.stem.split("_", 1)[1]
        return answers.get(label, " -> ".join(label.split("-")) if label != "real" else "real")

    return Judge("fake", "v1", answer)


def test_a_wrong_example_is_replaced_by_one_the_model_answers(tmp_path):
    import json

    from export.examples import Judge, keep_answered

    def save(c, path):
        path.write_text(str(c))

    seen = []
    judge = Judge("m", "v", lambda p: seen.append(p.read_text()) or ("cat" if p.read_text() == "3" else "dog"))
    rec = keep_answered(tmp_path / "00_cat.png", "cat", range(10), save, judge, tries=5)
    assert (tmp_path / "00_cat.png").read_text() == "3" and seen == ["0", "1", "2", "3"]
    assert rec == {"truth": "cat", "answer": "cat", "correct": True}
    # no candidate answered correctly: the first is kept, labelled with the model's answer
    rec = keep_answered(tmp_path / "01_cow.png", "cow", range(10), save, judge, tries=5)
    assert (tmp_path / "01_cow.png").read_text() == "0"
    assert rec == {"truth": "cow", "answer": "dog", "correct": False}
    assert json.dumps(rec)  # the record is what answers.json holds
    # a model that refuses every candidate: the first is kept, with no answer of its own

    def refuse(p):
        raise ValueError("not an image this model takes")

    rec = keep_answered(tmp_path / "02_owl.png", "owl", range(10), save, Judge("m", "v", refuse), 3)
    assert (tmp_path / "02_owl.png").read_text() == "0"
    assert rec == {"truth": "owl", "answer": None, "correct": False}


def test_face_examples_prefer_faces_the_model_answers(tmp_path):
    import json

    from app.ui_common import example_expected
    from export.examples import copy_faces
    from training.data.seqdeepfake import COMPONENT_NAMES

    labels = ["[5, 0, 0, 0, 0]", "[0, 0, 0, 0, 0]", "[2, 5, 0, 0, 0]", "[1, 4, 0, 0, 0]",
              "[3, 0, 0, 0, 0]", "[4, 1, 2, 0, 0]", "[0, 0, 0, 0, 0]", "[2, 0, 0, 0, 0]"]
    root = tmp_path / "data" / "facial_components"
    (root / "annotations").mkdir(parents=True)
    (root / "images").mkdir()
    for k in range(len(labels)):  # Seq-DeepFake layout: images named in the CSV
        Image.new("RGB", (16, 16), (k * 30, 0, 0)).save(root / "images" / f"{k}.png")
    csv_path = root / "annotations" / "test.csv"
    csv_path.write_text("file_path,label\n" + "".join(f'images/{k}.png,"{lab}"\n'
                                                       for k, lab in enumerate(labels)))
    rows = list(__import__("csv").DictReader(open(csv_path)))
    truths = []
    for row in rows:
        ids = [int(v) for v in row["label"].strip("[]").split(",") if int(v) > 0]
        truths.append("-".join(COMPONENT_NAMES[i - 1] for i in ids) or "real")
    wrong = {t: "hair" for t in truths[:4] if t != "hair"}   # the model misreads the first 4
    out = tmp_path / "faces"
    copy_faces(csv_path, out, n=3, names=COMPONENT_NAMES, judge=_judge(wrong))
    files = sorted(out.glob("*.png"))
    record = json.loads((out / "answers.json").read_text())
    assert record["model"] == "fake" and set(record["examples"]) == {f.name for f in files}
    answered = [t for t in truths if t not in wrong]
    assert [f.stem.split("_", 1)[1] for f in files] == answered[:3]
    assert all(r["correct"] for r in record["examples"].values())
    # a model that answers every face wrongly: the first faces, labelled with its answers
    copy_faces(csv_path, out, n=3, names=COMPONENT_NAMES, judge=_judge({t: "nose" for t in truths}))
    record = json.loads((out / "answers.json").read_text())["examples"]
    files = sorted(out.glob("*.png"))
    assert [f.stem.split("_", 1)[1] for f in files] == truths[:3]
    for f in files:
        assert record[f.name]["answer"] == "nose" and not record[f.name]["correct"]
        truth = record[f.name]["truth"]
        assert example_expected(f) == f"nose (truth: {truth})"


@pytest.fixture(scope="module")
def rebuilt_examples(smoke_artifacts, tmp_path_factory):
    """The smoke build's served models (linked, never written) with its examples written
    again by the methods' example hooks, as export writes them."""
    import shutil

    from export.pipeline import resolve
    from methods import all_methods

    art = tmp_path_factory.mktemp("examples_art")
    for name in ("onnx", "gallery", "galleries", "data", "detector"):
        if (smoke_artifacts / name).exists():
            (art / name).symlink_to(smoke_artifacts / name)
    shutil.copy2(smoke_artifacts / "manifest.json", art / "manifest.json")
    for desc in all_methods():
        for hook in desc.post_export:
            if hook.split(":")[0].endswith(".assets"):
                resolve(hook)(art, [], {"gallery": False})
    return art


def _service_answers(art):
    """{examples folder: (the app's service answering one example, the model)}."""
    from app.services import classify, face, qmil, retrieval
    from export.examples import sequence_text
    from runtime.engine import Engine

    engine = Engine(art)

    def face_answer(model):
        return lambda p: sequence_text([s["component"] for s in face.analyze_face(
            engine, None, p, is_crop=True, model_name=model).report["sequence"]])

    def bag_answer(folder):
        word = folder.name.split("_", 1)[1].rsplit("_", 1)[0].replace("-", " ")
        return qmil.query_bag(engine, sorted(folder.glob("*.png")), word).report["raw_answer"]

    return {"fashion": (lambda p: classify.classify(engine, p).report["top"][0]["class"], "abcnorm"),
            "retrieval": (lambda p: retrieval.batch_rows(engine, p, 8)[0]["raw_vote_label"], "dcl"),
            "bags": (bag_answer, "qmil"),
            "faces": (face_answer("seqfake"), "seqfake"),
            "faces_attr": (face_answer("seqfake_attr"), "seqfake_attr")}


@pytest.mark.slow
def test_every_shipped_example_is_answered_or_labelled_with_the_answer(rebuilt_examples):
    """Each example: the served model, asked through the app's service, gives the answer
    recorded beside it; that answer is the truth, or the label says both."""
    import json

    from app.ui_common import example_expected, example_truth
    from export.examples import same_answer

    art = rebuilt_examples
    for folder, (ask, model) in _service_answers(art).items():
        d = art / "examples" / folder
        items = sorted(p for p in d.iterdir() if p.is_dir()) if folder == "bags" \
            else sorted(d.glob("*.png"))
        assert items, folder
        record = json.loads((d / "answers.json").read_text())
        assert record["model"] == model, folder
        assert set(record["examples"]) == {p.name for p in items}, folder
        for p in items:
            r = record["examples"][p.name]
            answer = ask(p)
            assert same_answer(answer, r["answer"]), (folder, p.name, answer, r)
            if folder != "bags":
                assert same_answer(example_truth(p).replace(" -> ", " "), r["truth"].replace(" -> ", " ")), p
            assert r["correct"] == same_answer(answer, r["truth"])
            expected = example_expected(p)
            assert expected == (answer if r["correct"] else f"{answer} (truth: {r['truth']})")


@pytest.mark.slow
def test_the_examples_tables_show_the_expected_answer(rebuilt_examples):
    """Each tab's examples table: the input that changes and an "expected answer" column
    (the served model's answer), no column of constant settings."""
    import gradio as gr

    from app.outputs import OutputStore
    from app.tabs import tabs
    from app.ui_common import TabContext, example_expected
    from runtime.engine import Engine

    engine = Engine(rebuilt_examples)
    store = OutputStore(rebuilt_examples / "answers_out", 10, 60)
    with gr.Blocks() as demo:
        for desc, tab in tabs():
            tab.build(TabContext(engine, lambda: None, rebuilt_examples / "examples",
                                 engine.served(desc.name), store, desc.name))
    tables = {t["headers"][0]: t for t in (b.get_config() for b in demo.blocks.values()
                                           if isinstance(b, gr.Dataset))}
    ex = rebuilt_examples / "examples"
    shown = {"Image with a face": sorted((ex / "faces").glob("*.png"))[:6]
             + sorted((ex / "faces_attr").glob("*.png"))[:3],
             "Bag: several images, or one video": sorted(p for p in (ex / "bags").iterdir()
                                                          if p.is_dir())[:4],
             "Query image": sorted((ex / "retrieval").glob("*.png"))[:8],
             "Image": sorted((ex / "fashion").glob("*.png"))[:8]}
    assert set(tables) == set(shown)
    for first, t in tables.items():
        headers = t["headers"]
        assert headers[-1] == "expected answer", headers
        assert not {"Threshold", "Face # (1 = largest)", "k",
                    "Image is already a face crop (skip detection)"} & set(headers), headers
        assert [row[-1] for row in t["samples"]] == [example_expected(p) for p in shown[first]]
        assert all(row[-1] for row in t["samples"]), first
