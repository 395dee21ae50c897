r"""The paper's side of each comparison: its editor rows and sweeps as orderings, trends and ratios.

A CPU run of SmolLM2-135M with 40 edits cannot be compared with LLaMA-3-8B with 3,000 edits number
for number, but an *ordering* (which editor damages the model least) or a *ratio* (CrispEdit's damage
over FT's) can be set beside the paper's. This module reads the transcription
(:func:`crispedit_lite.reproduction.paper_tables.load_paper_tables`, labelled "paper") into those
quantities:

* :func:`paper_editors`: per (dataset, method) of Table 1 and Table 3, WILD reliability (mean of QA
  Rel and NoCtx Rel, LLM judge), teacher-forced Rel and Spec, the mean of the five capability
  benchmarks and its *loss* against the unedited model (points), and the editing time (s);
* :func:`paper_sweep`: Table 8 (:math:`\gamma`) or Table 7 (:math:`n`) as reliability and capability
  loss against the swept setting;
* :func:`paper_method`: the paper row that a registered editor runs.
"""

from __future__ import annotations

import pandas as pd

__all__ = ["CAPABILITIES", "paper_editors", "paper_method", "paper_sweep"]

#: The five capability benchmarks of the paper's Tables 1, 4, 5, 7 and 8.
CAPABILITIES = ("MMLU", "IFEval", "TruthfulQA", "ARC-C", "GSM8K")


def _paper(paper: pd.DataFrame | None) -> pd.DataFrame:
    from crispedit_lite.reproduction.paper_tables import load_paper_tables

    return load_paper_tables() if paper is None else paper


def paper_method(editor: str, paper: pd.DataFrame | None = None) -> str | None:
    """The paper's Table 1 method that ``editor`` runs: its own name, else the row its ``paper_row`` names.

    ``None`` for rows the paper does not have (``crispedit+nbhd``, ``base``).

    Listed on the book page ``api``.
    """
    from crispedit_lite.editing.registry import registry

    p = _paper(paper)
    methods = set(p.loc[p["table"] == "table1", "method"]) - {"base"}
    if editor in methods:
        return editor
    table = registry()
    row = getattr(table.get(editor), "paper_row", "")
    if not row:
        return None
    return next((n for n, e in table.items() if n in methods and e.paper_row == row), None)


def paper_editors(paper: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per (dataset, method) of the paper's Tables 1 and 3: reliability, locality, capability, time.

    Columns ``WILD Rel`` (mean of QA Rel and NoCtx Rel), ``TF Rel``, ``TF Spec`` (Table 3),
    ``capability`` (mean of :data:`CAPABILITIES`), ``capability loss`` (the unedited model's mean minus
    the method's, points; negative: a gain), ``time`` (s). The ``base`` rows are kept.

    Listed on the book page ``api``.
    """
    p = _paper(paper)
    t1 = p[p["table"] == "table1"].pivot_table(
        index=["dataset", "method"], columns="metric", values="value", aggfunc="first"
    )
    t3 = p[p["table"] == "table3"].pivot_table(
        index=["dataset", "method"], columns="metric", values="value", aggfunc="first"
    )
    out = pd.DataFrame(index=t1.index)
    out["WILD Rel"] = t1[["QA Rel", "NoCtx Rel"]].mean(axis=1)
    out["TF Rel"] = t3["TF Rel"].reindex(out.index)
    out["TF Spec"] = t3["TF Spec"].reindex(out.index)
    out["capability"] = t1[list(CAPABILITIES)].mean(axis=1)
    base = out.xs("base", level="method")["capability"]
    out["capability loss"] = out.index.get_level_values("dataset").map(base).to_numpy() - out["capability"]
    out["time"] = t1["time"]
    return out


def paper_sweep(table: str, paper: pd.DataFrame | None = None) -> pd.DataFrame:
    r"""Table 8 (``"table8"``, over :math:`\gamma`) or Table 7 (``"table7"``, over :math:`n`) as trends.

    One row per (dataset, setting) of CrispEdit (Table 7: FT is :math:`n = 0`), columns
    ``dataset``, ``setting`` (:math:`\gamma` or :math:`n`), ``QA Rel`` and ``capability loss`` (points,
    against the unedited model of Table 1).

    Listed on the book page ``api``.
    """
    p = _paper(paper)
    key = {"table8": "gamma", "table7": "n_capability"}.get(table)
    if key is None:
        raise ValueError(f"paper_sweep: table must be 'table8' or 'table7', got {table!r}")
    t = p[(p["table"] == table) & (p["method"] != "base")]
    setting = t[key].where(t["method"] != "ft", 0.0)
    wide = (
        t.assign(setting=setting)
        .pivot_table(index=["dataset", "setting"], columns="metric", values="value", aggfunc="first")
        .reset_index()
    )
    base = p[(p["table"] == "table1") & (p["method"] == "base") & p["metric"].isin(CAPABILITIES)]
    base_cap = base.groupby("dataset")["value"].mean()
    wide["capability loss"] = wide["dataset"].map(base_cap) - wide[list(CAPABILITIES)].mean(axis=1)
    return wide[["dataset", "setting", "QA Rel", "capability loss"]].sort_values(
        ["dataset", "setting"], ignore_index=True
    )
