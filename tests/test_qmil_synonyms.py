"""The synonym/control-word evaluation runs on a trained qMIL run and reports every word."""
from __future__ import annotations

import math

from training.experiments.qmil_synonyms import CONTROLS, SYNONYMS, markdown, run


def test_synonym_report_on_the_smoke_model(smoke_artifacts):
    res = run(smoke_artifacts / "runs" / "qmil")
    rows = res["rows"]
    names = {r["class"] for r in rows}
    assert names == set(SYNONYMS)                      # every Fashion-MNIST class asked
    for r in rows:
        if "error" in r:                                # a word GloVe lacks is reported, not fatal
            assert r["kind"] != "class name"
            continue
        assert 0.0 <= r["bag_acc"] <= 1.0 and 0.0 <= r["yes_rate"] <= 1.0
        if r["kind"] == "class name":
            assert math.isclose(r["cosine_to_class"], 1.0, abs_tol=1e-5)
            assert r["word"] == r["class"]
        else:
            assert r["cosine_to_class"] < 0.999
    assert sum(r["kind"] == "control" for r in rows) == len(CONTROLS) * len(SYNONYMS)
    res.update(command="x", machine="y", seconds=1.0)
    md = markdown(res)
    assert "| class name |" in md and "(held out)" in md
