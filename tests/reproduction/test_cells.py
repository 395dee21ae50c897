"""reproduce: notebook parameters -> EditConfig, paths, paper comparison helpers, results loading."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from crispedit_lite.reproduction import cells as reproduce
from crispedit_lite.reproduction import comparison, paths
from crispedit_lite.reproduction.cells import PARAMETERS, config_from_parameters

ROOT = Path(__file__).resolve().parents[1]
CPU = dict(MODEL="smollm2-135m-instruct", DATASET="counterfact", DATA_PATH="smollm2-counterfacts",
           N_EDITS=6, METHOD="crispedit", GAMMA=0.9, N_CAPABILITY=32, LAYERS=[20, 21], SEQUENTIAL=False,
           CHUNK_SIZE=100, JUDGE=False, RUN_LM_EVAL=False, RESULTS_DIR="results/cpu/x", SEED=0,
           DEVICE="cpu", DTYPE="float32", EPOCHS=8, BATCH_SIZE=8)


def _yaml(cell):
    return yaml.safe_load((ROOT / "reproduce" / f"{cell}.yaml").read_text())


def test_parameters_are_the_yaml_keys():
    optional = {"CONFIG"}  # other EditConfig fields, only where a cell needs them
    assert set(PARAMETERS) - optional == set(_yaml("table1_zsre_crispedit")) - optional == set(CPU)


def test_paper_model_gets_the_paper_preset():
    cfg, preset = config_from_parameters(_yaml("table1_zsre_crispedit"))
    assert preset == "paper"
    assert (cfg.method, cfg.gamma, cfg.n_capability, cfg.layers) == \
        ("crispedit", 0.7, 10_000, (19, 20, 21, 22, 23))
    assert (cfg.capability_source, cfg.capability_max_length, cfg.eigh_dtype) == ("wikipedia", 512, "float32")
    assert (cfg.epochs, cfg.batch_size, cfg.seed) == (25, 32, 0)
    seq, _ = config_from_parameters(_yaml("table5_qwen_wikibigedit_crispedit_seq"))
    assert (seq.method, seq.n_capability, seq.gamma, seq.chunk_size, seq.layers) == \
        ("crispedit_seq", 30, 0.995, 100, (4, 5, 6))


def test_other_models_get_the_cpu_preset_with_overrides():
    cfg, preset = config_from_parameters(CPU)
    assert preset == "cpu"
    assert (cfg.capability_source, cfg.gamma, cfg.n_capability, cfg.layers, cfg.epochs) == \
        ("offline", 0.9, 32, (20, 21), 8)
    assert config_from_parameters(dict(CPU, LAYERS=None))[0].layers is None
    assert config_from_parameters(dict(CPU, SEQUENTIAL=True, CHUNK_SIZE=4))[0].method == "crispedit_seq"


@pytest.mark.parametrize(("changes", "match"), [
    (dict(METHOD="crispedit_seq", SEQUENTIAL=False), "contradict"),
    (dict(METHOD="locbf_ft", SEQUENTIAL=True), "'locbf_ft' has no sequential form"),
    (dict(MODEL="Qwen/Qwen2.5-1.5B-Instruct", DATASET="smollm2"), "DATASET must be one of"),
    (dict(METHOD="memit2"), "unknown method 'memit2'"),
])
def test_bad_parameters_are_clear_errors(changes, match):
    with pytest.raises(ValueError, match=match):
        config_from_parameters(dict(CPU, **changes))
    params = dict(CPU)
    del params["GAMMA"]
    with pytest.raises(ValueError, match=r"lack \['GAMMA'\]"):
        config_from_parameters(params)


def test_paths_resolve_against_the_repository_root(tmp_path):
    assert paths.repo_root(ROOT / "notebooks") == ROOT
    assert paths.resolve_path("results/a", ROOT) == ROOT / "results" / "a"
    assert paths.resolve_path(tmp_path / "x") == tmp_path / "x"
    assert paths.repo_root(tmp_path) is None


def _run(run_id, *, model="smollm2-135m-instruct", data="smollm2-counterfacts", dataset="counterfact",
         method="crispedit", gamma=0.9, n_edits=6, created="2026-01-01T00:00:00+00:00"):
    cfg = config_from_parameters(dict(CPU, MODEL=model, DATASET=dataset, METHOD=method, GAMMA=gamma))[0]
    after = {"wild": {"scores": {"qa": {"rel": 50.0, "gen": 25.0}, "none": {"rel": 40.0, "gen": 20.0}},
                      "settings": {"scorer": "exact_match"}},
             "teacher_forced": {"scores": {"rel": 100.0, "gen": 80.0, "spec": 70.0}}}
    before = {"teacher_forced": {"scores": {"rel": 0.0, "gen": 10.0, "spec": 90.0}}}
    return {"schema_version": 1, "run_id": run_id, "created": created, "command": "c",
            "settings": {"model": model, "dataset": dataset, "data": data, "n_edits": n_edits,
                         "method": method, "seed": 0, "judge": False, "config": cfg.to_dict()},
            "metrics": {"before": before, "after": after}, "timings": {"total_s": 5.0, "kfac_s": 1.0},
            "environment": {"python": "3", "torch": "2", "device": "cpu", "packages": {}},
            "edit": {"projectors": {"model.layers.20.mlp.down_proj": {"editable_fraction": 0.9}}}}


def test_run_metrics_and_editable_fractions():
    m = reproduce.run_metrics(_run("a")).set_index("metric")
    assert m.loc["TF Rel", "after"] == 100.0 and m.loc["TF Rel", "before"] == 0.0
    assert m.loc["QA Rel", "after"] == 50.0 and m.loc["QA Rel"].isna()["before"]
    assert list(m.index) == ["QA Rel", "QA Gen", "NoCtx Rel", "NoCtx Gen", "TF Rel", "TF Gen", "TF Spec"]
    f = reproduce.editable_fractions(_run("a"))
    assert list(f.index) == ["batch"] and f.loc["batch", "layer 20"] == 0.9
    seq = _run("s")
    seq["edit"]["projectors"] = {"final": {}, "editable_fraction_per_chunk": [
        {"model.layers.20.mlp.down_proj": 0.9}, {"model.layers.20.mlp.down_proj": 0.8}]}
    assert reproduce.editable_fractions(seq)["layer 20"].tolist() == [0.9, 0.8]
    assert reproduce.editable_fractions({"edit": {"projectors": {}}}).empty


def test_compare_runs_flags_data_that_is_not_the_papers():
    frame = comparison.compare_runs([_run("a")], ["table1", "table3", "table8"], include_missing=False)
    assert set(frame["table"]) == {"table1", "table3", "table8"}
    assert not frame["paper scale"].any()
    assert frame["scale notes"].str.contains("edit data smollm2-counterfacts", regex=False).all()
    tf = frame[(frame["table"] == "table3") & (frame["metric"] == "TF Rel")]
    assert tf.set_index("method")["this run"].to_dict() == {"base": 0.0, "crispedit": 100.0}
    # a paper-file run is not flagged for its data (it still is for the model etc.)
    other = comparison.compare_runs([_run("b", data="/x/data/counterfact-edit_3k.json")], ["table1"],
                                   include_missing=False)
    assert not other["scale notes"].str.contains("edit data").any()


def test_side_by_side_and_scale_summary():
    frame = comparison.compare_runs([_run("a")])
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
    (tmp_path / "a" / "one.json").write_text(json.dumps(_run("one", created="2026-01-02T00:00:00+00:00")))
    (tmp_path / "two.json").write_text(json.dumps(_run("two")))
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
