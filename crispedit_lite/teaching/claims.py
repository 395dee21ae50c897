r"""The claims table: every claim of the paper that this project's results speak to, with its verdict.

One row per claim and comparison: ``claim``, ``source`` (the paper's table or section), ``paper`` (its
evidence, labelled "paper" in the chapter), ``here`` (the model and run), ``evidence`` (this project's),
``verdict`` (:data:`~crispedit_lite.teaching.verdicts.VERDICTS`), the number behind the verdict
(``value``) and a ``key`` to find it. The claims are computed by
:mod:`~crispedit_lite.teaching.editor_claims` (Tables 1 and 3, per editor group) and
:mod:`~crispedit_lite.teaching.bench_claims` (Tables 7 and 8, costs, sequential editing), by the rules
of :mod:`~crispedit_lite.teaching.verdicts`.

Derived in notebook ``11_results``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd

from crispedit_lite.teaching.bench_claims import cost_claims, sequential_claims, sweep_claims
from crispedit_lite.teaching.editor_claims import editor_claims
from crispedit_lite.teaching.evidence import EditorGroup
from crispedit_lite.teaching.paper_side import paper_editors

__all__ = ["CLAIM_COLUMNS", "claims_table"]

#: The columns of :func:`claims_table`.
CLAIM_COLUMNS = ("key", "claim", "source", "paper", "here", "evidence", "verdict", "value")


def claims_table(
    groups: Sequence[EditorGroup],
    sweeps: Mapping[str, Mapping[str, pd.DataFrame]] | None = None,
    steps: pd.DataFrame | None = None,
    scale: pd.DataFrame | None = None,
    long_horizon: pd.DataFrame | None = None,
    eta: pd.DataFrame | None = None,
    paper: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Every claim the results can speak to: one row per (claim, comparison), in the order of the paper.

    ``groups``: :func:`~crispedit_lite.teaching.evidence.table1_groups` (and ``run_groups``);
    ``sweeps``: ``{file: sweep_frames(record)}``; ``steps``, ``scale``, ``long_horizon``, ``eta``: the
    tables of :mod:`~crispedit_lite.teaching.bench_evidence`. Missing evidence leaves its claims out.
    Derived in notebook ``11_results``.
    """
    from crispedit_lite.reproduction.paper_tables import load_paper_tables

    paper = load_paper_tables() if paper is None else paper
    p = paper_editors(paper)
    rows = editor_claims(groups, p, paper, eta)
    rows += sweep_claims(sweeps or {}, paper)
    rows += cost_claims(
        steps if steps is not None else pd.DataFrame(columns=["best / FT"]),
        scale if scale is not None else pd.DataFrame(columns=["best / FT"]),
        p,
    )
    rows += sequential_claims(long_horizon if long_horizon is not None else pd.DataFrame(), p)
    return pd.DataFrame(rows, columns=list(CLAIM_COLUMNS))
