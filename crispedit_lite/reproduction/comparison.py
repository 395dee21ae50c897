r"""Paper beside run: join results JSONs to the paper's table cells, lay tables out, read runs back.

:func:`compare_runs` puts the paper's cells beside any runs
(:func:`crispedit_lite.reproduction.paper_tables.compare`,
plus a check that the edit data is the paper's file); :func:`side_by_side` lays one table out as the
paper does; :func:`load_runs` reads every results JSON back; :func:`scale_notes`,
:func:`scale_summary` and :func:`benchmark_summary` say which cells ran at paper scale and summarise
``benchmarks/scale.py`` runs. Re-exported by :mod:`crispedit_lite.reproduction.cells`.

Derived in notebook ``11_results``.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["NOT_RUN", "benchmark_summary", "compare_runs", "coverage", "editor_rows", "load_runs",
           "missing_cells", "scale_notes", "scale_summary", "side_by_side"]


def _data_issue(result: Mapping[str, Any]) -> str | None:
    from crispedit_lite.reproduction.paper_tables import DATASETS

    s = result.get("settings", {})
    data = str(s.get("data", ""))
    stem = re.sub(r"\.jsonl?$", "", data.replace("\\", "/").rsplit("/", 1)[-1].lower())
    if DATASETS.get(re.sub(r"[^a-z0-9]+", "_", stem).strip("_")) is None:
        return f"edit data {stem or '?'} (paper: the {s.get('dataset')} file of the official repo)"
    return None


def compare_runs(runs: Iterable[Mapping[str, Any]], tables: Sequence[str] | None = None, *,
                 include_missing: bool = True) -> pd.DataFrame:
    """:func:`~crispedit_lite.reproduction.paper_tables.compare` on ``tables`` (``None``: all), with flags.

    A run is matched to paper cells by its recorded dataset *label*; if its edit data is not one of
    the paper's files (e.g. the bundled ``smollm2-counterfacts`` set labelled ``counterfact``), the
    cell is not at paper scale and ``scale notes`` says so. Derived in notebook ``11_results``.
    """
    from crispedit_lite.reproduction.paper_tables import compare, load_paper_tables

    runs = list(runs)
    rows = load_paper_tables()
    if tables is not None:
        rows = rows[rows["table"].isin(list(tables))]
    frame = compare(rows, runs, include_missing=include_missing)
    issues = {str(r.get("run_id")): _data_issue(r) for r in runs}
    for i, rid in frame["run id"].items():
        note = issues.get(str(rid)) if rid is not None else None
        if note:
            frame.at[i, "paper scale"] = False
            frame.at[i, "scale notes"] = "; ".join(x for x in (frame.at[i, "scale notes"], note) if x)
    return frame


def side_by_side(frame: pd.DataFrame, table: str, runs_only: bool = False) -> pd.DataFrame:
    """One table of a :func:`compare_runs` frame: a row per paper row, ``paper``/``this run`` per column.

    Rows are ``(dataset, label, setting)`` in the paper's order; columns ``(metric, "paper" | "this
    run")`` in the paper's column order. ``runs_only`` keeps the rows that have at least one run (the
    others are listed by :func:`missing_cells`). Derived in notebook ``11_results``.
    """
    import pandas as pd

    g = frame[frame["table"] == table]
    if g.empty:
        raise ValueError(f"the frame has no cells of {table!r}; tables: {sorted(frame['table'].unique())}")
    if runs_only:
        keys = ["dataset", "label", "setting"]
        ran = g[g["run id"].notna()][keys].drop_duplicates()
        g = g.merge(ran, on=keys)
        if g.empty:
            return pd.DataFrame()
    index = ["dataset", "label", "setting"]
    order = list(dict.fromkeys(map(tuple, g[index].itertuples(index=False))))
    metrics = list(dict.fromkeys(g["metric"]))
    wide = g.pivot_table(index=index, columns="metric", values=["paper", "this run"], aggfunc="first",
                         dropna=False)
    wide = wide.swaplevel(0, 1, axis=1)
    cols = pd.MultiIndex.from_tuples([(m, k) for m in metrics for k in ("paper", "this run")])
    return wide.reindex(index=pd.MultiIndex.from_tuples(order, names=index), columns=cols)


def load_runs(*roots: str | os.PathLike) -> tuple[list[dict[str, Any]], list[str]]:
    """Every results JSON under ``roots`` (recursively): ``(valid runs, problems)``.

    A file that is not valid JSON or breaks :data:`crispedit_lite.reproduction.results.SCHEMA` is not
    read, and ``problems`` names it with the reason, so the notebook can show it (never a silent skip).
    Missing roots are fine (nothing has been run yet). Derived in notebook ``11_results``.
    """
    from crispedit_lite.reproduction.results import validate_result

    runs, problems, seen = [], [], set()
    for root in roots:
        base = Path(root)
        for path in sorted(base.rglob("*.json")) if base.is_dir() else []:
            if path.resolve() in seen:
                continue
            seen.add(path.resolve())
            try:
                data = json.loads(path.read_text())
                validate_result(data)
            except (ValueError, OSError) as err:  # json.JSONDecodeError is a ValueError
                problems.append(f"{path.relative_to(base)}: {err}")
                continue
            data["_path"] = str(path)
            runs.append(data)
    return sorted(runs, key=lambda r: r["created"]), problems


def scale_notes(frame: pd.DataFrame) -> list[str]:
    """The distinct ``scale notes`` of a :func:`compare_runs` frame, unmeasured columns merged in one.

    Listed on the book page ``api``.
    """
    notes = {n for s in frame["scale notes"] for n in str(s).split("; ") if n}
    prefix = "the run did not measure "
    unmeasured = sorted(n[len(prefix):] for n in notes if n.startswith(prefix))
    out = sorted(n for n in notes if not n.startswith(prefix))
    return out + ([f"not measured: {', '.join(unmeasured)}"] if unmeasured else [])


def scale_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Per table of a :func:`compare_runs` frame: paper cells, cells run, cells at paper scale.

    Derived in notebook ``11_results``.
    """
    import pandas as pd

    rows = []
    for table, g in frame.groupby("table", sort=True):
        ran = g[g["run id"].notna()]
        notes = scale_notes(ran)
        rows.append({"table": table, "paper cells": len(g), "cells run": len(ran),
                     "at paper scale": int(g["paper scale"].sum()),
                     "why not at paper scale": "; ".join(notes) if len(ran) else "not run"})
    return pd.DataFrame(rows, columns=["table", "paper cells", "cells run", "at paper scale",
                                       "why not at paper scale"])


def benchmark_summary(paths: Iterable[str | os.PathLike]) -> pd.DataFrame:
    """Headline figures of ``benchmarks/scale.py`` JSON files, one row per (file, preset).

    Random-init weights: timings and memory only. Fields absent from a file are NaN.

    Listed on the book page ``api``.
    """
    import pandas as pd

    def get(d: Any, *keys: str) -> Any:
        for k in keys:
            d = d.get(k) if isinstance(d, Mapping) else None
        return math.nan if d is None or isinstance(d, (dict, list)) else d

    rows = []
    for path in sorted(Path(p) for p in paths):
        data = json.loads(path.read_text())
        for name, p in (data.get("presets") or {}).items():
            rows.append({
                "file": path.name, "date": data.get("date"), "device": get(data, "hardware", "gpu"),
                "preset": name, "weights": data.get("weights", "random init"),
                "K-FAC tokens/s": get(p, "kfac", "kfac_tokens_per_s"),
                "K-FAC / fwd-bwd": get(p, "kfac", "kfac_over_fwdbwd"),
                "eigh, all layers (s)": get(p, "eigh", "all_layers_eigh_s"),
                "plain FT step (s)": get(p, "step", "plain_ft_s"),
                "best CrispEdit step / FT": get(p, "step", "best_ratio_to_plain_ft"),
                "best variant": get(p, "step", "best_crispedit_variant"),
            })
    return pd.DataFrame(rows)


# Paper rows that no editor here can run, and why (shown beside the comparison). MEND runs (editors/mend.py)
# once an editor network trained on ZsRE is given (tools/train_mend_gpu.py).
NOT_RUN: dict[str, str] = {}


def editor_rows(paper: pd.DataFrame, table: str = "table1") -> pd.DataFrame:
    """Every method row of a paper table, the registered editor that runs it, and its reproduce cells.

    Columns ``method, editor, update, statistics, sequential, cells`` (number of
    ``reproduce/<table>_*_<method>.yaml`` files) and ``why not`` (:data:`NOT_RUN`; empty when it runs).
    Derived in notebook ``11_results``.
    """
    import pandas as pd

    from crispedit_lite.editing.registry import registry
    from crispedit_lite.reproduction.cells import paper_cell_names

    known = set(paper_cell_names(f"{table}_"))
    table_editors = registry()
    rows = []
    for method in dict.fromkeys(paper.loc[paper["table"] == table, "method"]):
        if method == "base":
            continue
        e = table_editors.get(method)
        datasets = sorted(set(paper.loc[paper["table"] == table, "dataset"]))
        cells = [ds for ds in datasets if f"{table}_{ds}_{method}" in known]
        rows.append({"method": method, "editor": e.name if e else "",
                     "update": e.update if e else "", "statistics": ", ".join(e.statistics) if e else "",
                     "sequential": bool(e and e.sequential), "cells": len(cells),
                     "why not": "" if e else NOT_RUN.get(method, "not implemented")})
    return pd.DataFrame(rows)


def coverage(frame: pd.DataFrame) -> pd.DataFrame:
    """Share of each editor's paper cells, per table, that have a matching run (0 to 1; NaN: no such row).

    Rows are the methods (the base model left out), columns the tables.

    Listed on the book page ``api``.
    """
    f = frame[frame["method"] != "base"].assign(ran=frame["run id"].notna())
    order = list(dict.fromkeys(f["method"]))
    return f.groupby(["method", "table"])["ran"].mean().unstack("table").reindex(order)


def missing_cells(frame: pd.DataFrame) -> list[str]:
    """One line per table: the methods without a run, grouped by the datasets they lack.

    E.g. ``table1: no run of memit, ft (counterfact, wikibigedit, zsre)``.

    Listed on the book page ``api``.
    """
    lines = []
    f = frame[frame["method"] != "base"]
    for table, g in f.groupby("table", sort=True):
        ran = g.groupby(["method", "dataset"], sort=False)["run id"].apply(lambda s: s.notna().any())
        miss = ran[~ran].reset_index()
        if miss.empty:
            continue
        by_set: dict[str, list[str]] = {}
        for m, d in miss.groupby("method", sort=False):
            by_set.setdefault(", ".join(sorted(d["dataset"])), []).append(m)
        parts = [f"no run of {', '.join(ms)} ({ds})" for ds, ms in by_set.items()]
        lines.append(f"{table}: " + "; ".join(parts))
    return lines
