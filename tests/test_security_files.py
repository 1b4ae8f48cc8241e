"""Files at rest: the private folder of uploads and answers, uploads bounded like answers,
files the CLI writes for the user (0600), and every path read from the manifest (or another
record of the artifacts) confined to its folder."""
from __future__ import annotations

import json
import os
import shutil
import stat
import time
from pathlib import Path

import numpy as np
import pytest

from runtime.manifest import ManifestError, inside


def _mode(path: Path) -> int:
    return stat.S_IMODE(Path(path).stat().st_mode)


# --- the private temp folder and the answer store --------------------------------------------
def test_the_server_makes_a_private_temp_folder_when_none_is_named(monkeypatch):
    from app.server import private_temp_dir

    monkeypatch.setenv("GRADIO_TEMP_DIR", "")
    folder = private_temp_dir()
    try:
        assert _mode(folder) == 0o700 and os.environ["GRADIO_TEMP_DIR"] == str(folder)
    finally:
        shutil.rmtree(folder)


def test_a_named_temp_folder_of_ones_own_is_narrowed_to_0700(tmp_path, monkeypatch):
    from app.server import private_temp_dir

    named = tmp_path / "gradio"
    named.mkdir(mode=0o755)
    os.chmod(named, 0o755)
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(named))
    assert private_temp_dir() == named and _mode(named) == 0o700
    fresh = tmp_path / "new" / "gradio"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(fresh))
    assert private_temp_dir() == fresh and _mode(fresh) == 0o700


def test_answer_folders_are_private_and_unguessable(tmp_path):
    from app.outputs import PUBLIC, OutputStore, owner_of

    store = OutputStore(tmp_path / "replens-answers", max_answers=5, max_age_s=3600)
    a = store.new("classify")
    assert _mode(store.root) == 0o700 and _mode(a.folder) == 0o700
    assert owner_of(a.folder.name) == PUBLIC  # made outside a logged-in request
    assert len(a.folder.name.split("-")[2]) == 32  # 128 random bits (uuid4: 122 of them)


def test_uploads_are_bounded_by_the_answer_count(tmp_path):
    from app.outputs import OutputStore
    from app.server import bound_uploads

    class Demo:
        upload_file_set: set[str] = set()

    demo = Demo()
    for i in range(5):
        folder = tmp_path / f"hash{i}"
        folder.mkdir()
        f = folder / "x.png"
        f.write_bytes(b"png")
        os.utime(f, (time.time() - 100 + i, time.time() - 100 + i))  # hash0 the oldest
        demo.upload_file_set.add(str(f))
    store = OutputStore(tmp_path / "replens-answers", max_answers=3, max_age_s=3600)
    store.after_prune = lambda: bound_uploads(demo, store.max_answers)
    store.new("face")
    assert sorted(p.name for p in tmp_path.glob("hash*")) == ["hash2", "hash3", "hash4"]
    assert len(demo.upload_file_set) == 3


# --- files the CLI writes for the user --------------------------------------------------------
@pytest.fixture
def settings_of():
    """Put settings with these overrides in force for one test."""
    from app.settings import configure, current, load_settings

    before = current()
    yield lambda **kw: configure(load_settings(kw, environ={}))
    configure(before)


def test_a_case_report_is_written_0600(tmp_path, settings_of):
    from app.batch import save_report

    settings_of()
    report = tmp_path / "case.html"
    save_report(report, "<html></html>")
    assert _mode(report) == 0o600


def test_a_results_file_is_written_0600_and_the_user_may_ask_otherwise(tmp_path, settings_of):
    from app.batch import ResultsWriter
    from app.case_report import write_report

    settings_of()
    out = tmp_path / "results.csv"
    ResultsWriter(out, ["file", "status"], [])._fh.close()
    assert _mode(out) == 0o600
    settings_of(private_reports=False)  # REPLENS_PRIVATE_REPORTS=false
    umask = os.umask(0)
    os.umask(umask)
    assert _mode(write_report(tmp_path / "shared.html", "<html></html>")) == 0o644 & ~umask


# --- paths from the manifest ------------------------------------------------------------------
@pytest.fixture
def manifest_copy(tmp_path):
    """An artifacts folder with a manifest of four models (the refusal comes before any
    model file is read, so there are none)."""
    art = tmp_path / "art"
    art.mkdir()
    side = {".domain.npz": {"file": "onnx/m.domain.npz", "sha256": "0"}}
    models = {
        "seqfake": {"method": "seqfake", "file": "onnx/seqfake.onnx", "sha256": "0",
                    "sidecars": side},
        "abcnorm": {"method": "abcnorm", "file": "onnx/abcnorm.onnx", "sha256": "0",
                    "sidecars": {**side, ".head.npz": {"file": "onnx/h.npz", "sha256": "0"}}},
        "dcl": {"method": "dcl", "file": "onnx/dcl.onnx", "sha256": "0",
                "gallery": {"dir": "gallery"}},
    }
    (art / "manifest.json").write_text(json.dumps({"format_version": 1, "models": models}))
    return art


def _edit(art: Path, name: str, change) -> None:
    path = art / "manifest.json"
    data = json.loads(path.read_text())
    change(data["models"][name])
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("name,key,change", [
    ("seqfake", "models.seqfake.file", lambda e: e.update(file="../x.onnx")),
    ("seqfake", "models.seqfake.file", lambda e: e.update(file="/etc/passwd")),
    ("seqfake", "models.seqfake.int8.file",
     lambda e: e.update(int8={"file": "onnx/../../x.onnx", "sha256": "0"}, precision="int8")),
    ("abcnorm", "models.abcnorm.sidecars..head.npz.file",
     lambda e: e["sidecars"][".head.npz"].update(file="../../etc/head.npz")),
    ("dcl", "models.dcl.gallery.dir", lambda e: e["gallery"].update(dir="/tmp")),
])
def test_a_manifest_path_outside_the_artifacts_is_refused_naming_its_key(
        manifest_copy, name, key, change):
    from runtime.engine import Engine, ModelUnavailableError

    _edit(manifest_copy, name, change)
    with pytest.raises(ModelUnavailableError) as info:
        Engine(manifest_copy).get(name)
    message = str(info.value)
    assert key in message and "outside the folder" in message and "\n" not in message


def test_manifest_paths_inside_the_folder_pass():
    assert inside("/art", "onnx/a.onnx", "k") == Path("/art/onnx/a.onnx")
    for bad in ("..", "a/../../b", "/abs", "C:\\x", "..\\x", ""):
        with pytest.raises(ManifestError, match="k = "):
            inside("/art", bad, "k")


def test_the_detector_record_is_confined_too(tmp_path):
    from runtime.mtcnn import DetectorUnavailableError, check_files

    with pytest.raises(DetectorUnavailableError, match=r"nets\.pnet\.file = '\.\./pnet\.onnx'"):
        check_files(tmp_path, {"nets": {"pnet": {"file": "../pnet.onnx"}}})


def test_a_lazy_gallery_item_outside_its_image_folder_is_refused(tmp_path):
    from runtime.gallery import GalleryError, GalleryIndex

    ids = ["a.png", "../../home/secret.png", "c.png"]
    g = GalleryIndex.build(lambda ims: np.eye(len(ims), 4, dtype=np.float32),
                           [np.zeros((8, 8, 3), np.uint8)] * 3, None, ["x"], "enc", ids=ids,
                           index_kind="exact")
    folder = g.save(tmp_path / "gallery")
    meta = json.loads((folder / "meta.json").read_text())
    meta.update(thumbnails="lazy", image_root=str(tmp_path / "images"))
    (folder / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(GalleryError, match=r"ids\[1\] = '\.\./\.\./home/secret\.png'"):
        GalleryIndex.load(folder)
