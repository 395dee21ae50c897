"""crispedit_lite.reproduction.comparison: runs beside the paper's cells, scale notes, loading runs,
the benchmark summary."""

from __future__ import annotations

import json

import pytest

from crispedit_lite.reproduction import comparison
from tests.helpers import cell_run_record


def test_compare_runs_flags_data_that_is_not_the_papers():
    frame = comparison.compare_runs([cell_run_record("a")], ["table1", "table3", "table8"],
                                    include_missing=False)
    assert set(frame["table"]) == {"table1", "table3", "table8"}
    assert not frame["paper scale"].any()
    assert frame["scale notes"].str.contains("edit data smollm2-counterfacts", regex=False).all()
    tf = frame[(frame["table"] == "table3") & (frame["metric"] == "TF Rel")]
    assert tf.set_index("method")["this run"].to_dict() == {"base": 0.0, "crispedit": 100.0}
    # a paper-file run is not flagged for its data (it still is for the model etc.)
    other = comparison.compare_runs([cell_run_record("b", data="/x/data/counterfact-edit_3k.json")],
                                    ["table1"], include_missing=False)
    assert not other["scale notes"].str.contains("edit data").any()


def test_side_by_side_and_scale_summary():
    frame = comparison.compare_runs([cell_run_record("a")])
    wide = comparison.side_by_side(frame, "table8")
    assert wide.shape == (21, 18)
    assert list(wide.columns[:2]) == [("QA Rel", "paper"), ("QA Rel", "this run")]
    row = wide.loc[("counterfact", "CrispEdit, γ = 0.9", "gamma=0.9, n_capability=10000")]
    assert row[("QA Rel", "paper")] == 79.4 and row[("QA Rel", "this run")] == 50.0
    with pytest.raises(ValueError, match="no cells of 'table9'"):
        comparison.side_by_side(frame, "table9")
    s = comparison.scale_summary(frame).set_index("table")
    assert s.loc["table8", "cells run"] == 9 and s.loc["table8", "at paper scale"] == 0
    why = s.loc["table5", "why not at paper scale"]
    assert "model smollm2-135m-instruct (paper: Qwen/Qwen2.5-1.5B-Instruct)" in why
    assert "not measured: " in why and "MMLU" in why and "did not measure" not in why
    assert s.loc["table6", "why not at paper scale"] == "not run"


def test_load_runs_reads_valid_files_and_names_bad_ones(tmp_path):
    assert comparison.load_runs(tmp_path / "missing") == ([], [])
    (tmp_path / "a").mkdir()
    one = cell_run_record("one", created="2026-01-02T00:00:00+00:00")
    (tmp_path / "a" / "one.json").write_text(json.dumps(one))
    (tmp_path / "two.json").write_text(json.dumps(cell_run_record("two")))
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "schema.json").write_text(json.dumps({"run_id": "x"}))
    runs, problems = comparison.load_runs(tmp_path, tmp_path / "a")
    assert [r["run_id"] for r in runs] == ["two", "one"]  # by creation time, each file once
    assert len(problems) == 2 and any(p.startswith("bad.json") for p in problems)
    assert any(p.startswith("schema.json") and "required" in p for p in problems)


def test_benchmark_summary(tmp_path):
    data = {"date": "2026-11-30", "hardware": {"gpu": "NVIDIA H200"}, "weights": "random init",
            "presets": {"llama3-8b": {"kfac": {"kfac_tokens_per_s": 1e4, "kfac_over_fwdbwd": 0.8},
                                      "step": {"plain_ft_s": 0.06, "best_ratio_to_plain_ft": 1.1,
                                               "best_crispedit_variant": "v"}},
                        "qwen2.5-1.5b": {"eigh": {"error": "boom"}}}}
    (tmp_path / "s.json").write_text(json.dumps(data))
    b = comparison.benchmark_summary(tmp_path.glob("*.json")).set_index("preset")
    assert b.loc["llama3-8b", "K-FAC tokens/s"] == 1e4 and b.loc["llama3-8b", "best variant"] == "v"
    assert b.loc["qwen2.5-1.5b", "K-FAC tokens/s"] != b.loc["qwen2.5-1.5b", "K-FAC tokens/s"]  # NaN
    assert (b["weights"] == "random init").all()
