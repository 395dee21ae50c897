"""crispedit_lite.reproduction.paper_tables: the paper's tables as transcribed, the join with this
project's runs, and the reproduce/ configs.

The expected values below are typed from the paper (arXiv 2602.15823 v2, Tables 1, 3-8), independently
of ``crispedit_lite/resources/paper_tables.json``, so a transcription slip fails here.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import math
from pathlib import Path

import pytest

pd = pytest.importorskip("pandas")

from crispedit_lite.reproduction.paper_tables import (  # noqa: E402
    compare,
    load_paper_tables,
    paper_tables_data,
    paper_value,
    run_metric,
    scale_issues,
    table_info,
)
from tests.helpers import LLAMA, ROOT, paper_run_record  # noqa: E402

WILD9 = ["QA Rel", "QA Gen", "NoCtx Rel", "NoCtx Gen", "MMLU", "IFEval", "TruthfulQA", "ARC-C", "GSM8K"]

# (table, dataset, method, metric, setting, value as printed in the paper)
SPOT = [
    # Table 1: LLaMA-3-8B-Instruct, 3,000 edits
    (1, "zsre", "crispedit", "QA Rel", {}, 80.5),
    (1, "counterfact", "crispedit", "GSM8K", {}, 76.5),
    (1, "wikibigedit", "alphaedit", "MMLU", {}, 58.5),
    (1, "zsre", "memit", "time", {}, 9 * 3600 + 27 * 60),
    (1, "counterfact", "lora_seq", "IFEval", {}, 62.4),
    (1, "wikibigedit", "ultraedit", "NoCtx Gen", {}, 52.0),
    (1, "zsre", "crispedit_seq", "TruthfulQA", {}, 53.6),
    (1, "counterfact", "adam_nscl", "ARC-C", {}, 39.5),
    (1, "wikibigedit", "lora", "time", {}, 58 * 60 + 42),
    (1, "zsre", "ft_seq", "QA Gen", {}, 3.5),
    (1, "wikibigedit", "base", "NoCtx Rel", {}, 16.4),
    (1, "counterfact", "crispedit", "time", {}, 3 * 60 + 17),
    # Table 3: teacher-forced
    (3, "counterfact", "adam_nscl", "TF Gen", {}, 81.5),
    (3, "zsre", "base", "TF Spec", {}, 37.8),
    (3, "wikibigedit", "crispedit", "TF Rel", {}, 99.9),
    (3, "zsre", "lora_seq", "TF Rel", {}, 36.8),
    (3, "counterfact", "memit", "TF Spec", {}, 49.4),
    (3, "wikibigedit", "ultraedit", "TF Gen", {}, 84.7),
    (3, "counterfact", "crispedit_seq", "TF Spec", {}, 52.3),
    # Table 4: 10,000 ZsRE edits
    (4, "zsre", "crispedit", "NoCtx Gen", {}, 28.9),
    (4, "zsre", "base", "QA Rel", {}, 2.0),
    (4, "zsre", "alphaedit", "MMLU", {}, 22.8),
    (4, "zsre", "adam_nscl", "IFEval", {}, 14.8),
    (4, "zsre", "locbf_ft", "GSM8K", {}, 73.0),
    (4, "zsre", "ultraedit", "QA Gen", {}, 16.7),
    # Table 5: Qwen-2.5-1.5B-Instruct
    (5, "wikibigedit", "crispedit_seq", "NoCtx Rel", {}, 83.4),
    (5, "zsre", "base", "MMLU", {}, 61.9),
    (5, "counterfact", "crispedit", "QA Gen", {}, 34.4),
    (5, "zsre", "adam_nscl", "QA Rel", {}, 62.6),
    (5, "wikibigedit", "ultraedit", "TruthfulQA", {}, 44.5),
    (5, "counterfact", "ft", "GSM8K", {}, 6.5),
    (5, "zsre", "crispedit", "IFEval", {}, 32.8),
    # Table 6: prompt masking
    (6, "zsre", "crispedit_seq", "QA Rel", {"chunk_size": 100}, 71.1),
    (6, "zsre", "crispedit_seq", "QA Rel", {"chunk_size": 500}, 12.0),
    (6, "zsre", "crispedit_seq", "QA Rel", {"prompt_masking": True}, 12.0),
    (6, "zsre", "crispedit_seq", "QA Rel", {"prompt_masking": False}, 71.1),
    # Table 7: capability-set size n, gamma = 0.9
    (7, "zsre", "crispedit", "IFEval", {"n_capability": 500}, 72.3),
    (7, "zsre", "crispedit", "QA Rel", {"n_capability": 10}, 53.6),
    (7, "zsre", "crispedit", "NoCtx Rel", {"n_capability": 100_000}, 54.2),
    (7, "zsre", "crispedit", "ARC-C", {"n_capability": 50}, 53.0),
    (7, "zsre", "crispedit", "GSM8K", {"n_capability": 1000}, 74.5),
    (7, "zsre", "ft", "IFEval", {}, 45.0),
    # Table 8: energy threshold gamma, n = 10,000
    (8, "counterfact", "crispedit", "QA Rel", {"gamma": 0.95}, 72.0),
    (8, "zsre", "crispedit", "NoCtx Rel", {"gamma": 0.5}, 43.4),
    (8, "wikibigedit", "crispedit", "IFEval", {"gamma": 0.99}, 62.5),
    (8, "counterfact", "crispedit", "GSM8K", {"gamma": 0.5}, 43.5),
    (8, "wikibigedit", "crispedit", "QA Gen", {"gamma": 0.8}, 72.1),
    (8, "zsre", "crispedit", "MMLU", {"gamma": 0.99}, 69.4),
    (8, "counterfact", "crispedit", "NoCtx Gen", {"gamma": 0.6}, 14.3),
]


@pytest.mark.parametrize("table, dataset, method, metric, setting, expected", SPOT)
def test_spot_check_against_the_paper(table, dataset, method, metric, setting, expected):
    assert paper_value(table, dataset, method, metric, **setting) == pytest.approx(expected, abs=1e-9)


def test_spot_checks_cover_every_table_four_times():
    counts = pd.Series([s[0] for s in SPOT]).value_counts()
    assert all(counts.get(t, 0) >= 4 for t in (1, 3, 4, 5, 6, 7, 8))


EXPECTED_ROWS = {"table1": 39, "table3": 39, "table4": 6, "table5": 24, "table6": 2, "table7": 10,
                 "table8": 21}


def test_row_counts_columns_and_origin():
    data = paper_tables_data()
    counts = pd.Series([r["table"] for r in data["rows"]]).value_counts().to_dict()
    assert counts == EXPECTED_ROWS
    for r in data["rows"]:
        cols = table_info(r["table"])["columns"]
        expected = [c for c in cols if not (c == "time" and r["method"] == "base")]
        assert list(r["metrics"]) == expected, r
        assert r["origin"] == "paper"
    for t in EXPECTED_ROWS:
        assert table_info(t)["source"] == f"arXiv 2602.15823 v2, Table {t[5:]}"
    assert table_info(1)["columns"] == WILD9 + ["time"]
    assert table_info(3)["columns"] == ["TF Rel", "TF Gen", "TF Spec"]
    assert table_info(5)["model"] == "Qwen/Qwen2.5-1.5B-Instruct" and table_info(4)["n_edits"] == 10_000


def test_long_frame_has_no_duplicate_cells():
    df = load_paper_tables()
    assert list(df.columns[:6]) == ["table", "dataset", "method", "label", "setting", "gamma"]
    assert not df.duplicated(["table", "dataset", "method", "setting", "metric"]).any()
    assert (df["origin"] == "paper").all() and df["value"].between(0, 40_000).all()
    assert len(df) == sum(len(r["metrics"]) for r in paper_tables_data()["rows"])


def _row(table, dataset, method, **setting):
    return {m: paper_value(table, dataset, method, m, **setting) for m in WILD9}


def test_rows_the_paper_repeats_are_identical():
    base = _row(1, "zsre", "base")
    caps = WILD9[4:]
    for ds in ("counterfact", "wikibigedit"):
        assert {m: _row(1, ds, "base")[m] for m in caps} == {m: base[m] for m in caps}
    assert _row(7, "zsre", "base") == base
    assert {m: _row(4, "zsre", "base")[m] for m in caps} == {m: base[m] for m in caps}
    assert _row(7, "zsre", "ft") == _row(1, "zsre", "ft")  # n = 0: no projection
    assert _row(8, "zsre", "crispedit", gamma=0.7) == _row(1, "zsre", "crispedit")
    for ds in ("counterfact", "wikibigedit"):
        assert _row(8, ds, "crispedit", gamma=0.9) == _row(1, ds, "crispedit")
    assert _row(7, "zsre", "crispedit", n_capability=10_000) == _row(8, "zsre", "crispedit", gamma=0.9)
    assert paper_value(6, "zsre", "crispedit_seq", "QA Rel", chunk_size=100) == \
        paper_value(1, "zsre", "crispedit_seq", "QA Rel")
    qwen = {m: _row(5, "zsre", "base")[m] for m in caps}
    for ds in ("counterfact", "wikibigedit"):
        assert {m: _row(5, ds, "base")[m] for m in caps} == qwen
    mend = {m: _row(1, "zsre", "mend")[m] for m in caps}  # collapsed model: same everywhere
    assert mend == {"MMLU": 22.9, "IFEval": 18.2, "TruthfulQA": 0.0, "ARC-C": 26.0, "GSM8K": 0.0}
    for ds in ("counterfact", "wikibigedit"):
        assert {m: _row(1, ds, "mend")[m] for m in caps} == mend


def test_settings_and_notes_match_the_paper_and_the_presets():
    from crispedit_lite.editing.config import paper_config

    for ds in ("zsre", "counterfact", "wikibigedit"):
        for method in ("crispedit", "crispedit_seq"):
            s = table_info(1)["crispedit_settings"][method][ds]
            cfg = paper_config(method, ds)
            assert (s["n_capability"], s["gamma"]) == (cfg.n_capability, cfg.gamma)
    assert table_info(4)["crispedit_settings"]["crispedit"]["zsre"] == {"n_capability": 1000, "gamma": 0.7}
    assert table_info(7)["varies"] == ["n_capability"] and table_info(8)["varies"] == ["gamma"]
    notes = paper_tables_data()["notes"]
    assert {"table7_caption", "mend_collapse", "baseline_batching", "adam_nscl_implementation"} <= set(notes)
    assert "0.7" in notes["table7_caption"] and "table7_caption" in table_info(7)["notes"]


def test_paper_value_errors_name_the_choices():
    with pytest.raises(ValueError, match="several"):
        paper_value(8, "zsre", "crispedit", "QA Rel")
    with pytest.raises(ValueError, match="gamma=0.95"):
        paper_value(8, "zsre", "crispedit", "QA Rel", gamma=0.42)
    with pytest.raises(ValueError, match="no paper row"):
        paper_value(1, "zsre", "memit_plus", "QA Rel")
    with pytest.raises(ValueError, match="column"):
        paper_value(4, "zsre", "crispedit", "time")
    with pytest.raises(ValueError, match="table must"):
        paper_value("first", "zsre", "crispedit", "QA Rel")
    assert paper_value("Table 1", "CF", "crispedit", "QA Rel") == paper_value("table1", "counterfact",
                                                                              "crispedit", "QA Rel")


def test_compare_joins_runs_and_flags_scale():
    gpu = paper_run_record("gpu", LLAMA, 3000, 0.7, 10_000, "wikipedia", "2026-01-02")
    cpu = paper_run_record("cpu", "smollm2-135m-instruct", 16, 0.7, 32, "offline", "2026-01-03", qa_rel=30.0)
    other = paper_run_record("other", "smollm2-135m-instruct", 16, 0.7, 32, "offline", "2026-01-03",
                    dataset="smollm2-counterfacts")
    paper = load_paper_tables()
    sel = paper[(paper.dataset == "zsre") & (paper.method.isin(["crispedit", "base"]))
                & paper.table.isin(["table1", "table3", "table8"])]
    out = compare(sel, [cpu, gpu, other])
    assert out.attrs["unmatched_runs"] == ["other"] and out.attrs["unused_runs"] == ["cpu"]
    cell = out[(out.table == "table1") & (out.method == "crispedit")].set_index("metric")
    assert cell.loc["QA Rel", "paper"] == 80.5 and cell.loc["QA Rel", "this run"] == 79.0
    assert cell.loc["QA Rel", "difference"] == pytest.approx(-1.5)
    assert cell.loc["NoCtx Gen", "this run"] == 40.0 and cell.loc["MMLU", "this run"] == 69.0
    assert cell.loc["time", "this run"] == 200.0  # total minus the capability K-FAC collection
    assert bool(cell.loc["QA Rel", "paper scale"]) and cell.loc["QA Rel", "run id"] == "gpu"
    assert cell.loc["QA Rel", "run command"].startswith("python -m crispedit_lite edit")
    assert math.isnan(cell.loc["IFEval", "this run"]) and not cell.loc["IFEval", "paper scale"]
    assert "did not measure IFEval" in cell.loc["IFEval", "scale notes"]
    tf = out[(out.table == "table3") & (out.method == "crispedit")].set_index("metric")
    assert tf.loc["TF Rel", "this run"] == 98.0
    base = out[(out.table == "table1") & (out.method == "base")].set_index("metric")
    assert base.loc["QA Rel", "this run"] == 2.5  # the base model's row reads the "before" metrics
    g7 = out[(out.table == "table8") & (out.setting == "gamma=0.7, n_capability=10000")]
    assert (g7["run id"] == "gpu").all()
    g9 = out[(out.table == "table8") & (out.setting == "gamma=0.9, n_capability=10000")]
    assert g9["this run"].isna().all() and (g9["scale notes"] == "not run").all()
    assert len(compare(sel, [cpu, gpu], include_missing=False)) < len(out)

    alone = compare(sel, [cpu]).query("table == 'table1' and method == 'crispedit' and metric == 'QA Rel'")
    assert alone["this run"].item() == 30.0 and not alone["paper scale"].item()
    notes = alone["scale notes"].item()
    for reason in ("model smollm2-135m-instruct", "n_edits 16", "n_capability 32", "capability text offline"):
        assert reason in notes


def test_a_cell_run_of_a_chunked_row_fills_that_row():
    """The MEMIT cells run memit_chunked, the AlphaEdit cells alphaedit_seq: their runs fill those rows."""
    paper = load_paper_tables()
    sel = paper[(paper.dataset == "zsre") & (paper.table == "table1")]
    runs = []
    for method in ("memit_chunked", "memit_seq", "alphaedit_seq", "crispedit_seq"):
        rec = paper_run_record(method, LLAMA, 3000, 0.7, 10_000, "wikipedia", "2026-01-02")
        rec["settings"]["method"] = rec["settings"]["config"]["method"] = method
        runs.append(rec)
    out = compare(sel, runs, include_missing=False)
    filled = {m: set(g) for m, g in out[out.method != "base"].groupby("method")["run id"]}
    # the cached MEMIT is not the paper's MEMIT row; CrispEdit-Seq fills its own row, not CrispEdit's
    assert filled == {"memit": {"memit_chunked"}, "alphaedit": {"alphaedit_seq"},
                      "crispedit_seq": {"crispedit_seq"}}


def test_scale_issues_and_run_metric_details():
    rec = paper_run_record("gpu", LLAMA, 3000, 0.9, 10_000, "wikipedia", "2026-01-02")
    assert scale_issues(rec, 8, {"gamma": 0.9, "n_capability": 10_000}) == []
    assert scale_issues(rec, 1, {"gamma": 0.7, "n_capability": 10_000}) == ["gamma 0.9 (paper: 0.7)"]
    assert any("Qwen" in i for i in scale_issues(rec, 5))
    em = json.loads(json.dumps(rec))
    em["metrics"]["after"]["wild"]["settings"]["scorer"] = "exact_match"
    assert any("exact_match" in i for i in scale_issues(em, 1))
    assert run_metric(rec, "QA Rel", phase="before") == 2.5
    assert run_metric(rec, "TF Rel", phase="before") is None
    assert run_metric(rec, "time", phase="before") is None
    assert run_metric(rec, "QA Rel", metric_keys={"QA Rel": ["wild.scores.none.rel"]}) == 50.0
    flat = {"metrics": {"after": {"wild_qa_rel": 12.0, "lm_eval.gsm8k_cot": 7.0}}}
    assert run_metric(flat, "QA Rel") == 12.0 and run_metric(flat, "GSM8K") == 7.0


# ---- reproduce/: the committed yaml files are what make_configs.py writes ---------------------------

def _make_configs():
    spec = importlib.util.spec_from_file_location("make_configs", ROOT / "reproduce" / "make_configs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_reproduce_configs_are_generated():
    mod = _make_configs()
    assert mod.main(["--check"]) == 0, "run: python reproduce/make_configs.py"


def test_reproduce_configs_hold_the_paper_settings():
    yaml = pytest.importorskip("yaml")
    load = {p.stem: yaml.safe_load(p.read_text()) for p in (ROOT / "reproduce").glob("*.yaml")}
    assert len(load) == 91
    c = load["table1_zsre_crispedit"]
    assert (c["MODEL"], c["DATASET"], c["N_EDITS"], c["METHOD"], c["GAMMA"], c["N_CAPABILITY"], c["LAYERS"]) \
        == (LLAMA, "zsre", 3000, "crispedit", 0.7, 10_000, [19, 20, 21, 22, 23])
    assert load["table1_counterfact_crispedit"]["GAMMA"] == 0.9
    assert load["table1_wikibigedit_crispedit"]["GAMMA"] == 0.9
    s = load["table1_wikibigedit_crispedit_seq"]
    assert (s["N_CAPABILITY"], s["GAMMA"], s["CHUNK_SIZE"], s["SEQUENTIAL"]) == (200, 0.995, 100, True)
    assert (load["table1_zsre_crispedit_seq"]["N_CAPABILITY"], load["table1_zsre_crispedit_seq"]["GAMMA"]) \
        == (30, 0.999)
    t4 = load["table4_zsre10k_crispedit"]
    assert (t4["N_EDITS"], t4["N_CAPABILITY"], t4["GAMMA"], t4["DATA_PATH"]) == \
        (10_000, 1000, 0.7, "data/zsre_mend_10k.json")
    q = load["table5_qwen_counterfact_crispedit"]
    assert (q["MODEL"], q["LAYERS"], q["N_CAPABILITY"], q["GAMMA"]) == \
        ("Qwen/Qwen2.5-1.5B-Instruct", [4, 5, 6], 1000, 0.9)
    assert (load["table5_qwen_zsre_crispedit_seq"]["N_CAPABILITY"],
            load["table5_qwen_zsre_crispedit_seq"]["GAMMA"]) == (30, 0.995)
    assert load["table7_n500"]["N_CAPABILITY"] == 500 and load["table7_n500"]["GAMMA"] == 0.9
    assert load["table8_counterfact_gamma0.95"]["GAMMA"] == 0.95
    # the closed-form and sequential baselines run in the paper's chunks, on their own layer presets
    m = load["table1_zsre_memit"]
    assert (m["METHOD"], m["SEQUENTIAL"], m["CHUNK_SIZE"], m["LAYERS"]) == ("memit", True, 32, None)
    a = load["table1_counterfact_alphaedit"]
    assert (a["METHOD"], a["SEQUENTIAL"], a["CHUNK_SIZE"], a["GAMMA"]) == ("alphaedit", True, 100, 0.9)
    assert load["table1_wikibigedit_ultraedit"]["CHUNK_SIZE"] == 32
    ls = load["table1_zsre_lora_seq"]
    assert (ls["METHOD"], ls["SEQUENTIAL"], ls["EPOCHS"]) == ("lora_seq", True, 70)
    assert ls["CONFIG"] == {"lr": 5e-3, "lora_seq_adapters": "per_chunk"}  # EasyEdit: fresh adapters
    assert load["table1_zsre_ft_seq"]["SEQUENTIAL"] and load["table1_zsre_ft_seq"]["CONFIG"] == {}
    md = load["table1_zsre_mend"]  # one edit at a time, in sequence, with a trained editor network
    assert (md["METHOD"], md["SEQUENTIAL"], md["LAYERS"], md["DTYPE"]) == ("mend", True, None, "float32")
    assert md["CHUNK_SIZE"] == md["CONFIG"]["mend_edits_per_step"] == 1
    assert md["CONFIG"]["mend_editor"].endswith(".safetensors")
    assert {f"table1_{ds}_mend" for ds in ("zsre", "counterfact", "wikibigedit")} <= set(load)
    assert {"table4_zsre10k_alphaedit", "table4_zsre10k_ultraedit", "table5_qwen_zsre_alphaedit",
            "table5_qwen_wikibigedit_ultraedit"} <= set(load)
    # the Table 1 MEMIT cells run MEMIT as the paper did: the batch edit chunk after chunk, no cache
    from crispedit_lite.reproduction.cells import config_from_parameters

    assert config_from_parameters(m)[0].method == "memit_chunked"
    # and the MEND cells MEND-Seq, one edit per step, with the editor file the cell names
    mend_cfg = config_from_parameters(md)[0]
    assert (mend_cfg.method, mend_cfg.settings.mend_edits_per_step) == ("mend_seq", 1)
    assert mend_cfg.settings.mend_editor == md["CONFIG"]["mend_editor"]
    assert "EasyEdit's own trained archive" in (ROOT / "reproduce" / "table1_zsre_mend.yaml").read_text()
    # each cell runs in the precision of the official run of its row (EasyEdit: float32 unless fp16;
    # run_crispedit.py: bfloat16 unless --no_crisp; locft-bf.py, alphaedit_ft.py: float32; MEND: half False)
    official = {"crispedit": "bfloat16", "crispedit_seq": "bfloat16", "ft": "float32", "ft_seq": "float32",
                "locbf_ft": "float32", "lora": "float32", "lora_seq": "float32", "adam_nscl": "float32",
                "memit": "float32", "alphaedit": "float32", "ultraedit": "float16", "mend": "float32"}
    for name, cfg in load.items():
        assert cfg["DTYPE"] == official[cfg["METHOD"]], name
        assert f"# Precision: {cfg['DTYPE']}" in (ROOT / "reproduce" / f"{name}.yaml").read_text()
    ultra = (ROOT / "reproduce" / "table1_zsre_ultraedit.yaml").read_text()
    assert "2 of every 32 edits are never applied" in ultra
    keys = set(c)
    for name, cfg in load.items():
        assert set(cfg) == keys, name
        epochs = 70 if name.endswith("lora_seq") else 25
        assert cfg["RESULTS_DIR"] == f"results/{name}" and cfg["EPOCHS"] == epochs and cfg["BATCH_SIZE"] == 32
        text = (ROOT / "reproduce" / f"{name}.yaml").read_text()
        assert "(estimate" in text and f"-f reproduce/{name}.yaml" in text


def _notebook_parameters(path: Path) -> set[str]:
    nb = json.loads(path.read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    src = "".join(cell["source"])
    return {t.id for node in ast.parse(src).body if isinstance(node, (ast.Assign, ast.AnnAssign))
            for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
            if isinstance(t, ast.Name)}


@pytest.mark.parametrize("notebook, prefix", [("09_reproduce_llama3_8b.ipynb", ("table1", "table4",
                                                                                "table7", "table8")),
                                               ("10_reproduce_qwen2_5_1_5b.ipynb", ("table5",))])
def test_reproduce_configs_name_notebook_parameters(notebook, prefix):
    path = ROOT / "notebooks" / notebook
    if not path.exists():
        pytest.skip(f"{notebook} not written yet")
    yaml = pytest.importorskip("yaml")
    params = _notebook_parameters(path)
    for p in (ROOT / "reproduce").glob("*.yaml"):
        if p.stem.startswith(prefix):
            missing = set(yaml.safe_load(p.read_text())) - params
            assert not missing, f"{p.name} sets parameters {sorted(missing)} that {notebook} lacks"


def test_chapter11_views_list_editors_coverage_and_missing_cells():
    from crispedit_lite.reproduction import comparison

    paper = load_paper_tables()
    rows = comparison.editor_rows(paper).set_index("method")
    # every Table 1 editor row is registered and has a reproduce cell per dataset, MEND included
    assert set(rows.index) == set(paper.loc[paper.table == "table1", "method"]) - {"base"}
    assert (rows["editor"] == rows.index).all() and (rows["cells"] == 3).all()
    assert (rows["why not"] == "").all()
    assert rows.loc["mend", "update"] == "learned" and not rows.loc["mend", "statistics"]
    assert rows.loc["alphaedit", "update"] == "closed_form"
    assert rows.loc["crispedit_seq", "statistics"] == "capability_kfac, edit_kfac"

    gpu = paper_run_record("gpu", LLAMA, 3000, 0.7, 10_000, "wikipedia", "2026-01-02")
    frame = comparison.compare_runs([gpu], ["table1"])
    cov = comparison.coverage(frame)
    t1 = frame[(frame.table == "table1") & (frame.method == "crispedit")]
    assert cov.loc["crispedit", "table1"] == pytest.approx(t1["run id"].notna().mean())
    assert 0 < cov.loc["crispedit", "table1"] < 1 and cov.loc["ft", "table1"] == 0
    lines = comparison.missing_cells(frame)
    assert len(lines) == 1 and lines[0].startswith("table1: ")
    assert "no run of crispedit (counterfact, wikibigedit)" in lines[0]
    assert "ft_seq" in lines[0] and "(counterfact, wikibigedit, zsre)" in lines[0]
    shown = comparison.side_by_side(frame, "table1", runs_only=True)  # base (before) + CrispEdit rows
    assert [i[0] for i in shown.index] == ["zsre", "zsre"] and len(shown) == 2
    assert len(comparison.side_by_side(frame, "table1")) > len(shown)
