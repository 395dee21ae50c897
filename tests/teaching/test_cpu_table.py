"""crispedit_lite.teaching.cpu_table: the CPU Table 1 JSON as tables, the Pareto front and its figure."""

from __future__ import annotations

import json

import pytest

from crispedit_lite.teaching import cpu_table


def _row(method, seed, tf, kl, ppl, wild=True):
    s = {"teacher_forced": {"rel": tf, "gen": tf / 2, "loc": 50.0},
         "probability": {"rel": tf, "gen": tf, "loc": 40.0}}
    if wild:
        s["wild_robust_none_contains"] = {"rel": tf / 4, "gen": 0.0, "loc": 80.0}
        s["wild_robust_qa_contains"] = {"rel": tf / 5, "gen": 0.0, "loc": 70.0}
        s["wild_robust_qa_em"] = {"rel": 0.0, "gen": 0.0, "loc": 70.0}
        s["wild_robust_none_em"] = {"rel": 0.0, "gen": 0.0, "loc": 60.0}
    return {"method": method, "seed": seed, "side_by_side": s, "kl": kl, "ppl": ppl, "steps": 10,
            "final_loss": 0.009, "seconds": 1.0}


@pytest.fixture
def table(tmp_path):
    rows = []
    for seed in (0, 1):
        rows += [_row("base", seed, 20.0, 0.0, 10.0, seed == 0),
                 _row("ft", seed, 100.0, 0.02, 11.0, seed == 0),
                 _row("crispedit", seed, 90.0 + seed, 0.002, 10.1, seed == 0),
                 _row("lora", seed, 30.0, 0.003, 10.05, seed == 0)]
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"rows": rows, "n_edits": 40, "seeds": [0, 1], "wild_subsets": [0]}))
    return cpu_table.load_table(path)


def test_load_table_flattens_families_and_relative_perplexity(table):
    ft = table[(table.method == "FT") & (table.seed == 0)].iloc[0]
    assert ft["TF Rel"] == 100 and ft["PROB Loc"] == 40 and ft["WILD Rel (none)"] == 25
    assert ft["Loc agree (none)"] == 60 and ft["ΔPPL %"] == pytest.approx(10.0)
    assert table[(table.method == "FT") & (table.seed == 1)]["WILD Rel (qa)"].isna().all()
    s = cpu_table.summary(table)
    assert s.loc["CrispEdit", "TF Rel"] == pytest.approx(90.5) and s.loc["FT", "WILD Rel (none)"] == 25


def test_load_table_joins_several_files(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps({"rows": [_row("base", 0, 20.0, 0.0, 10.0), _row("ft", 0, 100.0, 0.02, 11.0)],
                             "n_edits": 40, "seeds": [0], "wild_subsets": [0], "command": "run a"}))
    b.write_text(json.dumps({"rows": [_row("base", 1, 25.0, 0.0, 10.0, False),
                                      _row("ft", 1, 90.0, 0.03, 12.0, False)],
                             "n_edits": 40, "seeds": [1], "wild_subsets": [], "command": "run b"}))
    t = cpu_table.load_table([a, b])
    assert t.attrs["seeds"] == [0, 1] and t.attrs["command"] == "run a ; run b"
    assert cpu_table.summary(t).loc["FT", "TF Rel"] == pytest.approx(95.0)
    assert t[(t.method == "FT") & (t.seed == 1)]["ΔPPL %"].item() == pytest.approx(20.0)
    d = tmp_path / "d.json"  # a cell that a second run repeated: the first file's row counts
    d.write_text(json.dumps({"rows": [_row("ft", 0, 10.0, 0.5, 30.0)], "n_edits": 40, "seeds": [0],
                             "command": "run d"}))
    both = cpu_table.load_table([a, d])
    assert both.query("method == 'FT'")["TF Rel"].tolist() == [100.0]
    assert both.attrs["duplicates"] == ["ft (subset 0): a.json kept, not d.json"]
    assert cpu_table.load_table([d, a]).query("method == 'FT'")["TF Rel"].tolist() == [10.0]
    assert t.attrs["duplicates"] == []
    c = tmp_path / "c.json"
    c.write_text(json.dumps({"rows": [], "n_edits": 12, "seeds": [2], "command": "run c"}))
    with pytest.raises(ValueError, match="different numbers of edits"):
        cpu_table.load_table([a, c])


def test_pareto_front_excludes_dominated_methods(table):
    assert cpu_table.pareto_front({"a": (90, 0.1), "b": (80, 0.2), "c": (95, 0.3)}) == ["a", "c"]
    assert cpu_table.pareto_front({"a": (90, 0.1), "b": (90, 0.1)}) == ["a", "b"]  # ties on both stay
    s = cpu_table.summary(table)
    pts = {m: (s.loc[m, "TF Rel"], s.loc[m, "KL"]) for m in ("FT", "CrispEdit", "LoRA")}
    assert cpu_table.pareto_front(pts) == ["FT", "CrispEdit"]  # LoRA: less reliable and more KL


def test_pareto_figure_draws_every_method_but_base(table):
    import matplotlib

    matplotlib.use("Agg")
    fig = cpu_table.pareto_figure(table)
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert sorted(labels) == ["CrispEdit (front)", "FT (front)", "LoRA"]
