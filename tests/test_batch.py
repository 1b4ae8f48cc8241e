"""Batch analysis (app/batch.py): files, folders and globs in; CSV / JSONL rows out as the
batch goes; a broken file is an error row and the batch completes; --resume analyses only
what is missing; the face tab's batch and side-by-side answers through gradio_client."""
from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.batch import expand_inputs, read_results, run_batch
from app.inputs import InputError


def cli(art: Path, *args, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "app.cli", "--artifacts", str(art),
                           *map(str, args)], capture_output=True, text=True, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _folder(tmp: Path, src: list[Path]) -> Path:
    """A user's folder: images at two depths, a corrupt PNG, a text file, a JPEG."""
    root = tmp / "case"
    (root / "deeper").mkdir(parents=True)
    for i, p in enumerate(src):
        shutil.copy(p, (root if i % 2 else root / "deeper") / p.name)
    (root / "deeper" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    (root / "notes.txt").write_text("not an image")
    Image.open(src[0]).convert("RGB").save(root / "as_jpeg.jpg", quality=90)
    return root


# --- the input expansion and the results file, without models ------------------------------
def test_expand_inputs_folders_globs_and_files(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("a/1.png", "a/b/2.JPG", "a/b/3.webp", "a/readme.md", "x.png"):
        (tmp_path / name).write_bytes(b"x")
    paths, skipped = expand_inputs([str(tmp_path / "a"), str(tmp_path / "*.png"),
                                    str(tmp_path / "a" / "1.png")])  # a duplicate
    assert [p.relative_to(tmp_path).as_posix() for p in paths] == ["a/1.png", "a/b/2.JPG",
                                                                   "a/b/3.webp", "x.png"]
    assert skipped == 1                       # readme.md in the folder
    # a file named explicitly is kept whatever its extension (it becomes an error row)
    assert expand_inputs([str(tmp_path / "a" / "readme.md")])[0] == [tmp_path / "a" / "readme.md"]
    with pytest.raises(InputError, match="no such file"):
        expand_inputs([str(tmp_path / "missing.png")])
    with pytest.raises(InputError, match="No file matches"):
        expand_inputs([str(tmp_path / "*.gif")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="No image files"):
        expand_inputs([str(tmp_path / "empty")])


def test_run_batch_error_rows_resume_and_a_cut_line(tmp_path):
    files = []
    for i in range(5):
        files.append(tmp_path / f"{i}.png")
        files[-1].write_bytes(b"x")
    seen: list[str] = []

    def analyse(p: Path):
        seen.append(p.name)
        if p.name == "2.png":
            raise InputError("cannot read 2.png")
        return [{"score": int(p.stem)}, {"score": int(p.stem) + 10}]  # two rows per file

    out = tmp_path / "res.csv"
    res = run_batch(files[:3], analyse, ["score"], out=out, show_bar=False, count_key="faces")
    assert res.summary["files"] == 3 and res.summary["errors"] == 1 and res.summary["faces"] == 4
    rows = list(csv.DictReader(out.open()))
    assert [r["status"] for r in rows] == ["ok", "ok", "ok", "ok", "error"]
    assert rows[-1]["error"] == "cannot read 2.png" and rows[-1]["score"] == ""
    # an interruption cut the last line: it is dropped, its file analysed again
    out.write_text(out.read_text() + f"{files[3]},abc,3")
    with pytest.raises(InputError, match="--resume"):
        run_batch(files, analyse, ["score"], out=out, show_bar=False)
    seen.clear()
    res = run_batch(files, analyse, ["score"], out=out, resume=True, show_bar=False)
    assert seen == ["3.png", "4.png"]
    assert res.summary["resumed"] == 3 and res.summary["analysed_now"] == 2
    rows = list(csv.DictReader(out.open()))
    assert [r["file"] for r in rows].count(str(files[3])) == 2 and len(rows) == 9
    # the same file with other columns (another model, another command) is refused
    with pytest.raises(InputError, match="other columns"):
        run_batch(files, analyse, ["other"], out=out, resume=True, show_bar=False)


def test_read_results_jsonl_drops_a_cut_line(tmp_path):
    out = tmp_path / "r.jsonl"
    cols = ["file", "sha256", "v", "status", "error"]
    out.write_text(json.dumps(dict.fromkeys(cols, "a")) + "\n" + '{"file": "b", "sha')
    assert [r["file"] for r in read_results(out, cols)] == ["a"]


# --- the CLI on the smoke build ------------------------------------------------------------
@pytest.mark.slow
def test_face_batch_csv_and_jsonl_with_a_corrupt_file_and_resume(smoke_artifacts, tmp_path):
    faces = sorted((smoke_artifacts / "examples" / "faces").glob("*.png"))[:4]
    root = _folder(tmp_path, faces)
    out = tmp_path / "results.csv"
    r = cli(smoke_artifacts, "face", root, "--crop", "--out", out)
    summary = json.loads(r.stdout)["summary"]
    assert summary["files"] == 6 and summary["errors"] == 1 and summary["faces"] == 5
    assert summary["skipped_non_images"] == 1          # notes.txt
    assert "file/s" in r.stderr                         # the progress bar with throughput
    rows = list(csv.DictReader(out.open()))
    bad = [x for x in rows if x["status"] == "error"]
    assert len(bad) == 1 and bad[0]["file"].endswith("corrupt.png") and bad[0]["error"]
    good = [x for x in rows if x["status"] == "ok"]
    for x in good:  # a verdict, its sequence and the per-component probabilities
        probs = {k[2:]: float(v) for k, v in x.items() if k.startswith("p_")}
        assert set(probs) == {"nose", "eye", "eyebrow", "lip", "hair"}
        assert x["verdict"] == ("manipulated" if x["sequence"] else "real")
        assert float(x["fake_probability"]) == pytest.approx(max(probs.values()), abs=1e-4)
        assert len(x["sha256"]) == 64 and x["model"] == "seqfake" and x["model_version"]
    # the same answers as the single-image command
    one = json.loads(cli(smoke_artifacts, "face", good[0]["file"], "--crop").stdout)
    assert one["fake_probability"] == pytest.approx(float(good[0]["fake_probability"]), abs=1e-4)
    # two more files arrive; --resume analyses only those
    for p in faces[:2]:
        Image.open(p).save(root / f"new_{p.name}")
    before = out.read_text()
    r = cli(smoke_artifacts, "face", root, "--crop", "--out", out, "--resume")
    summary = json.loads(r.stdout)["summary"]
    assert summary["analysed_now"] == 2 and summary["resumed"] == 6 and summary["files"] == 8
    assert out.read_text().startswith(before)          # the earlier rows are kept as they were
    # JSON lines: the same rows
    jl = tmp_path / "results.jsonl"
    cli(smoke_artifacts, "face", root, "--crop", "--out", jl)
    jrows = [json.loads(line) for line in jl.read_text().splitlines()]
    assert len(jrows) == 8 and sum(x["status"] == "error" for x in jrows) == 1
    assert all(isinstance(x["p_eye"], float) for x in jrows if x["status"] == "ok")
    # an existing --out without --resume is refused with a message, not overwritten
    r = cli(smoke_artifacts, "face", root, "--crop", "--out", jl, check=False)
    assert r.returncode == 2 and "--resume" in r.stderr and jl.read_text().count("\n") == 8


@pytest.mark.slow
def test_face_batch_detects_every_face_and_reports_no_face(smoke_artifacts, tmp_path):
    """With detection: a photograph with a face gives one row per face with its box, one
    without a face a ``no_face`` row."""
    from skimage import data

    Image.fromarray(data.astronaut()).save(tmp_path / "astronaut.png")
    Image.fromarray(data.coffee()).save(tmp_path / "coffee.png")
    r = cli(smoke_artifacts, "face", tmp_path / "astronaut.png", tmp_path / "coffee.png")
    out = json.loads(r.stdout)
    rows = {x["file"].rsplit("/", 1)[-1]: x for x in out["rows"]}
    assert rows["coffee.png"]["status"] == "no_face" and out["summary"]["no_face"] == 1
    astro = rows["astronaut.png"]
    assert astro["status"] == "ok" and astro["face"] == 1 and len(astro["box"]) == 4
    x1, y1, x2, y2 = astro["box"]
    assert 120 < (x1 + x2) / 2 < 300 and 40 < (y1 + y2) / 2 < 200   # her face, top middle


@pytest.mark.slow
def test_classify_and_neighbours_batches(smoke_artifacts, tmp_path):
    fashion = sorted((smoke_artifacts / "examples" / "fashion").glob("*.png"))[:3]
    for p in fashion:
        shutil.copy(p, tmp_path / p.name)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "c.jsonl"
    s = json.loads(cli(smoke_artifacts, "classify", tmp_path / "*.png", "--out", out).stdout)
    assert s["summary"]["classified"] == 3 and s["summary"]["errors"] == 1
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    single = json.loads(cli(smoke_artifacts, "classify", fashion[0]).stdout)
    first = next(x for x in rows if x["file"].endswith(fashion[0].name))
    assert first["class"] == single["top"][0]["class"]
    assert first["top5"][0] == f"{single['top'][0]['class']}:{single['top'][0]['probability']:.4f}"
    s = json.loads(cli(smoke_artifacts, "neighbours", tmp_path, "-k", 3).stdout)
    ok = [x for x in s["rows"] if x["status"] == "ok"]
    assert len(ok) == 3 and all(len(x["neighbours"]) == 3 for x in ok)
    for x in ok:
        labels = [n.split(":")[1] for n in x["neighbours"]]
        assert x["nearest_label"] == labels[0]
        assert labels.count(x["vote_label"]) == max(labels.count(lab) for lab in labels)
    r = cli(smoke_artifacts, "classify", tmp_path, "--cam-out", tmp_path / "c.png", check=False)
    assert r.returncode == 2 and "one image" in r.stderr


# --- the face tab ---------------------------------------------------------------------------
@pytest.mark.slow
def test_face_tab_batch_and_side_by_side(smoke_artifacts, tmp_path):
    from gradio_client import handle_file

    from tests.test_app import _serve

    demo, client = _serve(smoke_artifacts)
    try:
        faces = sorted((smoke_artifacts / "examples" / "faces").glob("*.png"))[:3]
        bad = tmp_path / "bad.png"
        bad.write_bytes(b"\x89PNG broken")
        text, table, csv_file, rows, case = client.predict(
            [handle_file(str(p)) for p in faces] + [handle_file(str(bad))], 0.5, True, "seqfake",
            api_name="/face_batch")
        assert rows["summary"]["files"] == 4 and rows["summary"]["errors"] == 1
        assert "4 files, 3 faces" in text
        assert [r["file"] for r in rows["rows"]] == [p.name for p in faces] + ["bad.png"]
        with open(csv_file, newline="") as fh:
            assert len(list(csv.DictReader(fh))) == 4
        assert table["headers"][0] == "file" and len(table["data"]) == 4
        html = Path(case).read_text()
        assert 'id="section-rows"' in html and "bad.png" in html
        # side by side: every served seqfake model answers for the same face
        text, _, _, where, report, _, _ = client.predict(
            handle_file(str(faces[1])), 0.5, 1, True, "all", api_name="/face")
        names = [m["model"] for m in report["models"]]
        assert names[0] == "seqfake" and "seqfakeformer" in names
        assert [a["model"] for a in report["answers"]] == names
        sff = report["answers"][names.index("seqfakeformer")]
        assert sff["decoder"] == "autoregressive"
        single = client.predict(handle_file(str(faces[1])), 0.5, 1, True, "seqfakeformer",
                                api_name="/face")[4]
        assert single["probabilities"] == sff["probabilities"]
        for m in report["models"]:  # the measured test accuracies from the manifest
            entry = json.loads((smoke_artifacts / "manifest.json").read_text())["models"][m["model"]]
            assert m["fixed_acc"] == entry["metrics"].get("fixed_acc")
            assert f"{100 * m['fixed_acc']:.1f} %" in text
        w = np.asarray(Image.open(where))
        assert w.shape[1] > 2 * w.shape[0] * 0.9   # the where-maps in a row
    finally:
        demo.close()


@pytest.mark.slow
def test_cli_case_reports(smoke_artifacts, tmp_path):
    """--report: one face by every model, and a batch, each one self-contained HTML file."""
    faces = sorted((smoke_artifacts / "examples" / "faces").glob("*.png"))[:2]
    one = tmp_path / "case.html"
    rep = json.loads(cli(smoke_artifacts, "face", faces[0], "--crop", "--model", "all",
                         "--report", one).stdout)
    html = one.read_text()
    for m in rep["models"]:
        assert m["version"] in html and m["sha256"] in html
    assert faces[0].name in html and "http://" not in html and "https://" not in html
    with_map = sum(a["decoder"] == "probability-ranked" for a in rep["answers"])  # token maps
    assert html.count("data:image/png;base64,") == 1 + with_map   # the crop and each where-map
    batch = tmp_path / "batch.html"
    s = json.loads(cli(smoke_artifacts, "face", *faces, "--crop", "--report", batch).stdout)
    assert s["summary"]["report"] == str(batch)
    assert all(p.name in batch.read_text() for p in faces)
    r = cli(smoke_artifacts, "face", faces[0], "--report", tmp_path / "no" / "x.html", check=False)
    assert r.returncode == 2 and "does not exist" in r.stderr
