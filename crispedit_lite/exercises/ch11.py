r"""Graders for the exercises of notebook ``11_results``.

Derived in notebook ``11_results``.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from crispedit_lite.exercises.core import exercise

__all__ = ["check_paper_scale_share"]


def _frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "table": ["table1"] * 4 + ["table5"] * 3 + ["table8"] * 2,
            "run id": ["a", "a", "b", None, "c", "c", "c", None, None],
            "paper scale": [True, True, False, False, False, False, False, False, False],
        }
    )


def _probe_share(fn) -> dict[str, Any]:
    got = fn(_frame())
    return {"series": got}


@exercise("ex-11-1", probe=_probe_share)
def check_paper_scale_share(obs: dict[str, Any]) -> None:
    """Exercise 11.1: ``paper_scale_share(frame)``: per table, the share of run cells at paper scale.

    Checked on a made-up frame with cells without a run, a table without any run and mixed scales.
    Derived in notebook ``11_results``.
    """
    got = obs["series"]
    assert isinstance(got, pd.Series), f"return a pandas Series indexed by table, got {type(got).__name__}"
    assert "table8" not in got.index, "table8 has no cell with a run: leave it out"
    assert not math.isclose(float(got.get("table1", 0)), 0.5), (
        "table1 has a cell without a run: it must not count as a run that is not at paper scale"
    )
    assert set(got.index) == {"table1", "table5"}, f"index by table, got {list(got.index)}"
    f = _frame()
    for table, share in got.items():
        ran = f[(f["table"] == table) & f["run id"].notna()]
        assert math.isclose(float(share), float(ran["paper scale"].sum()) / len(ran)), (
            f"{table}: {share} is not the share of its run cells that are at paper scale"
        )
