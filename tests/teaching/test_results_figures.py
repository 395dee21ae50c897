"""teaching.results_figures: each figure draws the numbers it is given, in the registry's colours."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.colors import to_rgba  # noqa: E402

from crispedit_lite.teaching import paper_side, results_figures  # noqa: E402
from crispedit_lite.teaching.evidence import EditorGroup  # noqa: E402
from crispedit_lite.teaching.plotting import method_color  # noqa: E402


def _group(values: dict[str, tuple[float, float]], model: str = "m") -> EditorGroup:
    rows = [
        {
            "editor": e,
            "label": e,
            "setting": {},
            "seed": 0,
            "TF Rel": rel,
            "TF Gen": 0.0,
            "TF Spec": 0.0,
            "PROB Rel": 0.0,
            "PROB Loc": 0.0,
            "KL": kl,
            "ΔPPL %": 0.0,
            "file": "f",
            "created": "",
            "details": {},
        }
        for e, (rel, kl) in values.items()
    ]
    return EditorGroup(model=model, n_edits=40, source="committed", rows=pd.DataFrame(rows))


def _points(ax) -> list[tuple[tuple[float, float], tuple]]:
    """``((x, y), facecolor)`` of every single-point scatter of an Axes."""
    out = []
    for c in ax.collections:
        offsets, faces = c.get_offsets(), c.get_facecolors()
        if len(offsets) == 1:
            out.append((tuple(np.round(offsets[0], 6)), tuple(faces[0]) if len(faces) else None))
    return out


def test_ordering_figure_draws_paper_and_each_group():
    g1 = _group({"crispedit": (100.0, 0.002), "ft": (100.0, 0.02), "memit": (90.0, 0.01)})
    g2 = _group({"crispedit": (99.0, 0.01), "ft": (100.0, 0.02)}, model="m2")
    fig = results_figures.ordering_figure([g1, g2])
    ax, ax2 = fig.axes
    p = paper_side.paper_editors()
    loss = p["capability loss"].unstack("method").mean()
    order = sorted(["crispedit", "ft", "memit"], key=lambda m: loss[m] / loss["ft"])
    labels = {"crispedit": "CrispEdit", "ft": "FT", "memit": "MEMIT"}
    assert [t.get_text() for t in ax.get_yticklabels()] == [labels[m] for m in order]
    y = {m: k for k, m in enumerate(order)}
    left, right = _points(ax), _points(ax2)
    crisp = to_rgba(method_color("crispedit"))
    # this project's points: filled in the editor's colour, group 1 above group 2
    assert ((100.0, round(y["crispedit"] - 0.12, 6)), crisp) in left
    assert ((99.0, round(y["crispedit"] - 0.24, 6)), crisp) in left
    assert ((0.1, round(y["crispedit"] - 0.12, 6)), crisp) in right and (
        (0.5, round(y["crispedit"] - 0.24, 6)),
        crisp,
    ) in right
    # the paper's points: hollow, at the mean over its datasets
    rel = p["TF Rel"].unstack("method").mean()
    hollow = [xy for xy, face in left if face is None or face[3] == 0]
    assert (round(rel["memit"], 6), round(y["memit"] + 0.18, 6)) in hollow
    ratio = loss["crispedit"] / loss["ft"]
    assert any(np.isclose(xy[0], ratio) for xy, face in right if face is None or face[3] == 0)
    assert ax2.get_xscale() == "log"
    plt.close(fig)


def test_sweeps_figure_normalises_each_sweep_to_its_first_point():
    gam = pd.DataFrame({"gamma": [0.5, 0.9], "KL": [0.004, 0.001], "TF Rel": [100.0, 90.0]})
    n = pd.DataFrame({"n": [0, 8, 32], "KL": [0.03, 0.006, 0.003], "TF Rel": [100.0, 100.0, 100.0]})
    for d in (gam, n):
        d.attrs["model"] = "m"
    fig = results_figures.sweeps_figure({"gamma": gam, "n": n})
    (a, b), (c, d) = np.reshape(fig.axes, (2, 2))
    mine = [ln for ln in a.get_lines() if ln.get_label().startswith("here")]
    assert len(mine) == 1 and list(mine[0].get_ydata()) == pytest.approx([1.0, 0.25])
    assert to_rgba(mine[0].get_color()) == to_rgba(method_color("crispedit"))
    assert len([ln for ln in a.get_lines() if ln.get_label().startswith("paper")]) == 3  # Table 8's datasets
    (mine_n,) = [ln for ln in c.get_lines() if ln.get_label().startswith("here")]
    assert list(mine_n.get_ydata()) == pytest.approx([1.0, 0.2, 0.1]) and c.get_xscale() == "symlog"
    t7 = paper_side.paper_sweep("table7")
    (paper_n,) = [ln for ln in c.get_lines() if ln.get_label().startswith("paper")]
    assert list(paper_n.get_ydata()) == pytest.approx(
        list(t7["capability loss"] / t7["capability loss"].iloc[0])
    )
    (rel,) = [ln for ln in b.get_lines() if ln.get_label().startswith("here")]
    assert list(rel.get_ydata()) == [100.0, 90.0]
    plt.close(fig)


def test_cost_figure_bars():
    steps = pd.DataFrame(
        [{"device": "cpu", "model": "m", "created": "2026-01-01 10:00", "best / FT": 1.2, "dense / FT": 1.9}]
    )
    scale = pd.DataFrame(
        [
            {
                "device": "GPU",
                "preset": "llama3-8b",
                "best / FT": 1.3,
                "official / FT": 1.5,
                "K-FAC, paper's set (s)": 300.0,
                "eigh, all layers (s)": 8.0,
                "FT 3k (s)": 140.0,
                "CrispEdit 3k (s)": 170.0,
                "official 3k (s)": 215.0,
            }
        ]
    )
    fig = results_figures.cost_figure(steps, scale)
    ax, ax2 = fig.axes[:2]
    widths = sorted(round(p.get_width(), 6) for p in ax.patches if p.get_height() < 0.5)
    assert widths == [1.2, 1.3, 1.5, 1.9]
    time = paper_side.paper_editors()["time"].unstack("method")
    band = [p for p in ax.patches if p.get_height() >= 0.5]  # the paper's range, spanning the axis
    assert len(band) == 1
    x0 = band[0].get_x()
    assert x0 == pytest.approx((time["crispedit"] / time["ft"]).min())
    assert x0 + band[0].get_width() == pytest.approx((time["crispedit"] / time["ft"]).max())
    right = [round(p.get_width(), 6) for p in ax2.patches]
    assert right == [300.0, 8.0, 140.0, 170.0, 215.0, *time["crispedit"].round(6)]
    assert to_rgba(ax2.patches[3].get_facecolor()) == to_rgba(method_color("crispedit"))
    assert to_rgba(ax2.patches[2].get_facecolor()) == to_rgba(method_color("ft"))
    plt.close(fig)
