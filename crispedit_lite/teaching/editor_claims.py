r"""The paper's claims about editors (Tables 1 and 3), tested on one group of this project's editors.

Each function takes an :class:`EditorEvidence` (a group's comparison at its usual settings, keyed by
the paper's method, with the paper's rows of the same editors) and returns claim rows
(:func:`~crispedit_lite.teaching.verdicts.claim_row`), or none when the group lacks an editor the
claim needs. The rules are those of :mod:`crispedit_lite.teaching.verdicts`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from crispedit_lite.teaching.evidence import EditorGroup
from crispedit_lite.teaching.paper_side import paper_method
from crispedit_lite.teaching.pareto import pareto_front
from crispedit_lite.teaching.verdicts import HOLDS, MARGIN, NOT, PARTLY, claim_row, ratio_verdict, span

__all__ = ["EditorEvidence", "editor_claims"]


class EditorEvidence:
    """A group's plain comparison, keyed by the paper's method, with the paper's rows of the same editors.

    What each claim of notebook ``11_results`` on editors reads.
    """

    def __init__(self, group: EditorGroup, p: pd.DataFrame, paper: pd.DataFrame) -> None:
        self.group, self.plain = group, group.plain()
        self.method = {lab: paper_method(e, paper) for lab, e in self.plain["editor"].items()}
        self.by_method = {m: lab for lab, m in self.method.items() if m}
        methods = [m for m in self.by_method if m in set(p.index.get_level_values("method"))]
        self.paper = p[p.index.get_level_values("method").isin(methods)]
        self.here = group.title if group.source == "committed" else f"{group.title} ({group.source})"

    def get(self, method: str) -> pd.Series | None:
        """The group's row of the editor that runs the paper's ``method`` (``None``: not in the group)."""
        lab = self.by_method.get(method)
        return None if lab is None else self.plain.loc[lab]

    def paper_ratio(self, num: str, den: str) -> list[float]:
        """Per dataset, the paper's capability loss of ``num`` over that of ``den``."""
        loss = self.paper["capability loss"]
        return [loss[(d, num)] / loss[(d, den)] for d in sorted(set(self.paper.index.get_level_values(0)))]


def _front(g: EditorEvidence) -> list[dict[str, Any]]:
    if g.get("crispedit") is None or len(g.plain) < 3:
        return []
    pts = {lab: (r["TF Rel"], r["KL"]) for lab, r in g.plain.iterrows()}
    front = pareto_front(pts)
    datasets = sorted(set(g.paper.index.get_level_values(0)))
    on = sum(
        "crispedit"
        in pareto_front(
            {m: (r["WILD Rel"], r["capability loss"]) for m, r in g.paper.xs(d, level="dataset").iterrows()}
        )
        for d in datasets
    )
    ours = g.by_method["crispedit"]
    return [
        claim_row(
            "front",
            "CrispEdit is on the front of reliability against capability damage",
            "Table 1",
            f"on the front on {on} of {len(datasets)} datasets (WILD Rel against "
            f"capability loss, the same {len(g.by_method)} editors)",
            g.here,
            f"front of TF Rel against KL: {', '.join(front)}",
            HOLDS if ours in front else NOT,
            float(ours in front),
        )
    ]


def _damage_vs_ft(g: EditorEvidence) -> list[dict[str, Any]]:
    ft = g.get("ft")
    if ft is None or "crispedit" not in g.by_method:
        return []
    paper = g.paper_ratio("crispedit", "ft")
    m = g.group.means
    own = {"gamma", "n_capability"}  # CrispEdit's own settings; others (lr) change FT's footing too
    rows = []
    for lab, r in m[(m["editor"] == "crispedit") & m["setting"].map(lambda s: set(s) <= own)].iterrows():
        ratio = r["KL"] / ft["KL"]
        rows.append(
            claim_row(
                "damage_vs_ft",
                "CrispEdit damages capabilities far less than FT",
                "Table 1",
                f"capability loss {span(paper, '{:.3f}')}x FT's",
                g.here + ("" if lab == "CrispEdit" else f"; {lab}"),
                f"KL {ratio:.2f}x FT's (perplexity change {r['ΔPPL %'] / ft['ΔPPL %']:.2f}x)",
                ratio_verdict(ratio),
                ratio,
            )
        )
    return rows


def _adam_nscl(g: EditorEvidence) -> list[dict[str, Any]]:
    nscl, crisp = g.get("adam_nscl"), g.get("crispedit")
    if nscl is None or crisp is None:
        return []
    ratio = nscl["KL"] / crisp["KL"]
    paper = g.paper_ratio("adam_nscl", "crispedit")
    return [
        claim_row(
            "adam_nscl",
            "Adam-NSCL damages capabilities far more than CrispEdit",
            "Table 1",
            f"capability loss {span(paper, '{:.0f}')}x CrispEdit's",
            g.here,
            f"KL {ratio:.2f}x CrispEdit's",
            ratio_verdict(1 / ratio),
            ratio,
        )
    ]


def _locality(g: EditorEvidence) -> list[dict[str, Any]]:
    crisp = g.get("crispedit")
    if crisp is None or len(g.plain) < 3:
        return []
    reliable = g.plain[g.plain["TF Rel"] >= g.plain["TF Rel"].max() - MARGIN]
    best = reliable["TF Spec"].idxmax()
    gap = crisp["TF Spec"] - reliable.loc[best, "TF Spec"]
    counts = []
    for d in sorted(set(g.paper.index.get_level_values(0))):
        p = g.paper.xs(d, level="dataset")
        rel = p[p["TF Rel"] >= p["TF Rel"].max() - MARGIN]
        counts.append(p.loc["crispedit", "TF Spec"] >= rel["TF Spec"].max() - MARGIN)
    tied = np.isclose(reliable["TF Spec"], crisp["TF Spec"]).all()
    best_text = (
        f"all {len(reliable)} reliable editors at {crisp['TF Spec']:.0f}"
        if tied
        else f"CrispEdit {crisp['TF Spec']:.0f}, best reliable editor {best} "
        f"{reliable.loc[best, 'TF Spec']:.0f}"
    )
    return [
        claim_row(
            "locality",
            "CrispEdit keeps the most locality among editors that edit reliably",
            "Table 3",
            f"TF Spec within {MARGIN:g} points of the best on {sum(counts)} of {len(counts)} datasets",
            g.here,
            f"TF Spec: {best_text}",
            HOLDS if gap >= -MARGIN else NOT,
            gap,
        )
    ]


def _less_reliable(
    g: EditorEvidence, key: str, methods: Sequence[str], claim: str, extra: str = ""
) -> list[dict[str, Any]]:
    crisp = g.get("crispedit")
    labs = [lab for lab, m in g.method.items() if m in methods]
    if crisp is None or len(labs) < len(methods):
        return []
    gaps = {lab: crisp["TF Rel"] - g.plain.loc[lab, "TF Rel"] for lab in labs}
    paper = ", ".join(
        f"{g.by_method.get(m, m)} {span(list(g.paper.xs(m, level='method')['TF Rel']), '{:.1f}')}"
        for m in [*methods, "crispedit"]
    )
    here = ", ".join(f"{lab} {g.plain.loc[lab, 'TF Rel']:.1f}" for lab in [*labs, g.by_method["crispedit"]])
    worst = min(gaps.values())
    verdict = HOLDS if worst >= MARGIN else PARTLY if worst > 0 else NOT
    return [
        claim_row(key, claim, "Table 3", f"TF Rel {paper}", g.here, f"TF Rel {here}{extra}", verdict, worst)
    ]


def editor_claims(
    groups: Sequence[EditorGroup], p: pd.DataFrame, paper: pd.DataFrame, eta: pd.DataFrame | None = None
) -> list[dict[str, Any]]:
    """The editor claims on every group, claim by claim (the paper's order), then group by group.

    ``p`` is :func:`~crispedit_lite.teaching.paper_side.paper_editors`, ``paper`` the transcription;
    ``eta`` (UltraEdit's step-size sweep, :func:`~crispedit_lite.teaching.bench_evidence.eta_summary`)
    adds its best reliability to the UltraEdit claim.

    Listed on the book page ``api``.
    """
    gs = [EditorEvidence(g, p, paper) for g in groups]
    eta_text = ""
    if eta is not None and len(eta):
        best = eta.loc[eta["TF Rel"].idxmax()]
        eta_text = (
            f"; best of its step-size sweep {best['TF Rel']:.1f} (eta {best['eta']:g}, "
            f"{int(best['n_edits'])} edits)"
        )
    rows = [r for fn in (_front, _damage_vs_ft, _adam_nscl, _locality) for g in gs for r in fn(g)]
    rows += [
        r
        for g in gs
        for r in _less_reliable(
            g, "closed_form", ["memit", "alphaedit"], "MEMIT and AlphaEdit edit less reliably than CrispEdit"
        )
    ]
    rows += [
        r
        for g in gs
        for r in _less_reliable(
            g, "ultraedit", ["ultraedit"], "UltraEdit edits far less reliably than CrispEdit", eta_text
        )
    ]
    return rows
