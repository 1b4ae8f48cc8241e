"""An export commits as a whole; a copied artifacts folder is not rebuilt.

* An export stopped at any of its writes (the ONNX file, a sidecar, an asset folder, the
  manifest) leaves the previous model served by the engine: sha256 matching, same outputs,
  nothing of the stopped export left behind; a finished one serves the new model and
  removes the old files.
* Staleness is judged by the checkpoint's content (sha256 recorded at export), not by the
  files' times: a copy with new times on every file needs nothing rebuilt, a retrained
  checkpoint does; an entry without the record falls back to the times.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from runtime.artifacts import write_bytes_atomic
from runtime.engine import Engine
from export.commit import entry_files, fresh_name
from runtime.manifest import read_manifest, sha256_file

X = np.linspace(-1, 1, 24, dtype=np.float32).reshape(3, 8)


def _train(art: Path, seed: int) -> None:
    """The toy regressor, trained as run ``toy`` (another seed: other weights)."""
    from training.config import apply_overrides, default_config_path, load_config
    from training.engine import Trainer
    from training.methods import build_method

    cfg = apply_overrides(load_config(default_config_path("toy")),
                          [f"run.seed={seed}", "train.epochs=1", "toy.n=32"])
    Trainer("toy", build_method("toy", cfg), cfg, artifacts=art, progress=False).fit()


def _assets(artifacts: Path, entry: dict, options: dict) -> None:
    """A variant's assets hook, as the retrieval gallery's: a fresh folder in the entry."""
    rel = fresh_name(artifacts, f"galleries/{entry['name']}")
    entry["gallery"] = {"dir": rel}
    (artifacts / rel).mkdir(parents=True)
    write_bytes_atomic(artifacts / rel / "meta.json", entry["sha256"].encode())


@pytest.fixture
def rich_view(monkeypatch):
    """The toy's export with a sidecar and an assets folder, like the served methods'."""
    from export import pipeline

    real = pipeline.view_of

    def view_of(model, ckpt):
        variant, view = real(model, ckpt)
        view.sidecars = {".head.npz": {"w": np.arange(4.0) + ckpt["config"]["run"]["seed"]}}
        return (dataclasses.replace(variant, assets="tests.test_robust_export:_assets"), view)

    monkeypatch.setattr(pipeline, "view_of", view_of)
    # TorchScript's exporter first: quicker for this tiny network (the commit is the same)
    monkeypatch.setattr(pipeline, "export_module",
                        functools.partial(pipeline.export_module, dynamo_first=False))


def _outputs(art: Path) -> np.ndarray:
    model = Engine(art).get("toy")  # refuses a file whose sha256 differs from the manifest
    assert sha256_file(model.path) == model.entry["sha256"]
    for rel in entry_files(model.entry):
        assert (art / rel).exists(), rel
    for side in model.entry["sidecars"].values():
        assert sha256_file(art / side["file"]) == side["sha256"]
    return model.run({"x": X})["y"]


def _files(art: Path) -> set[str]:
    return {p.relative_to(art).as_posix() for d in ("onnx", "galleries")
            for p in (art / d).rglob("*") if p.is_file()}


@pytest.fixture
def reexport(tmp_path, rich_view):
    """A folder serving the seed-0 model, whose checkpoint was then retrained (seed 1)."""
    from export.pipeline import export_run

    art = tmp_path / "base"
    _train(art, 0)
    export_run(art, "toy", int8=False, options={})
    old = _outputs(art)
    served = _files(art)
    _train(art, 1)
    return art, old, served


def test_an_export_stopped_at_any_write_leaves_the_old_model_served(tmp_path, reexport,
                                                                   monkeypatch):
    from export.pipeline import export_run

    base, old, old_files = reexport
    real_replace = os.replace
    stops = 0
    for k in range(1, 30):
        art = tmp_path / f"stop{k}"
        shutil.copytree(base, art)
        calls = 0

        def replace(src, dst, k=k):
            nonlocal calls
            calls += 1
            if calls == k:  # Ctrl-C just before the k-th rename of the export
                raise KeyboardInterrupt
            return real_replace(src, dst)

        monkeypatch.setattr(os, "replace", replace)
        try:
            export_run(art, "toy", int8=False, options={})
        except KeyboardInterrupt:
            monkeypatch.setattr(os, "replace", real_replace)
            stops += 1
            np.testing.assert_array_equal(_outputs(art), old)  # the old model, unchanged
            assert _files(art) == old_files  # what the stopped export wrote is gone
            continue
        monkeypatch.setattr(os, "replace", real_replace)
        break
    # stopped before the ONNX file, the sidecar, the asset folder and the manifest
    assert stops >= 4
    new = _outputs(art)
    assert not np.allclose(new, old)  # the finished export serves the retrained model
    entry = read_manifest(art)["models"]["toy"]
    assert entry["file"] == "onnx/toy.2.onnx" and entry["gallery"]["dir"] == "galleries/toy.2"
    assert old_files == {"onnx/toy.onnx", "onnx/toy.head.npz", "galleries/toy/meta.json"}
    assert _files(art) == {"onnx/toy.2.onnx", "onnx/toy.2.head.npz",
                           "galleries/toy.2/meta.json"}  # the old files removed


def test_the_manifest_switch_is_the_only_moment_the_served_model_changes(tmp_path, reexport,
                                                                        monkeypatch):
    """The app asked between every two writes of an export gets the old model, until the
    manifest's one rename; after it, the new one."""
    from export.pipeline import export_run

    art, old, _ = reexport
    seen: list[bool] = []
    real_replace = os.replace

    def replace(src, dst):
        real_replace(src, dst)
        seen.append(np.array_equal(_outputs(art), old))

    monkeypatch.setattr(os, "replace", replace)
    export_run(art, "toy", int8=False, options={})
    monkeypatch.setattr(os, "replace", real_replace)
    assert len(seen) >= 4 and all(seen[:-1]) and not seen[-1]
    # a third export alternates back to the first names
    export_run(art, "toy", int8=False, options={})
    assert read_manifest(art)["models"]["toy"]["file"] == "onnx/toy.onnx"


def test_a_copied_folder_is_served_as_it_is(tmp_path, rich_view, monkeypatch):
    """cp -r gives every file a new time (checkpoints newer than the manifest): nothing is
    rebuilt; a retrained checkpoint is; an entry without the recorded checkpoint sha256
    falls back to comparing the times."""
    from app import build
    from export.pipeline import export_run

    art = tmp_path / "art"
    _train(art, 0)
    export_run(art, "toy", int8=False, options={})
    copy = tmp_path / "copy"
    shutil.copytree(art, copy)
    now = time.time()
    for p in copy.rglob("*"):
        os.utime(p, (now + 100, now + 100))
    ckpt = copy / "runs" / "toy" / "checkpoint.pt"
    os.utime(ckpt, (now + 200, now + 200))  # copied after the manifest
    monkeypatch.setattr(build, "plan", lambda *a, **k: [build.Item("toy", "toy", [], 1.0)])
    assert build.exported(copy, "toy") and build.pending(copy) == []

    _train(copy, 1)  # retrained: another checkpoint, whatever its time
    os.utime(ckpt, (now - 100, now - 100))
    assert not build.exported(copy, "toy")
    assert [it.run for it in build.pending(copy)] == ["toy"]

    # an entry written without the record: the times decide
    manifest = copy / "manifest.json"
    data = read_manifest(copy)
    del data["models"]["toy"]["training"]["checkpoint_sha256"]
    manifest.write_text(json.dumps(data))
    os.utime(ckpt, (now + 300, now + 300))
    assert not build.exported(copy, "toy")
    os.utime(manifest, (now + 400, now + 400))
    assert build.exported(copy, "toy")


@pytest.mark.slow
def test_ctrl_c_during_a_real_export_keeps_the_served_model(smoke_artifacts, tmp_path):
    """Ctrl-C after the new ONNX file of a served model is written (its
    sidecars, domain check and temperature still to come): the old model keeps serving."""
    import signal
    import subprocess
    import sys

    art = tmp_path / "art"
    for name in ("onnx", "data", "runs/abcnorm"):
        shutil.copytree(smoke_artifacts / name, art / name)
    shutil.copy(smoke_artifacts / "manifest.json", art / "manifest.json")
    image = np.full((28, 28, 3), 90, np.uint8)
    model = Engine(art).get("abcnorm")
    before = model.run({"image": model.prepare([image])})
    new = art / fresh_name(art, "onnx/abcnorm", ".onnx")   # the name the export will write
    assert new.name != Path(model.entry["file"]).name
    proc = subprocess.Popen([sys.executable, "-m", "export", "abcnorm", "--no-int8",
                             "--artifacts", str(art)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            cwd=Path(__file__).resolve().parents[1],
                            # Ctrl-C at a terminal: a suite started in the background (`cmd &`)
                            # would hand the child an ignored SIGINT
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 300
    while not new.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    written = new.exists()
    proc.send_signal(signal.SIGINT)
    out = proc.communicate(timeout=120)[0]
    assert written, (f"the export never wrote {new.name} (files: "
                     f"{sorted(f.name for f in (art / 'onnx').iterdir())})", out[-3000:])
    assert proc.returncode == 130, (proc.returncode, out[-3000:])
    served = Engine(art).get("abcnorm")
    assert served.entry == model.entry and sha256_file(served.path) == model.entry["sha256"]
    after = served.run({"image": served.prepare([image])})
    for k in before:
        np.testing.assert_array_equal(after[k], before[k])
    assert not [p.name for p in (art / "onnx").iterdir() if ".2." in p.name or p.name.startswith(".")]


def _update_many(art: str, prefix: str) -> None:
    from runtime.manifest import update_manifest

    for i in range(25):
        update_manifest(art, f"{prefix}{i}", {"name": f"{prefix}{i}"})


def test_exports_of_two_runs_at_once_keep_both_entries(tmp_path):
    """Two processes updating the manifest at once (exports of two runs) take turns: no
    entry is lost to the other's read-modify-write."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_update_many, args=(str(tmp_path), p)) for p in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert len(read_manifest(tmp_path)["models"]) == 50
