r"""Graders for the exercises of notebook ``11_results``.

Each grader raises ``AssertionError`` with a hint when the answer is wrong and prints ``"correct"``
when it is right. Derived in notebook ``11_results``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pandas as pd

from crispedit_lite.reproduction.paper_tables import load_paper_tables

__all__ = ["check_best_gamma", "check_paper_scale_share"]


def check_best_gamma(answer: dict[str, float]) -> None:
    r"""Exercise 11.1: per dataset, Table 8's :math:`\gamma` with the highest CrispEdit ``QA Rel``.

    ``answer`` maps ``"zsre"``, ``"counterfact"``, ``"wikibigedit"`` to a :math:`\gamma`; ties go to
    the smaller :math:`\gamma`. Derived in notebook ``11_results``.
    """
    df = load_paper_tables()
    t8 = df[(df["table"] == "table8") & (df["metric"] == "QA Rel")].sort_values("gamma")
    want = {ds: float(g.loc[g["value"].idxmax(), "gamma"]) for ds, g in t8.groupby("dataset")}
    assert set(answer) == set(want), f"give one gamma for each of {sorted(want)}"
    for ds, g in want.items():
        assert math.isclose(float(answer[ds]), g), (
            f"{ds}: filter table == 'table8', metric == 'QA Rel', then take the gamma of the largest value")
    print("correct")


def check_paper_scale_share(fn: Callable[[pd.DataFrame], pd.Series]) -> None:
    """Exercise 11.2: ``fn(frame)`` -> per table, the share of *run* cells that are at paper scale.

    ``frame`` has the columns of :func:`crispedit_lite.reproduction.cells.compare_runs` (``table``, ``run
    id``,
    ``paper scale``); cells without a run are left out, and a table with no run cell is left out.
    Checked on a made-up frame. Derived in notebook ``11_results``.
    """
    frame = pd.DataFrame({
        "table": ["table1"] * 4 + ["table5"] * 3 + ["table8"] * 2,
        "run id": ["a", "a", "b", None, "c", "c", "c", None, None],
        "paper scale": [True, True, False, False, False, False, False, False, False],
    })
    got = fn(frame.copy())
    assert isinstance(got, pd.Series), f"return a pandas Series indexed by table, got {type(got).__name__}"
    assert "table8" not in got.index, "table8 has no run cell: leave it out (drop cells without a run first)"
    assert not math.isclose(float(got.get("table1", 0)), 0.5), (
        "table1's cell without a run counts as not run: drop it before taking the mean")
    assert set(got.index) == {"table1", "table5"}, f"index by table, got {list(got.index)}"
    assert math.isclose(float(got["table1"]), 2 / 3) and math.isclose(float(got["table5"]), 0.0), (
        "per table: mean of 'paper scale' over the cells whose 'run id' is not null")
    print("correct")
