"""The served calibration (runtime/calibration.py): the recorded kind and temperature applied
to the recorded output, worked by hand; a damaged record is refused; no service reads the
record itself."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from runtime import calibration
from runtime.manifest import ManifestError

LN3 = math.log(3.0)
R3 = math.sqrt(3.0)
ROOT = Path(__file__).resolve().parents[1]


def entry(kind: str, t: object, output: str = "logits") -> dict:
    return {"name": "m", "calibration": {"kind": kind, "temperature": t, "output": output}}


def test_softmax_and_sigmoid_by_hand():
    # softmax of (0, ln 3): (1, 3) / 4; at T = 2 the logits halve: (1, sqrt 3) / (1 + sqrt 3)
    z = np.array([[0.0, LN3]])
    assert calibration.probabilities(z, 1.0, "softmax") == \
        pytest.approx(np.array([[0.25, 0.75]]))
    assert calibration.probabilities(z, 2.0, "softmax") == \
        pytest.approx(np.array([[1 / (1 + R3), R3 / (1 + R3)]]))
    # sigmoid elementwise: sigmoid(0) = 1/2, sigmoid(ln 3) = 3/4,
    # sigmoid(ln 3 / 2) = sqrt 3 / (1 + sqrt 3)
    assert calibration.probabilities(z, 1.0, "sigmoid") == \
        pytest.approx(np.array([[0.5, 0.75]]))
    assert calibration.probabilities(z, 2.0, "sigmoid") == \
        pytest.approx(np.array([[0.5, R3 / (1 + R3)]]))
    with pytest.raises(ValueError, match="kind 'tanh'"):
        calibration.probabilities(z, 1.0, "tanh")


def test_apply_uses_the_recorded_kind_temperature_and_output():
    out = {"logits": np.array([[0.0, LN3]]), "probs": np.array([[0.9, 0.9]])}
    probs, t = calibration.apply(entry("softmax", 2.0), out, "probs")
    assert t == 2.0 and probs == pytest.approx(np.array([[1 / (1 + R3), R3 / (1 + R3)]]))
    probs, t = calibration.apply(entry("sigmoid", 2), out, "probs")
    assert t == 2.0 and probs == pytest.approx(np.array([[0.5, R3 / (1 + R3)]]))
    # a bag's one logit under another output name (qMIL: "logit")
    probs, t = calibration.apply(entry("sigmoid", 0.5, "logit"), {"logit": np.array([LN3]),
                                                                  "prob": np.array([0.1])}, "prob")
    assert t == 0.5 and probs == pytest.approx([9 / 10])   # sigmoid(2 ln 3) = 9 / 10


def test_without_a_record_the_model_answers_as_it_is():
    out = {"logits": np.array([[0.0, LN3]]), "probs": np.array([[0.2, 0.7]])}
    probs, t = calibration.apply({"name": "m"}, out, "probs")
    assert t is None and probs == pytest.approx(np.array([[0.2, 0.7]]))
    probs, t = calibration.apply({"name": "m"}, out, "logits", fallback_kind="softmax")
    assert t is None and probs == pytest.approx(np.array([[0.25, 0.75]]))
    # a record whose output the model does not return (an autoregressive decoder)
    probs, t = calibration.apply(entry("sigmoid", 2.0), {"probs": out["probs"]}, "probs")
    assert t is None and probs == pytest.approx(np.array([[0.2, 0.7]]))


@pytest.mark.parametrize("kind, t, what", [
    ("tanh", 1.5, "kind 'tanh'"), (None, 1.5, "kind None"), ("softmax", 0, "temperature 0"),
    ("sigmoid", -1.0, "temperature -1.0"), ("softmax", "2", "temperature '2'"),
    ("softmax", float("nan"), "temperature nan"), ("softmax", True, "temperature True")])
def test_a_damaged_record_is_refused(kind, t, what):
    with pytest.raises(ManifestError, match=what) as err:
        calibration.recorded(entry(kind, t))
    assert "model m" in str(err.value) and "export the model again" in str(err.value)


def test_no_service_reads_the_calibration_record_itself():
    for path in sorted((ROOT / "app").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        assert '"calibration"' not in text and '["temperature"]' not in text, path
