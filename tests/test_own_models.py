"""A user's own models, end to end: trained on a folder in its real on-disk format, exported
under the run's name beside the default models, and chosen in the tab (and the API) among
several served models of the method; the tab answers with the user's class names.

ABC-Norm, qMIL and DCL on ImageFolders of colour images and the face model on a Seq-DeepFake
folder are trained here (a few steps), each beside the smoke build's default model of its tab
(trained on Fashion-MNIST or generated faces), so the tab has two models to choose from."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.slow

CLASSES = ("red_square", "blue-circle")
SHAPES = ("circle", "square", "triangle")


def _colour_tree(root):
    """ImageFolder train/val/test of two easy classes: a red square, a blue disc (48 px)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:48, :48]
    for split, n in (("train", 12), ("val", 4), ("test", 4)):
        for c, name in enumerate(CLASSES):
            d = root / split / name
            d.mkdir(parents=True)
            for i in range(n):
                img = np.clip(rng.normal(200, 20, (48, 48, 3)), 0, 255).astype(np.uint8)
                if c == 0:
                    img[12:36, 12:36] = (220, 30, 30)
                else:
                    img[(yy - 24) ** 2 + (xx - 24) ** 2 < 144] = (30, 30, 220)
                Image.fromarray(img).save(d / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def own_artifacts(smoke_artifacts, tmp_path_factory):
    """The smoke build plus the user's models: `mine` (ABC-Norm on the colour folder),
    `myfaces` (the face model on a Seq-DeepFake folder), `myshapes` (qMIL) and `myshapes_dcl`
    (DCL, its gallery the user's folder) on a folder of circles, squares and triangles."""
    from export.__main__ import main as export_main
    from export.pipeline import export_run
    from tests.test_abcnorm_method import TINY_REAL
    from tests.test_seqfake_data import write_fixture
    from tests.test_seqfake_method import FAST
    from tests.test_user_folder_e2e import DCL_TINY, QMIL_TINY
    from training.data.shapes import write_shapes_folder
    from training.__main__ import main as train

    base = tmp_path_factory.mktemp("own")
    art = base / "art"
    shutil.copytree(smoke_artifacts, art, ignore=shutil.ignore_patterns("data", "runs"))
    tree = _colour_tree(base / "photos")
    sets = [*TINY_REAL, "run.name=mine", "train.max_steps=2", "train.batch_size=8",
            "train.epochs=1"]
    assert train(["abcnorm", "--data", str(tree), "--artifacts", str(art), "--no-progress",
                  *[x for s in sets for x in ("--set", s)]]) == 0
    export_run(art, "mine", int8=False)
    faces = write_fixture(base / "seqdf")
    assert train(["seqfake", "--data", str(faces), "--artifacts", str(art),
                  "--set", "run.name=myfaces", *FAST]) == 0
    export_run(art, "myfaces", int8=False)
    shapes, gallery = base / "shapes", base / "shapes_gallery"
    write_shapes_folder(shapes, SHAPES, per_class=10, size=64, layout="splits")
    write_shapes_folder(gallery, SHAPES, per_class=8, size=64, layout="tree", seed=1)
    for method, run, data, tiny in (("qmil", "myshapes", shapes, QMIL_TINY),
                                    ("dcl", "myshapes_dcl", gallery, DCL_TINY)):
        sets = [*tiny, f"run.name={run}"]
        assert train([method, "--data", str(data), "--artifacts", str(art), "--no-progress",
                      *[x for s in sets for x in ("--set", s)]]) == 0
    assert export_main(["myshapes", "--artifacts", str(art), "--no-int8"]) == 0
    assert export_main(["myshapes_dcl", "--artifacts", str(art), "--no-int8",
                        "--gallery-dir", str(gallery)]) == 0
    return art


@pytest.fixture(scope="module")
def own_client(own_artifacts):
    from tests.test_app import _serve

    demo, client = _serve(own_artifacts)
    yield client
    demo.close()


def test_the_classifier_tab_serves_a_users_model_with_its_classes(own_artifacts, own_client):
    from gradio_client import handle_file

    img = sorted((own_artifacts.parent / "photos" / "test" / "blue-circle").glob("*.png"))[0]
    text, cam, cam_other, report, _ = own_client.predict(handle_file(str(img)), "", "mine",
                                                         "none", api_name="/classify")
    assert list(report) == ["mine"] and cam_other is None
    top = report["mine"]["top"]
    assert {t["class"] for t in top} == set(CLASSES)   # the folder's names, 2 classes
    assert report["mine"]["model"] == "mine" and "**Model:** `mine`" in text
    # class groups derived from the training counts (12 + 12: not "few" as 1000/200 says)
    entry = json.loads((own_artifacts / "manifest.json").read_text())["models"]["mine"]
    assert "derived" in entry["extra"]["group_rule"]
    assert {t["group"] for t in top} != {"few"}
    # explaining one of the user's classes works; another model's class is refused
    *_, report, _ = own_client.predict(handle_file(str(img)), "red_square", "mine", "none",
                                       api_name="/classify")
    assert report["mine"]["top"]
    # the default is unchanged: ABC-Norm with the CE baseline beside it
    fashion = sorted((own_artifacts / "examples" / "fashion").glob("*.png"))[0]
    *_, report, _ = own_client.predict(handle_file(str(fashion)), "", api_name="/classify")
    assert set(report) == {"abcnorm", "abcnorm_ce"}
    # the user's model beside the default one
    *_, report, _ = own_client.predict(handle_file(str(img)), "", "mine", "abcnorm",
                                       api_name="/classify")
    assert set(report) == {"mine", "abcnorm"}


def test_the_face_tab_serves_a_face_model_trained_on_a_seqdeepfake_folder(own_artifacts,
                                                                         own_client):
    from gradio_client import handle_file

    face = sorted((own_artifacts / "examples" / "faces").glob("*.png"))[0]
    out = own_client.predict(handle_file(str(face)), 0.5, 1, True, "myfaces", api_name="/face")
    report = out[4]
    assert report["model"] == "myfaces"
    assert set(report["probabilities"]) == {"nose", "eye", "eyebrow", "lip", "hair"}


def test_the_retrieval_and_bag_tabs_serve_the_users_model_chosen(own_artifacts, own_client):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    shapes = own_artifacts.parent / "shapes" / "test"
    query = shapes / "circle" / "000.png"
    *_, report, _ = own_client.predict(handle_file(str(query)), 4, "", "myshapes_dcl",
                                       api_name="/neighbours")
    assert report["model"] == "myshapes_dcl" and len(report["neighbours"]) == 4
    assert {h["label"] for h in report["neighbours"]} <= set(SHAPES)
    *_, report, _ = own_client.predict(handle_file(str(query)), 4, "", "dcl",
                                       api_name="/neighbours")   # the default: Fashion-MNIST
    assert report["model"] == "dcl"
    assert not {h["label"] for h in report["neighbours"]} & set(SHAPES)
    files = [handle_file(str(shapes / c / "000.png")) for c in SHAPES]
    for word in SHAPES:
        text, _, report, _ = own_client.predict(files, word, "myshapes", api_name="/query")
        assert report["model"] == "myshapes" and word in text
        assert report["query_kind"] == "seen in training" and len(report["attention"]) == 3
    _, _, report, _ = own_client.predict(files, "circle", "qmil", api_name="/query")
    assert report["model"] == "qmil" and report["query_kind"].startswith("zero-shot")
    with pytest.raises(AppError, match="nope"):
        own_client.predict(files, "circle", "nope", api_name="/query")
    with pytest.raises(AppError, match="myshapes"):   # a model of another method
        own_client.predict(handle_file(str(query)), 4, "", "myshapes", api_name="/neighbours")
