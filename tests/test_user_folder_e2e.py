"""A user's own colour images, end to end, for qMIL and DCL: a fixture written in the real
on-disk format (an ImageFolder of 64 px colour images, with the odd files a real folder
holds) -> ``python -m training METHOD --data DIR`` for a few steps -> ``python -m export``
-> the app, through gradio_client, answers in the Bag query and Retrieval tabs with the
fixture's class names (the README's "Train on your own images" commands)."""
from __future__ import annotations

from pathlib import Path

import pytest

from export.__main__ import main as export_main
from runtime.manifest import read_manifest
from training.__main__ import main as train_main
from training.data.shapes import write_shapes_folder

pytestmark = pytest.mark.slow

CLASSES = ("circle", "square", "triangle")
QMIL_TINY = ["train.max_steps=4", "train.batch_size=4", "data.bags_per_query=8",
             "data.eval_bags_per_query=4", "data.size_mean=4", "data.size_std=1",
             "data.max_size=6", "model.feat_dim=32", "model.embed_dim=16", "model.attn_dim=16",
             "model.classifier_hidden=16", "train.threads=1", "data.image_size=64",
             "model.user_data.name=qmil_lenet", "model.user_data.encoder=lenet"]  # toy-size
DCL_TINY = ["train.max_steps=3", "train.batch_size=8", "model.name=dcl_small_cnn",
            "model.kwargs={in_chans: 1, width: 8}", "eval.random_init_reference=false",
            "train.threads=1"]


def _sets(values: list[str]) -> list[str]:
    return [x for v in values for x in ("--set", v)]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """Both models trained on the user's folders, exported, and the app serving them."""
    root = tmp_path_factory.mktemp("user")
    bags, gallery, art = root / "photos", root / "gallery", root / "art"
    write_shapes_folder(bags, CLASSES, per_class=10, size=64, layout="splits", odd_files=True)
    write_shapes_folder(gallery, CLASSES, per_class=8, size=64, layout="tree", odd_files=True,
                        seed=1)
    assert train_main(["qmil", "--data", str(bags), "--artifacts", str(art), "--no-progress",
                       *_sets(QMIL_TINY)]) == 0
    assert train_main(["dcl", "--data", str(gallery), "--artifacts", str(art), "--no-progress",
                       *_sets(DCL_TINY)]) == 0
    assert export_main(["qmil", "--artifacts", str(art), "--no-int8", "--no-gallery"]) == 0
    assert export_main(["dcl", "--artifacts", str(art), "--no-int8",
                        "--gallery-dir", str(gallery)]) == 0
    from tests.test_app import _serve

    demo, client = _serve(art)
    yield {"art": art, "bags": bags, "gallery": gallery, "client": client}
    demo.close()


def test_bag_query_answers_with_the_folder_names(served):
    from gradio_client import handle_file

    entry = read_manifest(served["art"])["models"]["qmil"]
    assert entry["labels"] == list(CLASSES) and entry["extra"]["seen_classes"] == list(CLASSES)
    assert entry["preprocess"]["size"] == [64, 64] and entry["preprocess"]["channels"] == 3
    assert entry["extra"]["data_source"]["format"] == "image_folder"
    assert entry["extra"]["data_source"]["skipped"] == 1        # the corrupt PNG
    assert "domain" in entry and entry["domain"]["classes"] == 3  # fitted on the user's images
    assert not (served["art"] / "examples" / "bags").exists()   # no Fashion-MNIST example bags
    test = Path(served["bags"]) / "test"
    bag = [test / "square" / "000.png", test / "circle" / "001.png", test / "triangle" / "000.png"]
    for word in CLASSES:
        text, gallery, report, _ = served["client"].predict(
            [handle_file(str(p)) for p in bag], word, api_name="/query")
        assert report["query"] == word and report["query_kind"] == "seen in training"
        assert report["bag_size"] == 3 and report["answer"] in ("yes", "no")
        assert len(report["attention"]) == 3 and word in text
    _, _, report, _ = served["client"].predict([handle_file(str(p)) for p in bag], "ball",
                                               api_name="/query")
    assert report["query_kind"].startswith("zero-shot")
    assert {c["query"] for c in report["closest_training_queries"]} <= set(CLASSES)


def test_retrieval_answers_with_the_gallery_folder_names(served):
    from gradio_client import handle_file

    entry = read_manifest(served["art"])["models"]["dcl"]
    assert entry["labels"] == list(CLASSES) and entry["preprocess"]["channels"] == 3
    assert entry["gallery"]["count"] == 3 * 8 + 5   # the readable odd files are gallery images
    query = Path(served["bags"]) / "test" / "circle" / "000.png"
    text, gallery, report, _ = served["client"].predict(handle_file(str(query)), 5, "circle",
                                                        api_name="/neighbours")
    labels = [h["label"] for h in report["neighbours"]]
    assert len(labels) == 5 and set(labels) <= set(CLASSES)
    assert report["query_label"] == "circle" and 0.0 <= report["precision_at_k"] <= 1.0
