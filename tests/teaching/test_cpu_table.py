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
    assert sorted(labels) == ["CrispEdit (front)", "FT (front)", "LoRA", "base model"]  # base: a line


# ---- the figures: registry colours, axes that hold the data, nothing over the data ---------------------


def _drawn_points(ax):
    """Display-independent data points of a panel: scatter offsets and error-bar centres."""
    import numpy as np
    from matplotlib.collections import PathCollection

    pts = [c.get_offsets() for c in ax.collections if isinstance(c, PathCollection) and len(c.get_offsets())]
    pts += [line.get_xydata() for line in ax.get_lines() if line.get_marker() not in (None, "None", "")]
    return np.concatenate([np.asarray(p, dtype=float) for p in pts])


def _check_layout(fig):
    """Every point inside its axes' limits, the legend and the title clear of every axes."""
    import numpy as np

    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    legend = fig.legends[0].get_window_extent(renderer)
    for ax in fig.axes:
        pts = _drawn_points(ax)
        if ax.get_xscale() == "log":  # an error bar's end below 0 is not drawn on a log axis
            pts = pts[pts[:, 0] > 0]
        if ax.get_yscale() == "log":
            pts = pts[pts[:, 1] > 0]
        (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
        inside = (pts[:, 0] >= x0) & (pts[:, 0] <= x1) & (pts[:, 1] >= y0) & (pts[:, 1] <= y1)
        assert inside.all(), f"points outside the limits of {ax.get_xlabel()!r}: {pts[~inside]}"
        if ax.get_xscale() == "log":
            assert x0 > 0
        if ax.get_xscale() == "symlog":  # no more range below the lowest point than a margin
            tr = ax.xaxis.get_transform()
            t0, tmin, t1 = (tr.transform([[v]])[0, 0] for v in (x0, pts[:, 0].min(), x1))
            assert tmin - t0 < 0.07 * (t1 - t0)
        box = ax.get_window_extent(renderer)
        assert not legend.overlaps(box), "the legend covers an axes"
        shown = ax.transData.transform(pts)
        assert not any(legend.contains(*p) for p in shown), "the legend covers a data point"
        if fig._suptitle is not None:
            title = fig._suptitle.get_window_extent(renderer)
            assert not title.overlaps(box) and not title.overlaps(ax.title.get_window_extent(renderer))
    return np.array([[*ax.get_xlim(), *ax.get_ylim()] for ax in fig.axes])


def test_pareto_figure_colours_every_method_from_the_registry(table):
    import matplotlib
    import matplotlib.colors as mcolors
    import matplotlib.pyplot as plt

    from crispedit_lite.teaching.plotting import method_color

    matplotlib.use("Agg")
    fig = cpu_table.pareto_figure(table, title="a title")
    try:
        for ax in fig.axes:
            handles, labels = ax.get_legend_handles_labels()
            drawn = {lab.removesuffix(" (front)"): mcolors.to_hex(h[0].get_color())
                     for h, lab in zip(handles, labels) if lab != "base model"}
            assert drawn == {m: method_color(m) for m in ("FT", "CrispEdit", "LoRA")}
        legend = {t.get_text() for t in fig.legends[0].get_texts()}
        assert {"FT", "CrispEdit", "LoRA", "Pareto front (black rim)"} <= legend
        _check_layout(fig)
    finally:
        plt.close(fig)


def test_the_committed_table1_fits_its_axes_lora_included():
    """The book's flagship figure (chapter 6): KL on a log axis, LoRA inside, title and legend clear."""
    import matplotlib
    import matplotlib.pyplot as plt

    from crispedit_lite.reproduction.committed import committed_path

    matplotlib.use("Agg")
    names = ["cpu-table1-smollm2.json"] + [f"cpu-table1-smollm2-part{i}.json" for i in range(2, 7)]
    names += ["cpu-table1-smollm2-lora.json", "cpu-table1-smollm2-lora-subset2.json"]  # LoRA
    t1 = cpu_table.load_table([committed_path(n) for n in names])
    fig = cpu_table.pareto_figure(t1[t1["method"] != "CrispEdit + nbhd texts"],
                                  title="Table 1 on a CPU: a long title that must not cover the axes")
    try:
        kl_ax, ppl_ax = fig.axes
        assert kl_ax.get_xscale() == "log" and ppl_ax.get_xscale() == "symlog"
        lora = t1[t1["method"] == "LoRA"]
        assert kl_ax.get_xlim()[1] > lora["KL"].max() and ppl_ax.get_xlim()[1] > lora["ΔPPL %"].max()
        _check_layout(fig)
    finally:
        plt.close(fig)


def test_tradeoff_figure_names_the_columns_that_tie_and_fits_a_zero(table):
    import matplotlib
    import matplotlib.pyplot as plt

    matplotlib.use("Agg")
    t = table.copy()
    t.loc[t["method"] != "base", "PROB Rel"] = 100.0
    t.loc[(t["method"] == "CrispEdit") & (t["seed"] == 0), "ΔPPL %"] = 0.0  # a zero: symlog, not log
    fig = cpu_table.tradeoff_figure(t, [("ΔPPL %", "TF Spec"), ("KL", "ΔPPL %")], ties=("PROB Rel", "TF Rel"),
                                    title="title")
    try:
        text = fig._suptitle.get_text()
        assert "every method: PROB Rel 100" in text and "TF Rel" not in text.split("\n")[1]
        assert fig.axes[0].get_xscale() == "symlog" and fig.axes[1].get_yscale() == "symlog"
        assert fig.axes[0].get_xlim()[0] < 0  # the error bar below the zero is shown (checked below)
        _check_layout(fig)
    finally:
        plt.close(fig)


def test_a_variant_takes_its_methods_colour_and_another_marker():
    from crispedit_lite.teaching.plotting import method_color

    assert cpu_table.method_style("CrispEdit") == (method_color("crispedit"), "o")
    assert cpu_table.method_style("CrispEdit, gamma 0.99") == (method_color("crispedit"), "D")
    assert cpu_table.method_style("something else")[1] == "s"
