r"""Verdicts on the paper's claims: the rules, with margins wide enough to survive a rerun elsewhere.

The scales differ (SmolLM2-135M and 40 edits against LLaMA-3-8B and 3,000), so every claim is tested
as an *ordering* or a *ratio*, on both sides: the paper's capability loss (points of the five
benchmarks, :mod:`~crispedit_lite.teaching.paper_side`) against this project's KL to the unedited
model on held-out text; the paper's teacher-forced reliability (Table 3) against this project's. The
rules, with their margins (chosen wide, so that a rerun on other hardware does not flip a verdict):

* a **ratio** claim ("CrispEdit's damage is far below FT's") *holds* when the ratio is at most
  :math:`1/` :data:`FAR`, is *partly* true when it is below 1 (the order holds, the size does not), and
  *does not hold here* otherwise (:func:`ratio_verdict`);
* a **front** claim holds when CrispEdit is on the Pareto front of reliability against damage
  (:func:`~crispedit_lite.teaching.pareto.pareto_front`);
* a **margin** claim ("less reliable", "most locality") compares with :data:`MARGIN` points of
  teacher-forced score: an editor *edits reliably* when its TF Rel is within :data:`MARGIN` of the best;
* a **trend** claim ("more capability text, less damage") holds when the damage at the end of the sweep
  is at most :data:`TREND` of its start and never rises by more than 10 % from one point to the next
  (:func:`trend_verdict`).

Derived in notebook ``11_results``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "FAR",
    "HOLDS",
    "MARGIN",
    "NOT",
    "PARTLY",
    "TREND",
    "VERDICTS",
    "claim_row",
    "ratio_verdict",
    "span",
    "trend_verdict",
]

HOLDS, PARTLY, NOT = "holds", "partly", "does not hold here"
VERDICTS = (HOLDS, PARTLY, NOT)
#: "Far below": at most a quarter.
FAR = 4.0
#: Points of teacher-forced score within which editors count as equally reliable.
MARGIN = 5.0
#: A sweep's damage "falls" when its last point is at most this share of its first.
TREND = 0.8


def ratio_verdict(ratio: float, far: float = FAR) -> str:
    """:data:`HOLDS` if ``ratio <= 1/far``, :data:`PARTLY` if below 1, else :data:`NOT`.

    The rule of the ratio claims in notebook ``11_results``.
    """
    return HOLDS if ratio <= 1 / far else PARTLY if ratio < 1 else NOT


def trend_verdict(values: Sequence[float], end: float = TREND, rise: float = 0.1) -> str:
    """A falling sequence: :data:`HOLDS` if ``last <= end * first`` and no step rises by more than ``rise``.

    :data:`PARTLY` if only ``last < first``; else :data:`NOT`.
    The rule of the trend claims in notebook ``11_results``.
    """
    v = np.asarray(values, dtype=float)
    ratio = v[-1] / v[0]
    steady = bool(np.all(v[1:] <= (1 + rise) * v[:-1]))
    return HOLDS if ratio <= end and steady else PARTLY if ratio < 1 else NOT


def claim_row(
    key: str, claim: str, source: str, paper: str, here: str, evidence: str, verdict: str, value: float
) -> dict[str, Any]:
    """One row of the claims table of notebook ``11_results`` (``claims.claims_table``)."""
    return {
        "key": key,
        "claim": claim,
        "source": source,
        "paper": paper,
        "here": here,
        "evidence": evidence,
        "verdict": verdict,
        "value": float(value),
    }


def span(values: Sequence[float], fmt: str = "{:.2f}") -> str:
    """``"lo-hi"`` of ``values`` in ``fmt`` (one number if they agree); claims of notebook ``11_results``."""
    lo, hi = min(values), max(values)
    return fmt.format(lo) if np.isclose(lo, hi) else f"{fmt.format(lo)}-{fmt.format(hi)}"
