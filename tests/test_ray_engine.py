"""The Ray engine (app/batch_ray.py): ``--engine ray`` gives the local engine's rows (order
aside), error rows included, in CSV and Parquet, and ``--resume`` analyses only what is
missing; a gallery built on Ray (shards embedded in parallel) is the local build's, index
included; without Ray installed, ``--engine ray`` says how to install it.

One local Ray (``num_cpus=2``) serves the module; each pipeline starts its own actors."""
from __future__ import annotations

import builtins
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from app.batch_ray import RAY_MISSING

FACE_CROPS = 3
FASHION = 6


def _run_cli(capsys, *argv: object) -> tuple[int, dict, str]:
    """``python -m app.cli ARGV`` in this process: (status, JSON printed, stderr)."""
    from app.cli import main

    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, (json.loads(out.out) if code == 0 else {}), out.err


def _rows(path: Path) -> list[dict]:
    """A results file's rows (CSV, JSON lines or Parquet) as text, sorted by file and face."""
    from app.batch import read_results

    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        cols = pq.read_table(path).column_names
    elif path.suffix == ".csv":
        cols = path.read_text().splitlines()[0].split(",")
    else:
        cols = list(json.loads(path.read_text().splitlines()[0]))
    rows = [{k: str(v) for k, v in r.items()} for r in read_results(path, cols)]
    return sorted(rows, key=lambda r: (r["file"], r.get("face", ""), r.get("model", "")))


def _case(art: Path, tmp: Path) -> Path:
    """A folder: face crops, Fashion-MNIST images one level down, a corrupt PNG."""
    root = tmp / "case"
    (root / "deeper").mkdir(parents=True)
    for p in sorted((art / "examples" / "faces").glob("*.png"))[:FACE_CROPS]:
        shutil.copy(p, root / p.name)
    for p in sorted((art / "examples" / "fashion").glob("*.png"))[:FASHION]:
        shutil.copy(p, root / "deeper" / p.name)
    (root / "deeper" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    return root


def test_an_address_where_no_cluster_answers_is_refused_before_any_work(smoke_artifacts,
                                                                        tmp_path, capsys):
    pytest.importorskip("ray")
    img = sorted((smoke_artifacts / "examples" / "fashion").glob("*.png"))[0]
    code, _, err = _run_cli(capsys, "--artifacts", smoke_artifacts, "classify", img.parent,
                            "--out", tmp_path / "r.csv", "--engine", "ray",
                            "--address", "127.0.0.1:1")             # Ray would wait minutes
    assert code == 2 and "--address 127.0.0.1:1: no Ray cluster answers there" in err
    assert not (tmp_path / "r.csv").exists()


def test_a_worker_without_the_models_stops_the_batch_with_the_reason(smoke_artifacts, tmp_path):
    """A machine whose artifacts lack the model: its actor answers each file with the
    reason (an actor that raised would be restarted forever), and the command stops with
    it as the local engine does (exit 2, one line). No Ray needed: the actor's code here."""
    import pickle

    from app.batch_ray import Analyser, raise_failure
    from app.cli import _parser
    from runtime.engine import ModelUnavailableError

    img = sorted((smoke_artifacts / "examples" / "faces").glob("*.png"))[0]
    art = tmp_path / "art"
    art.mkdir()
    shutil.copy(smoke_artifacts / "manifest.json", art)            # no ONNX files
    args = _parser().parse_args(["--artifacts", str(art), "face", str(img), "--crop", "--out",
                                 str(tmp_path / "r.csv"), "--engine", "ray"])
    answer = Analyser(args, str(tmp_path))({"file": [str(img)], "sha256": [None]})
    kind, message = pickle.loads(answer["result"][0])
    assert kind == "unavailable" and "seqfake" in message and "missing" in message
    with pytest.raises(ModelUnavailableError, match="seqfake"):
        raise_failure(kind, message)


def test_parquet_results_journal_and_resume(tmp_path):
    """Both engines' Parquet writer: rows to the journal as they come, the Parquet file at the
    end; an interrupted batch keeps its journal and --resume reads it."""
    import pyarrow.parquet as pq

    from app.batch import journal_path, run_batch
    from app.inputs import InputError

    files = [tmp_path / f"{i}.png" for i in range(4)]
    for f in files:
        f.write_bytes(b"x")
    seen: list[str] = []

    def analyse(p: Path):
        seen.append(p.name)
        if p.name == "1.png":
            raise InputError("cannot read 1.png")
        if p.name == "3.png" and len(seen) == 4:
            raise KeyboardInterrupt                       # the first batch stops here
        return [{"score": int(p.stem) + 0.5, "words": ["a", p.stem]}]

    out = tmp_path / "r.parquet"
    with pytest.raises(KeyboardInterrupt):
        run_batch(files, analyse, ["score", "words"], out=out, show_bar=False)
    # the interrupted batch wrote its Parquet file when it closed; a kill leaves the journal
    assert pq.read_table(out).num_rows == 3 and not journal_path(out).exists()
    out.unlink()
    journal_path(out).write_text(
        "\n".join(json.dumps({"file": str(f), "sha256": "d", "score": 1.5, "words": ["a"],
                              "status": "ok", "error": None}) for f in files[:2])
        + '\n{"file": "cut')
    with pytest.raises(InputError, match="--resume"):
        run_batch(files, analyse, ["score", "words"], out=out, show_bar=False)
    seen.clear()
    res = run_batch(files, analyse, ["score", "words"], out=out, resume=True, show_bar=False)
    assert seen == ["2.png", "3.png"] and res.summary["resumed"] == 2
    table = pq.read_table(out)
    assert table.column_names == ["file", "sha256", "score", "words", "status", "error"]
    assert [r["file"] for r in table.to_pylist()] == [str(f) for f in files]
    assert table.to_pylist()[3]["words"] == ["a", "3"] and not journal_path(out).exists()


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    mp = pytest.MonkeyPatch()
    mp.setenv("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")  # no GPU here: no notice about one
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
    mp.undo()


def test_engine_ray_without_ray_says_how_to_install(smoke_artifacts, tmp_path, capsys,
                                                    monkeypatch):
    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    img = sorted((smoke_artifacts / "examples" / "fashion").glob("*.png"))[0]
    code, _, err = _run_cli(capsys, "--artifacts", smoke_artifacts, "classify", img, img.parent,
                            "--out", tmp_path / "r.csv", "--engine", "ray")
    assert code == 2 and err.strip() == f"error: {RAY_MISSING}"
    assert not (tmp_path / "r.csv").exists()        # refused before any work
    code, _, err = _run_cli(capsys, "--artifacts", smoke_artifacts, "classify", img.parent,
                            "--out", tmp_path / "r.csv", "--workers", 2)
    assert code == 2 and "--workers goes with --engine ray" in err

    from export.methods.dcl.gallery import main as gallery_main

    assert gallery_main(["--folder", str(img.parent), "--engine", "ray",
                         "--artifacts", str(smoke_artifacts)]) == 2
    assert capsys.readouterr().err.strip() == f"error: {RAY_MISSING}"


@pytest.mark.slow
def test_rows_equal_the_local_engine_with_error_rows_and_resume(local_ray, smoke_artifacts,
                                                               tmp_path, capsys):
    """Face crops, 28 px Fashion images (too small for the face model: error rows) and a
    corrupt file: the first half analysed here to Parquet, the rest on Ray (2 workers) with
    --resume; the rows are those of the whole batch here."""
    root = _case(smoke_artifacts, tmp_path)
    art = ("--artifacts", smoke_artifacts)
    files = sorted(str(p) for p in root.rglob("*.png"))
    half = files[: len(files) // 2]
    code, _, err = _run_cli(capsys, *art, "face", *files, "--crop", "--out",
                            tmp_path / "local.parquet")
    assert code == 0, err
    code, _, err = _run_cli(capsys, *art, "face", *half, "--crop", "--out",
                            tmp_path / "ray.parquet")
    assert code == 0, err
    code, rep, err = _run_cli(capsys, *art, "face", *files, "--crop", "--out",
                              tmp_path / "ray.parquet", "--resume", "--engine", "ray",
                              "--workers", 2)
    assert code == 0, err
    assert rep["summary"]["resumed"] == len(half)
    assert rep["summary"]["analysed_now"] == len(files) - len(half)
    assert rep["summary"]["errors"] == FASHION + 1 and rep["summary"]["faces"] == FACE_CROPS
    local = _rows(tmp_path / "local.parquet")
    assert _rows(tmp_path / "ray.parquet") == local and len(local) == len(files)
    assert not list(tmp_path.glob("*.partial.jsonl"))      # the journal goes once written


@pytest.mark.slow
def test_gallery_on_ray_equals_the_local_build(local_ray, smoke_artifacts, tmp_path, capsys,
                                               monkeypatch):
    """``python -m export.methods.dcl.gallery --folder DIR --engine ray`` with shards of 3
    images (8 files: 3 shards on 2 workers) writes the local build's gallery and index."""
    from runtime import ann
    from runtime.gallery import GalleryIndex
    from runtime.gallery_build import build_from_folder
    from runtime.engine import OnnxModel
    from runtime.manifest import read_manifest

    folder = tmp_path / "photos"
    for i, p in enumerate(sorted((smoke_artifacts / "examples" / "fashion").glob("*.png"))[:7]):
        (folder / ("a" if i % 2 else "b")).mkdir(parents=True, exist_ok=True)
        shutil.copy(p, folder / ("a" if i % 2 else "b") / p.name)
    (folder / "a" / "broken.png").write_bytes(b"not a png")
    settings = ann.load_settings()
    settings["build"]["shard_size"] = 3
    monkeypatch.setattr(ann, "load_settings", lambda *a, **k: settings)
    entry = read_manifest(smoke_artifacts)["models"]["dcl"]
    model = OnnxModel("dcl", entry, smoke_artifacts)

    def embed(batch):
        return model.run({"image": model.prepare(batch)})["embedding"]

    local, rep = build_from_folder(folder, tmp_path / "g_local", embed, entry["sha256"],
                                   show_progress=False, log=lambda m: None)
    assert rep.shards_total == 3 and len(rep.skipped) == 1 and len(local) == 7

    art = tmp_path / "art"                     # the encoder of the smoke build, copied
    (art / "onnx").mkdir(parents=True)
    shutil.copy(smoke_artifacts / "manifest.json", art)
    for f in (smoke_artifacts / "onnx").glob("dcl.*"):
        shutil.copy(f, art / "onnx" / f.name)
    from export.methods.dcl.gallery import main as gallery_main

    assert gallery_main(["--folder", str(folder), "--engine", "ray", "--workers", "2",
                         "--artifacts", str(art)]) == 0, capsys.readouterr().err
    served = read_manifest(art)["models"]["dcl"]["gallery"]
    assert served["count"] == len(local)
    for name in ("index.faiss", "items.json", "labels.npy"):
        assert ((art / served["dir"] / name).read_bytes()
                == (tmp_path / "g_local" / name).read_bytes())
    built = GalleryIndex.load(art / served["dir"])
    assert built.ids == local.ids and built.digests == local.digests
    np.testing.assert_array_equal(ann.vectors(built.index, np.arange(len(local))),
                                  ann.vectors(local.index, np.arange(len(local))))
