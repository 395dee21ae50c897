r"""What chapters 9 and 10 show about one reproduction run: settings, its paper cell, metrics, a figure.

Both reproduction notebooks (``09_reproduce_llama3_8b`` for LLaMA-3-8B's Tables 1, 3, 4, 7, 8 and
``10_reproduce_qwen2_5_1_5b`` for Qwen-2.5's Table 5) present a run the same way; the shared steps
live here so that the two chapters differ only in their prose and parameters.

Derived in notebook ``09_reproduce_llama3_8b``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["SHOWN_SETTINGS", "config_lines", "headline", "paper_cell_diff", "plot_run", "scale_report"]

#: The EditConfig fields the chapters print for a run.
SHOWN_SETTINGS = ("method", "layers", "gamma", "n_capability", "capability_source", "capability_max_length",
                  "epochs", "batch_size", "lr", "chunk_size", "kfac_labels", "optimizer", "eigh_dtype")


def config_lines(params: Mapping[str, Any], config: Any, preset: str,
                 paper_models: Sequence[str]) -> list[str]:
    """The lines that say which preset a notebook's parameters selected, and the resulting settings.

    Derived in notebook ``09_reproduce_llama3_8b``.
    """
    model = params["MODEL"]
    paper = model in paper_models
    lines = [f"MODEL = {model!r}: {'the paper model' if paper else 'not a paper model'} -> {preset} preset"]
    lines += [f"  {key:22s} {getattr(config, key)}" for key in SHOWN_SETTINGS]
    return lines


def paper_cell_diff(params: Mapping[str, Any], config: Any, cell: str) -> list[str]:
    """How this run differs from the paper's ``reproduce/<cell>.yaml`` (parameters, then config fields).

    The cell's parameters come from the package (:func:`~crispedit_lite.reproduction.cells.paper_cell`),
    so this works outside a checkout too. Derived in notebook ``09_reproduce_llama3_8b``.
    """
    from crispedit_lite.reproduction.cells import config_from_parameters, paper_cell

    paper_params = paper_cell(cell)
    if paper_params is None:
        return [f"no reproduce/{cell}.yaml (DATASET/METHOD outside the paper's grid)"]
    paper_cfg, paper_preset = config_from_parameters(paper_params)
    ours, theirs = config.to_dict(), paper_cfg.to_dict()
    lines = [f"reproduce/{cell}.yaml ({paper_preset} preset) differs from this run in:"]
    for key in ("MODEL", "DATA_PATH", "N_EDITS", "DEVICE", "DTYPE", "JUDGE", "RUN_LM_EVAL"):
        if params[key] != paper_params[key]:
            lines.append(f"  {key:22s} {params[key]!s:28s} paper: {paper_params[key]}")
    lines += [f"  {key:22s} {ours.get(key)!s:28s} paper: {theirs.get(key)}"  # settings differ by method
              for key in sorted(set(ours) | set(theirs)) if ours.get(key) != theirs.get(key)]
    return lines


def plot_run(record: Mapping[str, Any], metrics: Any, tables: Sequence[str], model: str):
    """Before/after bars of the run's paper columns (paper values as diamonds) and its training losses.

    The edited model's bars and loss curves have the method's registry colour
    (:func:`~crispedit_lite.teaching.plotting.method_color`), the unedited model's bars are hatched in
    the base model's colour; a CrispEdit-Seq run draws one loss curve per chunk, lighter for later
    chunks. One legend below both panels (constrained layout), so that nothing covers a bar.

    Derived in notebook ``09_reproduce_llama3_8b``.
    """
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.patches import Patch

    from crispedit_lite.reproduction.comparison import compare_runs
    from crispedit_lite.reproduction.paper_tables import table_info
    from crispedit_lite.teaching.plotting import legend_below, method_color

    method = record["settings"]["method"]
    colors = {"before": method_color("base"), "after": method_color(method, method_color("crispedit"))}
    ref = compare_runs([record], list(tables[:1]), include_missing=False)
    ref = ref[ref["method"] != "base"].set_index("metric")["paper"]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 4.2), layout="constrained",
                                  gridspec_kw={"width_ratios": [2.2, 1]})
    x = np.arange(len(metrics.index))
    unedited = {"facecolor": "white", "edgecolor": colors["before"], "hatch": "///", "linewidth": 0.8}
    ax.bar(x - 0.2, metrics["before"].to_numpy(dtype=float), width=0.4, **unedited)
    ax.bar(x + 0.2, metrics["after"].to_numpy(dtype=float), width=0.4, color=colors["after"])
    handles = [Patch(**unedited), Patch(color=colors["after"])]
    labels = ["before the edit (base model)", f"after ({method})"]
    shown = ref.reindex(metrics.index).dropna()
    if len(shown):
        at = [list(metrics.index).index(m) for m in shown.index]
        handles.append(ax.scatter(at, shown.values, marker="D", s=36, color="white", edgecolor="k", zorder=3))
        labels.append(f"paper, {table_info(tables[0])['source'].rsplit(', ', 1)[-1]}")
    ax.set_xticks(x, list(metrics.index), rotation=30, ha="right", fontsize=8)
    ax.set(ylim=(0, 105), xlim=(-0.6, len(x) - 0.4), xlabel="", ylabel="score (%)",
           title=f"{method} on {model.split('/')[-1]}, {record['settings']['n_edits']} edits")
    logs = record["edit"].get("train") or []
    for k, log in enumerate(logs):
        losses = log["epoch_losses"]
        ax2.plot(range(1, len(losses) + 1), losses, marker="o", ms=3, color=colors["after"],
                 alpha=1.0 - 0.6 * k / max(len(logs) - 1, 1))
    ax2.set(yscale="log", xlabel="epoch", ylabel="edit loss (FT-M, log)",
            title="training" + (f" ({len(logs)} chunks, later ones lighter)" if len(logs) > 1 else ""))
    legend_below(fig, handles, labels, ncol=len(labels))
    return fig


def scale_report(record: Mapping[str, Any], tables: Sequence[str], paper_model: bool):
    """``(frame, lines)``: the paper cells this run fills, and whether it is at the paper's scale.

    A run of another model is never at the paper's scale (checked). Derived in notebook
    ``09_reproduce_llama3_8b``.

    Listed on the book page ``api``.
    """
    from crispedit_lite.reproduction.comparison import compare_runs, scale_notes

    frame = compare_runs([record], list(tables), include_missing=False)
    cols = ["table", "label", "setting", "metric", "paper", "this run", "paper scale"]
    if not frame.empty and frame["paper scale"].all():
        lines = ["This run is at the paper's scale for every cell above."]
    else:
        lines = ["NOT at the paper's scale:" + "".join(f"\n  - {n}" for n in scale_notes(frame))]
    if not paper_model and not frame.empty and frame["paper scale"].any():
        raise AssertionError("a run of another model is never at the paper's scale")
    return (frame[cols] if not frame.empty else frame), lines


def headline(record: Mapping[str, Any], gamma: float) -> tuple[Any, list[str]]:
    """``(metrics, lines)``: the run's paper columns before/after, and what the lines below them say.

    The edit must raise teacher-forced reliability (checked). Derived in notebook
    ``09_reproduce_llama3_8b``.

    Listed on the book page ``api``.
    """
    from crispedit_lite.reproduction.cells import editable_fractions, run_metrics

    metrics = run_metrics(record).set_index("metric")
    tf_before, tf_after = metrics.loc["TF Rel", "before"], metrics.loc["TF Rel", "after"]
    if not tf_after > tf_before:
        raise AssertionError("the edit should raise teacher-forced reliability")
    lines = [metrics.round(1).to_string(),
             f"\nteacher-forced reliability: {tf_before:.0f} % before -> {tf_after:.0f} % after the edit"]
    fractions = editable_fractions(record)
    if len(fractions):
        lines += [f"\neditable fraction of each edited down_proj's weight space (gamma = {gamma:g}):",
                  fractions.round(3).to_string()]
    return metrics, lines
