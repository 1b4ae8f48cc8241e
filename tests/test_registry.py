"""The method registry: one description per method, read by export, build, UI and CLI.

* no module under export/ or app/ (tab and service modules aside) names a method, and
  export/ does not import app/;
* config schemas hold no defaults (the YAML does, once), the YAMLs are complete, unknown
  keys are refused with the valid ones listed, and the plug-ins read no defaults of their own;
* every registered (method, variant) trains (smoke), exports and passes parity;
* a fifth method added through the registry alone (tests/toy_method.py) is trained, exported
  and answered by the app and the CLI.
"""
from __future__ import annotations

import ast
import json
import socket
from pathlib import Path

import numpy as np
import pytest

from methods import SMOKE_COMMON, all_methods, get_method, unregister
from methods.schema import ConfigError, keys_with_defaults
from training.config import default_config_path, load_config, resolve_config

ROOT = Path(__file__).resolve().parents[1]
BUILTIN = ("seqfake", "qmil", "dcl", "abcnorm", "toy")
METHOD_WORDS = {"seqfake", "seqfakeformer", "qmil", "dcl", "abcnorm", "gated_mil"}


def _code_words(path: Path) -> set[str]:
    """Identifiers and string constants of a module, docstrings and comments excluded."""
    tree = ast.parse(path.read_text())
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
                  and n.body and isinstance(n.body[0], ast.Expr)
                  and isinstance(n.body[0].value, ast.Constant)}
    words: set[str] = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings:
            words |= set(n.value.replace("/", " ").replace(".", " ").replace("_", " _ ").split())
            words.add(n.value)
        elif isinstance(n, ast.Name):
            words.add(n.id)
        elif isinstance(n, ast.Attribute):
            words.add(n.attr)
        elif isinstance(n, ast.alias):
            words |= set(n.name.split("."))
    return {w.lower() for w in words}


def _generic_modules() -> list[Path]:
    mods = sorted((ROOT / "export").glob("*.py")) + sorted((ROOT / "app").glob("*.py"))
    return [p for p in mods if p.name != "__init__.py" or p.parent.name == "export"]


def test_no_method_is_named_outside_its_own_files():
    offenders = {str(p.relative_to(ROOT)): sorted(_code_words(p) & METHOD_WORDS)
                 for p in _generic_modules()}
    offenders = {k: v for k, v in offenders.items() if v}
    assert not offenders, f"method names in generic modules: {offenders}"


def test_the_scan_sees_a_method_name(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text('"""qmil is fine in a docstring."""\nMODEL = "qmil"\n')
    assert "qmil" in _code_words(bad)
    bad.write_text('"""qmil is fine in a docstring."""\n# and in a comment: dcl\nX = 1\n')
    assert not _code_words(bad) & METHOD_WORDS


def test_export_does_not_import_app():
    for p in sorted((ROOT / "export").glob("*.py")):
        for n in ast.walk(ast.parse(p.read_text())):
            names = ([a.name for a in n.names] if isinstance(n, ast.Import) else
                     [n.module or ""] if isinstance(n, ast.ImportFrom) else [])
            assert not any(x == "app" or x.startswith("app.") for x in names), p.name


def test_registry_lists_the_methods_and_their_variants():
    names = [d.name for d in all_methods()]
    assert names[:5] == list(BUILTIN)
    assert "seqfakeformer" in get_method("seqfake").variants
    assert get_method("seqfake").variant({"arch": "seqfakeformer", "task": "components"}).name \
        == "seqfakeformer"
    assert get_method("seqfake").variant({"arch": "seqfake", "task": "binary"}).name == "binary"
    with pytest.raises(KeyError, match="choose from"):
        get_method("nope")


@pytest.mark.parametrize("method", BUILTIN)
def test_defaults_are_written_once_in_the_yaml(method):
    desc = get_method(method)
    assert keys_with_defaults(desc.schema) == []          # the schema: types only
    resolve_config(method)                                # the YAML: every key, valid


def test_keys_with_defaults_finds_a_code_default():
    from dataclasses import dataclass

    @dataclass
    class S:
        a: int
        b: int = 3
    assert keys_with_defaults(S) == ["b"]


def test_unknown_key_is_refused_with_the_valid_keys():
    with pytest.raises(ConfigError) as exc:
        resolve_config("qmil", overrides=["train.epohcs=1"])
    msg = str(exc.value)
    assert "train.epohcs" in msg and "did you mean 'epochs'" in msg
    for key in ("batch_size", "epochs", "eval_every", "max_steps", "num_workers"):
        assert key in msg
    with pytest.raises(ConfigError, match="unknown config key 'trian'.*valid keys: .*train"):
        resolve_config("qmil", overrides=["trian.epochs=1"])


@pytest.mark.parametrize("override, message", [
    ("train.epochs=0.5", "train.epochs must be an integer, got 0.5"),
    ("train.epochs=one", "train.epochs must be an integer, got 'one'"),
    ("train.epochs=0", "train.epochs must be >= 1, got 0"),
    ("data.task=faces", "data.task must be one of 'components', 'attributes', 'binary'"),
    ("model.pos_embed=maybe", "model.pos_embed must be true or false"),
])
def test_wrong_values_name_their_key(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        resolve_config("seqfake", overrides=[override])


def test_cli_reports_a_config_typo_and_exits_2(tmp_path, capsys):
    from training.__main__ import main

    assert main(["toy", "--artifacts", str(tmp_path), "--set", "train.epohcs=1"]) == 2
    assert "unknown config key 'train.epohcs'" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()               # nothing trained


def test_a_user_config_file_holds_only_what_it_changes(tmp_path):
    f = tmp_path / "mine.yaml"
    f.write_text("train: {epochs: 1}\nloss: {lam: 0.5}\n")
    cfg = resolve_config("qmil", f)
    assert cfg["train"]["epochs"] == 1 and cfg["loss"]["lam"] == 0.5
    assert cfg["train"]["batch_size"] == load_config(default_config_path("qmil"))["train"]["batch_size"]
    f.write_text("train: {epocs: 1}\n")
    with pytest.raises(ConfigError, match="train.epocs"):
        resolve_config("qmil", f)


def _cfg_get_with_default(path: Path) -> list[str]:
    """``<...cfg...>.get("key", default)`` calls: a config default written in code."""
    found = []
    for n in ast.walk(ast.parse(path.read_text())):
        if (isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "get"
                and len(n.args) == 2 and isinstance(n.args[0], ast.Constant)):
            target = ast.unparse(n.func.value)
            if "cfg" in target or target in ("d", "m", "aug", "run"):
                found.append(f"{path.name}:{n.lineno} {ast.unparse(n)}")
    return found


def test_plugins_and_engine_read_no_config_defaults_of_their_own():
    files = sorted((ROOT / "training" / "methods").glob("*.py")) + [ROOT / "training" / "engine.py"]
    found = [f for p in files for f in _cfg_get_with_default(p)]
    assert not found, found


def test_the_default_scan_sees_a_default(tmp_path):
    p = tmp_path / "m.py"
    p.write_text('x = self.data_cfg.get("task", "components")\n')
    assert _cfg_get_with_default(p)


# --- every variant exports ----------------------------------------------------------------
# trained variants (an imported one is exported by tests/test_published_seqfakeformer.py)
VARIANTS = [(d.name, v) for d in all_methods() for v in d.variants
            if not d.variants[v].imported]


@pytest.fixture(scope="module")
def variant_artifacts(tmp_path_factory):
    return tmp_path_factory.mktemp("variants")


def _train_and_export(art: Path, method: str, variant: str) -> tuple[str, dict]:
    """One smoke step of (method, variant) with its registered overrides, exported."""
    from export.pipeline import export_run
    from training.engine import Trainer
    from training.methods import build_method

    desc = get_method(method)
    run = f"{method}-{variant}"
    cfg = resolve_config(method, overrides=[*SMOKE_COMMON, *desc.smoke,
                                            *desc.variants[variant].overrides,
                                            "train.max_steps=1", f"run.name={run}",
                                            f"run.artifacts={art}"])
    Trainer(method, build_method(method, cfg), cfg, artifacts=art, progress=False).fit()
    return run, export_run(art, run, int8=False)  # int8: tests/test_int8.py


@pytest.mark.slow
@pytest.mark.parametrize("method, variant", VARIANTS, ids=[f"{m}-{v}" for m, v in VARIANTS])
def test_every_registered_variant_exports_and_passes_parity(method, variant, variant_artifacts):
    """Train one step of each (method, variant) with its registered overrides, export it
    through the registry and check the ONNX file against eager torch."""
    import torch

    from runtime.engine import OnnxModel

    v = get_method(method).variants[variant]
    run, entry = _train_and_export(variant_artifacts, method, variant)
    assert entry["variant"] == variant and entry["method"] == method
    assert entry["outputs"] == list(v.io.outputs)
    assert [i["name"] for i in entry["inputs"]] == list(v.io.inputs)
    assert entry["parity_max_abs_diff"] < 1e-4
    onnx = OnnxModel(run, entry, variant_artifacts)
    assert onnx.input_names == list(v.io.inputs) and onnx.output_names == list(v.io.outputs)
    # an independent check on fresh inputs at another batch size, through the runtime layer
    from export.pipeline import view_of
    from training.checkpoint import load_trained

    model, ckpt = load_trained(variant_artifacts / "runs" / run / "checkpoint.pt")
    _, view = view_of(model, ckpt)
    ins = tuple(torch.cat([t, t.flip(0)])[:3] if t.is_floating_point() else t
                for t in view.inputs)
    with torch.no_grad():
        ref = view.module(*ins)
    ref = ref if isinstance(ref, tuple) else (ref,)
    got = onnx.run({n: t.numpy() for n, t in zip(v.io.inputs, ins)})
    for name, r in zip(v.io.outputs, ref):
        np.testing.assert_allclose(got[name], r.numpy(), atol=1e-4, rtol=0, err_msg=name)


@pytest.mark.slow
def test_the_face_service_answers_with_the_decoder_variant(variant_artifacts):
    """A served seqfakeformer model: the report's order is the decoder's greedy sequence."""
    from app.services.face import analyze_face
    from runtime.engine import Engine

    run, entry = _train_and_export(variant_artifacts, "seqfake", "seqfakeformer")
    engine = Engine(variant_artifacts)
    crop = (np.random.default_rng(0).random((96, 96, 3)) * 255).astype(np.uint8)
    res = analyze_face(engine, None, crop, is_crop=True, model_name=run)
    r = res.report
    assert r["decoder"] == "autoregressive" and r["model"] == run
    seq = engine.get(run).run({"image": engine.get(run).prepare([res.crop])})["sequence"][0]
    tokens = list(seq) + [0]
    expected = [int(c) for c in tokens[:tokens.index(0)]]
    assert [entry["labels"].index(s["component"]) + 1 for s in r["sequence"]] == expected
    assert r["raw_verdict"] == ("manipulated" if expected else "real")
    assert r["verdict"] == (r["raw_verdict"] if r["reliable"] else "unreliable")
    assert res.where is None                                  # no where-map (no token map)


# --- a method added through the registry alone ---------------------------------------------
def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_a_method_added_through_the_registry_alone_is_trained_exported_and_served(
        tmp_path, monkeypatch, capsys):
    from tests import toy_method

    monkeypatch.setenv("REPLENS_METHODS", "tests.toy_method")
    monkeypatch.chdir(ROOT)                          # the subprocesses import tests.toy_method
    try:
        assert toy_method.NAME in [d.name for d in all_methods()]
        from app.build import ensure_artifacts, plan

        art = tmp_path / "art"
        (item,) = plan(art, smoke=True, only=[toy_method.NAME])
        assert item.method == toy_method.NAME and f"run.name={toy_method.NAME}" in item.overrides
        ensure_artifacts(art, smoke=True, only=[toy_method.NAME])   # python -m training/export
        manifest = json.loads((art / "manifest.json").read_text())
        entry = manifest["models"][toy_method.NAME]
        assert entry["method"] == toy_method.NAME and entry["parity_max_abs_diff"] < 1e-4
        assert entry["training"]["config"]["line"]["n"] == 32        # its smoke override

        from app.cli import main as cli

        capsys.readouterr()                          # the build's own lines
        assert cli(["--artifacts", str(art), "toyline", "1,1,1,1,1,1,1,1"]) == 0
        y_cli = json.loads(capsys.readouterr().out)["y"]
        assert cli(["--artifacts", str(art), "toyline", "1,2"]) == 2
        assert "8 comma-separated numbers" in capsys.readouterr().err

        from gradio_client import Client

        from app.server import create_app

        demo, _ = create_app(art)
        port = _port()
        demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True,
                    quiet=True)
        try:
            client = Client(f"http://127.0.0.1:{port}/", verbose=False)
            y_app = client.predict("1,1,1,1,1,1,1,1", api_name="/toyline")["y"]
            status = client.predict(api_name="/status")
        finally:
            demo.close()
        assert y_app == pytest.approx(y_cli)
        assert status["models"][toy_method.NAME]["status"] == "ok"
        # the answer is the model's: the trained checkpoint in eager torch gives the same y
        import torch

        from training.checkpoint import load_trained

        model, _ = load_trained(art / "runs" / toy_method.NAME / "checkpoint.pt")
        with torch.no_grad():
            assert float(model(torch.ones(1, 8))[0, 0]) == pytest.approx(y_app, abs=1e-5)
    finally:
        unregister(toy_method.NAME)
