"""Regression tests on stored outputs (as open_clip does).

Every registered model (``models.registry.list_models()``) has at least one stored case in
``tests/data/regression/<case>.npz``: a fixed input, the outputs of the eval-mode forward of
the network built with ``torch.manual_seed(0)`` and small, training-like kwargs (stored as
JSON in the file), and a checksum of those weights. Each test rebuilds the network from the
stored name and kwargs, runs the stored input and compares. A silent numerical change of a
model (an eps, an activation, an init, a reshaped attention) makes its case fail; a new model
without a case fails :func:`test_every_registered_model_has_a_stored_case`.

Regenerate (only once a change of outputs is understood and intended; commit the files
with it)::

    python -m tests.data.make_regression --only <case> --force   # one case
    python -m tests.data.make_regression                         # add missing cases
    python -m tests.data.make_regression --force                 # all (e.g. torch upgrade)

A new model: add a case to ``CASES`` in ``tests/data/make_regression.py`` and run the
second command. Without ``--force`` the script never overwrites a file.

Tolerance: ``rtol=1e-4, atol=1e-5`` on float outputs; integer outputs (the greedy
``sequence``) must be equal (the generator refuses a case whose argmax has a top-2 gap
under 1e-3). The stored outputs come from float32 CPU kernels; another machine, BLAS/oneDNN
build, SIMD width or thread count sums in another order and moves float32 results by
~1e-7 relative per operation, more after the 20-50 layers here, so bit equality would fail
for no reason. Measured on the stored cases: 2 threads instead of 1 uses at most 2% of the
tolerance (|diff| / (atol + rtol |want|)), oneDNN switched off (other conv kernels) at most
9%. A real change is far above it: a LayerNorm eps 1e-5 -> 1e-6 in the seqfake encoder
layer moves the worst output of each seqfake case by 1e-3 to 8e-2 relative, GELU's tanh
approximation by 4e-4 to 1e-2 (both fail here). ``atol`` covers entries that are 0 or near 0 (padding attention, clamped
similarities), where a relative bound means nothing. Weights are checked first (element
count exactly, sum of absolute values to 1e-6 relative), so a failure says whether the
init/architecture or the forward changed. A torch or timm upgrade can change the init or a
kernel; the stored versions are in the failure message.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.data import make_regression as mr

RTOL, ATOL = 1e-4, 1e-5
MAX_TOTAL_BYTES = 2 * 1024 * 1024

STORED = sorted(mr.OUT_DIR.glob("*.npz"))
ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _meta(path):
    return mr.load(path)[0]


# Networks re-implemented from published code: their stored outputs are the authors' own
# network's, on seeded weights (tests/data/published/<file>, compared by
# tests/test_published_<file stem>.py), so they need no case here.
AUTHORS_OUTPUTS = {"seqfakeformer_published": "seqfakeformer.json",
                   "sbi_efficientnet_b4": "sbi.json"}


def test_every_registered_model_has_a_stored_case():
    from models.registry import list_models

    stored_models = {_meta(p)["model"] for p in STORED}
    registered = set(list_models())
    for model, name in AUTHORS_OUTPUTS.items():
        assert model in registered, f"{model} is no longer registered"
        assert (mr.OUT_DIR.parent / "published" / name).is_file(), name
        assert (ROOT / "tests" / f"test_published_{Path(name).stem}.py").is_file(), name
    missing = sorted(registered - stored_models - set(AUTHORS_OUTPUTS))
    assert not missing, (f"registered models without stored outputs: {missing}; add a case "
                         f"to tests/data/make_regression.py CASES and run "
                         f"`python -m tests.data.make_regression`")
    stale = sorted(stored_models - registered)
    assert not stale, f"stored outputs of models no longer registered: {stale}"


def test_stored_files_match_the_generator_cases():
    """Each file is a case of the generator with the same model and kwargs, and back."""
    files = {p.stem for p in STORED}
    assert files == set(mr.CASE_BY_NAME), (
        f"files without a case: {sorted(files - set(mr.CASE_BY_NAME))}; cases without a "
        f"file: {sorted(set(mr.CASE_BY_NAME) - files)}")
    for p in STORED:
        meta, case = _meta(p), mr.CASE_BY_NAME[p.stem]
        assert (meta["case"], meta["model"], meta["kwargs"]) == (
            case["case"], case["model"], case["kwargs"]), (
            f"{p.name} was written from other kwargs than the generator has now: regenerate "
            f"it (--only {p.stem} --force)")


def test_stored_outputs_are_small():
    total = sum(p.stat().st_size for p in STORED)
    assert total < MAX_TOTAL_BYTES, f"tests/data/regression holds {total / 1e6:.2f} MB"


@pytest.mark.parametrize("path", STORED, ids=[p.stem for p in STORED])
def test_outputs_match_stored(path):
    meta, inputs, expected = mr.load(path)
    versions = (f"stored with torch {meta['torch']}, timm {meta['timm']}; regenerate only if "
                f"the change is intended: python -m tests.data.make_regression --only "
                f"{meta['case']} --force")
    net = mr.build(meta["model"], meta["kwargs"])
    numel, abs_sum = mr.weight_checksum(net)
    assert numel == meta["weights_numel"], f"architecture changed ({versions})"
    assert abs_sum == pytest.approx(meta["weights_abs_sum"], rel=1e-6), (
        f"weight init changed ({versions})")
    got = mr.run(net, inputs, meta["call"], meta["output_names"])
    assert list(got) == list(expected), f"output names changed ({versions})"
    for name, want in expected.items():
        have = got[name]
        assert have.shape == want.shape and have.dtype == want.dtype, (
            f"{name}: {have.dtype}{have.shape} != stored {want.dtype}{want.shape}")
        if np.issubdtype(want.dtype, np.floating):
            np.testing.assert_allclose(have, want, rtol=RTOL, atol=ATOL,
                                       err_msg=f"{meta['case']} output {name!r} ({versions})")
        else:
            np.testing.assert_array_equal(have, want,
                                          err_msg=f"{meta['case']} output {name!r} ({versions})")


def test_generator_refuses_to_overwrite_and_reproduces(tmp_path, capsys):
    case = "toy_regressor"
    assert mr.main(["--only", case, "--out", str(tmp_path)]) == 0
    path = tmp_path / f"{case}.npz"
    _, inputs, outputs = mr.load(path)
    _, want_in, want_out = mr.load(mr.OUT_DIR / f"{case}.npz")
    for a, b in ((inputs, want_in), (outputs, want_out)):
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_allclose(a[k], b[k], rtol=RTOL, atol=ATOL)
    before = path.read_bytes()
    path.write_bytes(b"not an npz")
    assert mr.main(["--only", case, "--out", str(tmp_path)]) == 1
    assert "refusing to overwrite" in capsys.readouterr().err
    assert path.read_bytes() == b"not an npz"
    assert mr.main(["--only", case, "--out", str(tmp_path), "--force"]) == 0
    assert mr.load(path)[2].keys() == outputs.keys() and len(path.read_bytes()) == len(before)
