"""crispedit_lite.teaching.run_report: what chapters 9 and 10 print about a run."""

from __future__ import annotations

import copy

import pytest
import yaml

from crispedit_lite.reproduction import cells as reproduce
from crispedit_lite.teaching import run_report
from tests.helpers import LLAMA, ROOT, paper_run_record


def test_config_lines_name_the_preset_and_every_shown_setting():
    params = yaml.safe_load((ROOT / "reproduce" / "table1_zsre_crispedit.yaml").read_text())
    config, preset = reproduce.config_from_parameters(params)
    lines = run_report.config_lines(params, config, preset, reproduce.PAPER_MODELS)
    assert lines[0] == f"MODEL = {LLAMA!r}: the paper model -> paper preset"
    assert len(lines) == 1 + len(run_report.SHOWN_SETTINGS)
    assert lines[3].split() == ["gamma", "0.7"]


def test_paper_cell_diff_lists_exactly_what_differs():
    params = yaml.safe_load((ROOT / "reproduce" / "table1_zsre_crispedit.yaml").read_text())
    config, _ = reproduce.config_from_parameters(params)
    assert run_report.paper_cell_diff(params, config, "table1_zsre_crispedit") == [
        "reproduce/table1_zsre_crispedit.yaml (paper preset) differs from this run in:"]
    mine = dict(params, N_EDITS=16, GAMMA=0.5)
    cfg, _ = reproduce.config_from_parameters(mine)
    lines = run_report.paper_cell_diff(mine, cfg, "table1_zsre_crispedit")
    assert [ln.split()[0] for ln in lines[1:]] == ["N_EDITS", "gamma"]
    assert run_report.paper_cell_diff(mine, cfg, "table1_zsre_nothing")[0].startswith("no reproduce/")


def test_headline_and_scale_report():
    rec = paper_run_record("cpu", "smollm2-135m-instruct", 16, 0.7, 32, "offline", "2026-01-03")
    rec["metrics"]["before"]["teacher_forced"] = {"scores": {"rel": 20.0}}
    rec["edit"] = {"projectors": {"model.layers.20.mlp.down_proj": {"editable_fraction": 0.9}}}
    metrics, lines = run_report.headline(rec, 0.7)
    assert metrics.loc["TF Rel", "after"] == 98.0 and "20 % before -> 98 % after" in lines[1]
    assert "gamma = 0.7" in lines[2]
    bad = copy.deepcopy(rec)
    bad["metrics"]["after"]["teacher_forced"]["scores"]["rel"] = 10.0
    with pytest.raises(AssertionError, match="should raise teacher-forced reliability"):
        run_report.headline(bad, 0.7)
    frame, notes = run_report.scale_report(rec, ["table1", "table3"], paper_model=False)
    assert not frame.empty and not frame["paper scale"].any() and notes[0].startswith("NOT at the paper")


def test_plot_run_colours_the_method_and_keeps_the_legend_off_the_bars():
    import matplotlib
    import matplotlib.colors as mcolors
    import matplotlib.pyplot as plt

    from crispedit_lite.teaching.plotting import method_color

    matplotlib.use("Agg")
    rec = paper_run_record("cpu", "smollm2-135m-instruct", 16, 0.7, 32, "offline", "2026-01-03")
    rec["metrics"]["before"]["teacher_forced"] = {"scores": {"rel": 20.0}}
    rec["edit"] = {"train": [{"epoch_losses": [2.0, 0.5, 0.05]}, {"epoch_losses": [1.0, 0.2, 0.008]}]}
    metrics, _ = run_report.headline(rec, 0.7)
    fig = run_report.plot_run(rec, metrics, ["table1"], "meta-llama/Meta-Llama-3-8B-Instruct")
    try:
        bars, losses = fig.axes[:2]
        filled = {mcolors.to_hex(p.get_facecolor()[:3]) for p in bars.patches}
        assert filled == {method_color("crispedit"), "#ffffff"}  # before the edit: hatched, base colour
        assert {mcolors.to_hex(p.get_edgecolor()[:3]) for p in bars.patches if p.get_hatch()} == {
            method_color("base")}
        drawn = {mcolors.to_hex(line.get_color()) for line in losses.get_lines()}
        assert drawn == {method_color("crispedit")}
        fig.canvas.draw()
        legend = fig.legends[0].get_window_extent()
        assert not any(legend.overlaps(ax.get_window_extent()) for ax in (bars, losses))
        tops = [p.get_height() for p in bars.patches]
        assert max(tops) <= bars.get_ylim()[1]
    finally:
        plt.close(fig)
