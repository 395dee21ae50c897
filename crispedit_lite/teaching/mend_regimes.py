r"""MEND's two regimes side by side: each edit alone on the base model, and the same edits in sequence.

``benchmarks/mend_regimes.py`` edits each of chapter 6's 40-edit subsets twice with the shipped editor
network: every edit on its own from the base weights (the single-edit regime MEND was trained for),
and all of them one after another on the model the earlier edits left (MEND-Seq, Table 1's regime).
Derived in notebook ``06_crispedit_on_a_small_lm``; the book page ``mend`` plots the sequence.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["regimes_table"]

_COLUMNS = {"tf_rel": "TF Rel", "prob_rel": "PROB Rel", "tf_loc": "TF Spec", "kl": "KL"}


def regimes_table(path: str | Path | None = None, *, after: int = 40) -> Any:
    """Mean over subsets of TF Rel, PROB Rel, TF Spec and KL per regime, with the subsets and command.

    ``single``: the mean over the edits of each subset, each applied alone; ``sequential``: all edits of
    the subset after ``after`` edits in sequence (every one evaluated). ``path``: the committed
    ``mend-regimes-smollm2.json`` by default. Derived in notebook ``06_crispedit_on_a_small_lm``.
    """
    import pandas as pd

    from crispedit_lite.reproduction.committed import committed_path

    source = Path(committed_path("mend-regimes-smollm2.json") if path is None else path)
    record = json.loads(source.read_text(encoding="utf-8"))
    rows = []
    for subset, sub in record["subsets"].items():
        single = sub["single"]["mean"]
        point = [e for e in sub["sequential"]["curve"] if e["edits_applied"] == after]
        if len(point) != 1 or point[0]["evaluated"] != after:
            raise ValueError(f"{source.name}: subset {subset} has no sequential point at {after} edits "
                             "with every edit evaluated")
        for regime, values in (("single", single), (f"sequential ({after} edits)", point[0])):
            rows.append({"regime": regime, "subset": int(subset),
                         **{label: float(values[key]) for key, label in _COLUMNS.items()}})
    df = pd.DataFrame(rows)
    table = df.groupby("regime", sort=False)[list(_COLUMNS.values())].mean()
    table.attrs.update({"command": record["command"], "subsets": sorted(df["subset"].unique().tolist())})
    return table
