"""export_all over many runs: a failing run is reported, the others exported."""
from __future__ import annotations

import pytest


def test_export_all_skips_a_failing_run_and_names_it(tmp_path, monkeypatch):
    """One run that cannot be exported (an older architecture, a corrupt file) must not stop
    the others; the failure is named at the end."""
    from export import pipeline

    done: list[str] = []

    def fake_export(artifacts, run, int8=True, options=None):
        if run == "old":
            raise RuntimeError("Error(s) in loading state_dict for QueryMIL:\n\tMissing key(s)")
        done.append(run)

    for run in ("a", "old", "b"):
        (tmp_path / "runs" / run).mkdir(parents=True)
        (tmp_path / "runs" / run / "summary.json").write_text("{}")
    monkeypatch.setattr(pipeline, "export_run", fake_export)
    monkeypatch.setattr(pipeline, "read_manifest", lambda artifacts: {"models": {}})
    monkeypatch.setattr(pipeline, "all_methods", lambda: [])  # no post-export hooks
    with pytest.raises(RuntimeError, match=r"1 of 3 runs failed.*old: RuntimeError: Error\(s\) in loading"):
        pipeline.export_all(tmp_path)
    assert done == ["a", "b"]
