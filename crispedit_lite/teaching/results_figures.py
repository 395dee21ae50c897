r"""The three figures of the results chapter: editor orderings, sweeps and costs, each paper beside here.

Paper points are hollow and grey-rimmed, this project's are filled; editors keep their registry colour
(:func:`crispedit_lite.teaching.plotting.method_color`).

* :func:`ordering_figure`: per editor, teacher-forced reliability (paper Table 3, mean and range over
  its three datasets) and damage relative to FT (paper: capability loss over FT's; here: KL over FT's),
  for every editor group;
* :func:`sweeps_figure`: the :math:`\gamma` sweep beside Table 8 and the :math:`n` sweep beside Table 7,
  damage relative to the first point of each sweep, and reliability;
* :func:`cost_figure`: one CrispEdit step over one FT step (CPU and GPU, fastest exact form and dense
  form) beside the paper's whole-edit time ratio, and the GPU's phase times beside the paper's edit times.

Derived in notebook ``11_results``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from crispedit_lite.teaching.evidence import EditorGroup
from crispedit_lite.teaching.paper_side import paper_editors, paper_method, paper_sweep

__all__ = ["FLOOR", "MARKERS", "cost_figure", "ordering_figure", "sweeps_figure"]

#: Marker of each editor group, in order (the paper's points are hollow circles).
MARKERS = ("o", "D", "s", "^", "v")
#: Smallest ratio drawn on a log axis (a paper editor that gained capability is drawn here).
FLOOR = 1e-3
_PAPER = dict(facecolors="none", linewidths=1.5, s=55, zorder=3)


def _paper_points(p: pd.DataFrame, methods: Sequence[str]) -> pd.DataFrame:
    loss = p["capability loss"].unstack("method")
    ratio = loss.div(loss["ft"], axis=0)
    rel = p["TF Rel"].unstack("method")
    out = pd.DataFrame(
        {
            "rel": rel.mean(),
            "rel lo": rel.min(),
            "rel hi": rel.max(),
            "ratio": loss.mean() / loss["ft"].mean(),
            "ratio lo": ratio.min(),
            "ratio hi": ratio.max(),
        }
    )
    return out.reindex([m for m in methods if m in out.index])


def ordering_figure(groups: Sequence[EditorGroup], paper: pd.DataFrame | None = None) -> Any:
    """Per editor: TF Rel (left) and damage over FT's (right, log scale), paper beside each group.

    Editors are those of the groups' comparisons that the paper has, sorted by the paper's damage
    ratio; a group without FT is drawn on the left only. Derived in notebook ``11_results``.
    """
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    from crispedit_lite.teaching.plotting import method_color

    p = paper_editors(paper)
    plains = [g.plain() for g in groups]
    editors: dict[str, str] = {}  # paper method -> registry editor
    for m in plains:
        for e in m["editor"]:
            pm = paper_method(e, paper)
            if pm and pm not in editors:
                editors[pm] = e
    pts = _paper_points(p, list(editors)).sort_values("ratio")
    ys = {m: k for k, m in enumerate(pts.index)}
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 0.45 * len(ys) + 1.8), sharey=True)
    for m, r in pts.iterrows():
        c, y = method_color(editors[m], "0.3"), ys[m] + 0.18
        ax.hlines(y, r["rel lo"], r["rel hi"], color=c, lw=1)
        ax.scatter([r["rel"]], [y], edgecolors=c, **_PAPER)
        lo, hi = max(r["ratio lo"], FLOOR), max(r["ratio hi"], FLOOR)
        ax2.hlines(y, lo, hi, color=c, lw=1)
        ax2.scatter([max(r["ratio"], FLOOR)], [y], edgecolors=c, **_PAPER)
    for k, m in enumerate(plains):
        ft = m.loc[m["editor"] == "ft", "KL"]
        for _, r in m.iterrows():
            pm = paper_method(r["editor"], paper)
            if pm not in ys:
                continue
            y, c = ys[pm] - 0.12 - 0.12 * k, method_color(r["editor"], "0.3")
            ax.scatter(
                [r["TF Rel"]], [y], marker=MARKERS[k % len(MARKERS)], color=c, edgecolors="k", s=45, zorder=4
            )
            if len(ft):
                ax2.scatter(
                    [r["KL"] / ft.iloc[0]],
                    [y],
                    marker=MARKERS[k % len(MARKERS)],
                    color=c,
                    edgecolors="k",
                    s=45,
                    zorder=4,
                )
    ax.set_yticks(range(len(ys)), [_label(editors[m]) for m in pts.index])
    ax.set(xlabel="teacher-forced reliability (%)", xlim=(-3, 103), title="edits made")
    ax2.axvline(1.0, color="0.5", ls="--", lw=1)
    ax2.set_xscale("log")
    ax2.set(xlabel="damage / FT's (paper: capability loss; here: KL)", title="damage relative to FT")
    handles = [
        Line2D(
            [],
            [],
            marker="o",
            ls="",
            mfc="none",
            mec="0.3",
            label="paper (LLaMA-3-8B, 3,000 edits; mean, range over 3 datasets)",
        )
    ]
    handles += [
        Line2D([], [], marker=MARKERS[k % len(MARKERS)], ls="", color="0.6", mec="k", label=g.title)
        for k, g in enumerate(groups)
    ]
    fig.legend(handles=handles, loc="lower center", ncol=min(3, len(handles)), fontsize=8, frameon=False)
    ax.invert_yaxis()
    fig.set_layout_engine("tight", rect=(0, 0.06 + 0.02 * (len(handles) > 3), 1, 1))
    return fig


def _label(editor: str) -> str:
    from crispedit_lite.teaching.cpu_table import label

    return label(editor)


def _paper_lines(ax: Any, t: pd.DataFrame, y: str, norm: bool) -> None:
    for k, (d, g) in enumerate(t.groupby("dataset")):
        v = g[y] / g[y].iloc[0] if norm else g[y]
        ax.plot(
            g["setting"],
            v,
            ls="--",
            marker="os^"[k % 3],
            mfc="none",
            color=str(0.25 + 0.2 * k),
            lw=1,
            label=f"paper, {d}",
        )


def sweeps_figure(frames: dict[str, pd.DataFrame], paper: pd.DataFrame | None = None) -> Any:
    r"""2 x 2: :math:`\gamma` (Table 8) and :math:`n` (Table 7); damage against the first point, reliability.

    ``frames`` is :func:`~crispedit_lite.teaching.bench_evidence.sweep_frames` of one record. Paper
    damage is capability loss, here KL to the unedited model; paper reliability is QA Rel (LLM judge),
    here teacher-forced Rel. Derived in notebook ``11_results``.
    """
    import matplotlib.pyplot as plt

    from crispedit_lite.teaching.plotting import method_color

    c = method_color("crispedit")
    fig, axes = plt.subplots(2, 2, figsize=(10.5, 6.6))
    for row, (sweep, table, x) in enumerate(
        (("gamma", "table8", r"energy threshold $\gamma$"), ("n", "table7", "capability texts $n$ (0: FT)"))
    ):
        t, d = paper_sweep(table, paper), frames[sweep]
        here = f"here, {d.attrs.get('model')}"
        a, b = axes[row]
        _paper_lines(a, t, "capability loss", norm=True)
        a.plot(d[sweep], d["KL"] / d["KL"].iloc[0], marker="o", color=c, lw=2, label=here + " (KL)")
        a.axhline(1.0, color="0.7", lw=0.8)
        name = f"{table[:5].title()} {table[5:]} ({'gamma' if sweep == 'gamma' else 'n'})"
        a.set(xlabel=x, ylabel="damage / first point's", title=f"{name}: damage")
        _paper_lines(b, t, "QA Rel", norm=False)
        b.plot(d[sweep], d["TF Rel"], marker="o", color=c, lw=2, label=here + " (TF Rel)")
        b.set(xlabel=x, ylabel="reliability (%)", ylim=(-3, 105), title=f"{name}: reliability")
        if sweep == "n":
            for ax in (a, b):
                ax.set_xscale("symlog", linthresh=1)
                ax.set_xlim(-0.3, 2 * max(t["setting"].max(), d[sweep].max()))
        a.legend(fontsize=7, title="paper: capability loss", title_fontsize=7)
        b.legend(fontsize=7, title="paper: QA Rel", title_fontsize=7, loc="lower left")
    fig.set_layout_engine("tight")
    return fig


def cost_figure(steps: pd.DataFrame, scale: pd.DataFrame, paper: pd.DataFrame | None = None) -> Any:
    """One step over FT (left, paper's whole-edit ratio shaded) and GPU phase times (right, paper's edits).

    ``steps`` and ``scale`` are :func:`~crispedit_lite.teaching.bench_evidence.step_ratio_summary` and
    ``scale_summary``; the right panel shows the first LLaMA preset of ``scale`` (else the first).
    Derived in notebook ``11_results``.
    """
    import matplotlib.pyplot as plt

    from crispedit_lite.teaching.plotting import method_color

    p = paper_editors(paper)
    time = p["time"].unstack("method")
    band = time["crispedit"] / time["ft"]
    c = method_color("crispedit")
    rows = [
        (f"{r.device} {r.model} ({str(r.created)[:16]})", r["best / FT"], r["dense / FT"])
        for _, r in steps.iterrows()
    ]
    rows += [
        (f"{r.device} {r.preset} shape", r["best / FT"], r["official / FT"]) for _, r in scale.iterrows()
    ]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 0.5 * max(len(rows), 5) + 2.2))
    y = np.arange(len(rows))
    ax.axvspan(band.min(), band.max(), color="0.85", label="paper: whole edit, CrispEdit / FT (Table 1)")
    ax.barh(y - 0.2, [r[1] for r in rows], height=0.38, color=c, label="fastest exact form")
    ax.barh(
        y + 0.2,
        [r[2] for r in rows],
        height=0.38,
        color=c,
        alpha=0.45,
        hatch="//",
        label="dense form (paper's; GPU: official bf16)",
    )
    ax.axvline(1.0, color="0.3", ls="--", lw=1)
    ax.set_yticks(y, [r[0] for r in rows], fontsize=8)
    ax.invert_yaxis()
    widest = max([band.max(), *(r[1] for r in rows), *(r[2] for r in rows)])
    ax.set(xlabel="one CrispEdit step / one FT step", title="cost of a step", xlim=(0, 1.1 * widest))
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="lower left", ncol=3, frameon=False)
    if len(scale):
        llama = scale[scale["preset"].str.contains("llama")]
        s = (llama if len(llama) else scale).iloc[0]
        kfac = method_color("K-FAC")
        bars = [
            ("K-FAC on the paper's capability set (once)", s["K-FAC, paper's set (s)"], kfac, ""),
            ("eigendecompositions, all layers (once)", s["eigh, all layers (s)"], kfac, ""),
            ("FT, 3,000 edits (extrapolated)", s["FT 3k (s)"], method_color("ft"), ""),
            ("CrispEdit, fastest exact form", s["CrispEdit 3k (s)"], c, ""),
            ("CrispEdit, official bf16 form", s["official 3k (s)"], c, "//"),
        ]
        bars += [(f"paper: CrispEdit edit, {d}", v, "0.8", "..") for d, v in time["crispedit"].items()]
        yy = np.arange(len(bars))
        for k, (_, v, col, hatch) in enumerate(bars):
            ax2.barh(k, v, color=col, hatch=hatch, edgecolor="0.3")
        ax2.set_yticks(yy, [b[0] for b in bars], fontsize=8)
        ax2.invert_yaxis()
        ax2.set(xlabel="seconds", title=f"{s['device']}, {s['preset']} shape\n(random weights: timings only)")
    else:
        ax2.set_axis_off()
    fig.set_layout_engine("tight", rect=(0, 0.07, 1, 1))
    return fig
