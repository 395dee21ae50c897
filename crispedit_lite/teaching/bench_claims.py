r"""The paper's claims about its sweeps (Tables 7 and 8), costs (Table 1, Sec. 3.1) and sequential editing.

Each function takes the tables of :mod:`crispedit_lite.teaching.bench_evidence` and the paper's side
(:mod:`crispedit_lite.teaching.paper_side`) and returns claim rows
(:func:`~crispedit_lite.teaching.verdicts.claim_row`) by the rules of
:mod:`crispedit_lite.teaching.verdicts`; missing evidence gives no row.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import pandas as pd

from crispedit_lite.teaching.paper_side import paper_sweep
from crispedit_lite.teaching.verdicts import (
    FAR,
    HOLDS,
    MARGIN,
    NOT,
    PARTLY,
    claim_row,
    ratio_verdict,
    span,
    trend_verdict,
)

__all__ = ["cost_claims", "sequential_claims", "sweep_claims"]


def _variant(name: str) -> str:
    """A step variant of ``benchmarks/scale.py`` in words: ``crispedit_fast_synthetic_g0.7`` and the like."""
    words = {
        "fast_synthetic": "fast forms, power-law spectrum",
        "fast_measured": "fast forms, random spectrum",
        "reference_bf16": "dense bf16, official code",
        "reference_fp32_tf32": "dense TF32",
    }
    m = re.match(r"crispedit_(.+)_g([\d.]+)", name)
    if not m:
        return name
    return f"{words.get(m.group(1), m.group(1))}, gamma {m.group(2)}"


def sweep_claims(
    sweeps: Mapping[str, Mapping[str, pd.DataFrame]], paper: pd.DataFrame
) -> list[dict[str, Any]]:
    r"""Per ``ch06_sweeps`` file: Table 8's :math:`\gamma` trends (damage, reliability), Table 7's :math:`n`.

    ``sweeps`` maps a file name to :func:`~crispedit_lite.teaching.bench_evidence.sweep_frames`; damage
    is the KL along the sweep, set beside the paper's capability loss per dataset.

    Listed on the book page ``api``.
    """
    rows = []
    t8, t7 = paper_sweep("table8", paper), paper_sweep("table7", paper)
    for name, sw in sweeps.items():
        gam, n = sw["gamma"], sw["n"]
        here = f"{gam.attrs.get('model')}, {gam.attrs.get('n_edits')} edits ({name})"
        ends = t8.groupby("dataset")["capability loss"].agg(["first", "last"])
        falls = int((ends["last"] < ends["first"]).sum())
        detail = ", ".join(f"{d} {a:.1f} to {b:.1f}" for d, (a, b) in ends.iterrows())
        rows.append(
            claim_row(
                "gamma_damage",
                "A larger gamma protects capabilities (less damage)",
                "Table 8",
                f"capability loss lower at gamma 0.99 than at 0.5 on {falls} of {len(ends)} datasets "
                f"({detail} points)",
                here,
                f"KL {span(gam['KL'], '{:.4f}')} from gamma {gam['gamma'].iloc[0]:g} to "
                f"{gam['gamma'].iloc[-1]:g}: {gam['KL'].iloc[-1] / gam['KL'].iloc[0]:.2f}x",
                trend_verdict(gam["KL"]),
                gam["KL"].iloc[-1] / gam["KL"].iloc[0],
            )
        )
        drops = t8.groupby("dataset").apply(lambda d: d["QA Rel"].max() - d["QA Rel"].iloc[-1])
        drop = gam["TF Rel"].max() - gam["TF Rel"].iloc[-1]
        rows.append(
            claim_row(
                "gamma_reliability",
                "The largest gamma costs reliability",
                "Table 8",
                f"QA Rel at gamma 0.99 below the best gamma by {span(drops, '{:.0f}')} points "
                f"({int((drops >= MARGIN).sum())} of {len(drops)} datasets)",
                here,
                f"TF Rel {span(gam['TF Rel'], '{:.0f}')} at every gamma; the largest is "
                f"{drop:.0f} points below the best",
                HOLDS if drop >= MARGIN else PARTLY if drop > 0 else NOT,
                drop,
            )
        )
        loss = t7.set_index("setting")["capability loss"]
        ratio = n["KL"].iloc[-1] / n["KL"].iloc[0]
        rows.append(
            claim_row(
                "n_damage",
                "More capability text, less damage; a few texts give most of it",
                "Table 7",
                f"capability loss {loss.iloc[0]:.1f} at n = 0 (FT), {loss.loc[100.0]:.1f} at "
                f"n = 100, {loss.iloc[-1]:.1f} at n = {loss.index[-1]:,.0f}",
                here,
                f"KL {n['KL'].iloc[0]:.4f} at n = 0 (FT), {n['KL'].iloc[-1]:.4f} at n = "
                f"{n['n'].iloc[-1]:g}: {ratio:.3f}x",
                trend_verdict(n["KL"], end=1 / FAR),
                ratio,
            )
        )
    return rows


def cost_claims(steps: pd.DataFrame, scale: pd.DataFrame, p: pd.DataFrame) -> list[dict[str, Any]]:
    """A CrispEdit step against an FT step (Table 1's time ratio), and the one-off curvature (Sec. 3.1).

    ``steps`` and ``scale`` are :func:`~crispedit_lite.teaching.bench_evidence.step_ratio_summary` and
    ``scale_summary``; ``p`` is :func:`~crispedit_lite.teaching.paper_side.paper_editors`. The step claim
    holds when the fastest exact form is within 1.5x FT on every device, the curvature claim when K-FAC
    costs at most two forward-backward passes per token.

    Listed on the book page ``api``.
    """
    rows = []
    time = p["time"].unstack("method")
    paper_ratio = list(time["crispedit"] / time["ft"])
    best = [*steps["best / FT"], *scale["best / FT"]]
    if best:
        parts = [
            f"{r.device} {r.model}: {r['best / FT']:.2f}x (dense form {r['dense / FT']:.2f}x)"
            for _, r in steps.iterrows()
        ]
        parts += [
            f"{r.device} {r.preset} shape: {r['best / FT']:.2f}x ({_variant(r['best variant'])}"
            + ("" if "official" in r["best variant"] else f"; official bf16 {r['official / FT']:.2f}x")
            + ")"
            for _, r in scale.iterrows()
        ]
        verdict = HOLDS if max(best) <= 1.5 else PARTLY if min(best) <= 1.5 else NOT
        rows.append(
            claim_row(
                "step_cost",
                "A CrispEdit step costs about as much as an FT step",
                "Table 1 time",
                f"whole edit {span(paper_ratio)}x FT's time",
                "fastest projection form, one step",
                "; ".join(parts),
                verdict,
                max(best),
            )
        )
    if len(scale):
        kfac = "K-FAC, paper's set (s)"
        parts = [
            f"{r.preset}: {r['K-FAC / fwd-bwd']:.2f}x a forward-backward per token, "
            f"{r[kfac]:.0f} s for the paper's 10,000 texts, "
            f"eigh {r['eigh, all layers (s)']:.1f} s"
            for _, r in scale.iterrows()
        ]
        worst = float(scale["K-FAC / fwd-bwd"].max())
        rows.append(
            claim_row(
                "kfac_once",
                "The curvature is a one-off cost, collected once and reused",
                "Sec. 3.1",
                f"CrispEdit edits in {span(list(time['crispedit']), '{:.0f}')} s with the curvature "
                "precomputed",
                f"{scale['device'].iloc[0]}, paper shapes, random weights",
                "; ".join(parts),
                HOLDS if worst <= 2 else NOT,
                worst,
            )
        )
    return rows


def sequential_claims(lh: pd.DataFrame, p: pd.DataFrame) -> list[dict[str, Any]]:
    """CrispEdit-Seq's damage against FT-Seq's on a long stream.

    ``lh`` is :func:`~crispedit_lite.teaching.bench_evidence.long_horizon_summary`. No row unless both
    editors ran; the KL ratio is set beside the paper's capability-loss ratio.
    when a long-horizon run is committed.

    Listed on the book page ``api``.
    """
    have = dict(zip(lh["editor"], lh.index)) if len(lh) else {}
    if "crispedit_seq" not in have or "ft_seq" not in have:
        return []
    c, f = lh.loc[have["crispedit_seq"]], lh.loc[have["ft_seq"]]
    loss = p["capability loss"].unstack("method")
    paper = list(loss["crispedit_seq"] / loss["ft_seq"])
    ratio = c["KL"] / f["KL"]
    return [
        claim_row(
            "sequential",
            "CrispEdit-Seq damages capabilities far less than FT-Seq",
            "Table 1",
            f"capability loss {span(paper, '{:.3f}')}x FT-Seq's",
            f"long stream, {int(c['edits'])} edits",
            f"KL {ratio:.2f}x FT-Seq's; TF Rel of earlier edits {c['TF Rel (earlier)']:.0f} against "
            f"{f['TF Rel (earlier)']:.0f}",
            ratio_verdict(ratio),
            ratio,
        )
    ]
