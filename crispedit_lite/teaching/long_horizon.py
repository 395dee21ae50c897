r"""Long-horizon sequential editing: the results of ``benchmarks/long_horizon.py`` as tables and figures.

``benchmarks/long_horizon.py`` edits the embedded SmolLM2 with thousands of edits of the shipped stream
(``smollm2-stream``), chunk after chunk, with every sequential editor, and writes one JSON per editor
with one row per chunk. :func:`load_long_horizon` flattens them to one row per (editor, chunk);
:func:`reliability_figure`, :func:`damage_figure` and :func:`health_figure` draw them against the
number of edits applied, one colour per editor (the registry's); :func:`collapse_points` finds where
each editor collapses, by rules stated in its docstring; :func:`paper_sequential_rows` and
:func:`orderings` put the run's ranking of the editors next to the paper's Table 1 (LLaMA-3-8B, 3,000
edits, labelled "paper").

Derived in notebook ``07_sequential_editing``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["PAPER_DATASETS", "collapse_points", "damage_figure", "health_figure", "load_long_horizon",
           "long_horizon_files", "orderings", "paper_sequential_rows", "reliability_figure"]

_PATTERN = "long-horizon-smollm2-*.json"
PAPER_DATASETS = ("zsre", "counterfact", "wikibigedit")
_CAPABILITIES = ("MMLU", "IFEval", "TruthfulQA", "ARC-C", "GSM8K")


def long_horizon_files() -> list[Path]:
    """The committed long-horizon results (package data, ``resources/results/``).

    Described in notebook ``07_sequential_editing``.
    """
    from crispedit_lite.reproduction.committed import committed_names, committed_path

    found = [Path(committed_path(n)) for n in committed_names(_PATTERN)]
    if not found:
        raise FileNotFoundError(f"no long-horizon results ({_PATTERN}) in the package data")
    return found


def load_long_horizon(paths: Sequence[str | Path] | None = None) -> Any:
    r"""One row per (editor, chunk) of the long-horizon runs (default: :func:`long_horizon_files`).

    Columns: ``editor`` (registry name), ``label``, ``edits_applied``, current-chunk ``TF Rel``,
    ``TF Gen``, ``TF Loc``, ``PROB Rel``, ``PROB Gen``, ``PROB Loc``, retained ``TF Rel (earlier)`` and
    ``PROB Rel (earlier)`` (``NaN`` after the first chunk, which has no earlier edits), ``KL``, ``PPL``,
    ``ΔPPL %`` (against the base model), the pooled health signals ``|W|/|W0|``, ``|dW|/|W0|``,
    ``cond``, ``cond / cond0``, ``overlap out``, ``overlap in``, ``protected share``, and ``edit s``,
    ``eval s``. One row per editor has ``edits_applied = 0``: the base model. ``attrs`` holds, per
    editor, its command, whether it finished, its chunk size, stream digest and seconds.

    Described in notebook ``07_sequential_editing``.
    """
    import pandas as pd

    rows, runs = [], {}
    for path in (long_horizon_files() if paths is None else [Path(p) for p in paths]):
        d = json.loads(Path(path).read_text(encoding="utf-8"))
        name = d["editor"]
        if name in runs:
            raise ValueError(f"load_long_horizon: editor {name!r} appears in two files "
                             f"({runs[name]['path']} and {path})")
        runs[name] = {"path": str(path), "command": d["command"], "done": d["done"], "label": d["label"],
                      "method": d["method"], "chunk_size": d["stream"]["chunk_size"],
                      "n_edits": d["stream"]["n_edits"], "stream_sha256": d["stream"]["records_sha256"],
                      "chunks_done": len(d["rows"]), "edit_s": d["edit_s"], "eval_s": d["eval_s"],
                      "evaluation": d["evaluation"], "note": d.get("note", "")}
        base_ppl = d["base"]["ppl"]
        for r in [{**d["base"], "chunk": -1, "retained": None, "health": None}, *d["rows"]]:
            cur, ret, h = r["current"], r["retained"] or {}, (r["health"] or {}).get("pooled", {})
            rows.append({
                "editor": name, "method": d["method"], "label": d["label"],
                "edits_applied": r["edits_applied"],
                "TF Rel": cur["tf_rel"], "TF Gen": cur["tf_gen"], "TF Loc": cur["tf_loc"],
                "PROB Rel": cur["prob_rel"], "PROB Gen": cur["prob_gen"], "PROB Loc": cur["prob_loc"],
                "TF Rel (earlier)": ret.get("tf_rel"), "PROB Rel (earlier)": ret.get("prob_rel"),
                "KL": r["kl"], "PPL": r["ppl"], "ΔPPL %": 100 * (r["ppl"] / base_ppl - 1),
                "|W|/|W0|": h.get("norm_ratio", 1.0), "|dW|/|W0|": h.get("delta_ratio", 0.0),
                "cond": h.get("cond"), "cond / cond0": h.get("cond_ratio", 1.0),
                "overlap out": h.get("overlap_out", 1.0), "overlap in": h.get("overlap_in", 1.0),
                "protected share": h.get("protected_share"), "edit s": r.get("edit_s", 0.0),
                "eval s": r.get("eval_s", 0.0)})
    if len({r["stream_sha256"] for r in runs.values()}) > 1:
        raise ValueError("load_long_horizon: the files edit different streams (records_sha256 differ)")
    df = pd.DataFrame(rows).astype({"TF Rel (earlier)": float, "PROB Rel (earlier)": float,
                                    "cond": float, "protected share": float})
    df.attrs["runs"] = runs
    return df


def collapse_points(df: Any, *, threshold: float = 50.0, ppl_factor: float = 2.0) -> Any:
    r"""Where each editor collapses, by three rules, in edits applied (``None``: not within the run).

    * ``forgets``: the first chunk after which the retained reliability of earlier edits
      (``TF Rel (earlier)``) is below ``threshold`` (most earlier edits lost);
    * ``stops learning``: the first chunk whose own edits are not learnt (``TF Rel`` below
      ``threshold`` right after editing it);
    * ``breaks``: the first chunk after which the perplexity on held-out text exceeds ``ppl_factor`` times
      the base model's.

    Also ``edits run`` (the last ``edits_applied``) and ``done`` (the run finished its stream). Described
    in notebook ``07_sequential_editing``.
    """
    import pandas as pd

    base = df[df["edits_applied"] == 0].set_index("editor")["PPL"]
    out = []
    def first(g: Any, mask: Any) -> int | None:
        hits = g.loc[mask, "edits_applied"]
        return int(hits.iloc[0]) if len(hits) else None

    for name, g in df[df["edits_applied"] > 0].sort_values("edits_applied").groupby("editor", sort=False):
        out.append({"editor": name, "label": g["label"].iloc[0],
                    "forgets": first(g, g["TF Rel (earlier)"] < threshold),
                    "stops learning": first(g, g["TF Rel"] < threshold),
                    "breaks": first(g, g["PPL"] > ppl_factor * base[name]),
                    "edits run": int(g["edits_applied"].max()),
                    "done": bool(df.attrs.get("runs", {}).get(name, {}).get("done", False))})
    return pd.DataFrame(out).set_index("editor")


def _draw(df: Any, panels: Sequence[tuple[str, str, bool]], title: str, ncols: int) -> Any:
    """One panel per ``(column, panel title, log scale)``, one line per editor in its registry colour."""
    import matplotlib.pyplot as plt

    from crispedit_lite.teaching.plotting import method_color

    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.1 * ncols, 2.3 * nrows + 0.6), squeeze=False,
                             layout="constrained")
    for ax, (col, what, log) in zip(axes.flat, panels):
        for name, g in df.groupby("editor", sort=False):
            g = g.sort_values("edits_applied").dropna(subset=[col])
            ax.plot(g["edits_applied"], g[col], marker="o", ms=2.5, lw=1.4, color=method_color(name),
                    label=g["label"].iloc[0])
        ax.set_xlabel("edits applied")
        ax.set_title(what, fontsize=10, fontweight="normal")
        if log:
            ax.set_yscale("log")
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 7), frameon=False)
    fig.suptitle(title)
    return fig


def reliability_figure(df: Any) -> Any:
    """Reliability of earlier edits retained (TF, PROB) and of the chunk just edited, against edits applied.

    Described in notebook ``07_sequential_editing``.
    """
    return _draw(df, [("TF Rel (earlier)", "retained TF Rel (earlier chunks)", False),
                      ("PROB Rel (earlier)", "retained PROB Rel (earlier chunks)", False),
                      ("TF Rel", "TF Rel (chunk just edited)", False)],
                 "What each editor keeps as edits accumulate", ncols=3)


def damage_figure(df: Any) -> Any:
    """KL to the base model and perplexity change on held-out text, against edits applied.

    Described in notebook ``07_sequential_editing``.
    """
    d = df[df["edits_applied"] > 0]
    return _draw(d, [("KL", "KL to base (nats / token)", True), ("ΔPPL %", "perplexity change (%)", False),
                     ("TF Loc", "TF Loc (neighbourhood, chunk just edited)", False)],
                 "What the edits cost", ncols=3)


def health_figure(df: Any) -> Any:
    """Norm growth, update size, condition number, top-k subspace overlap and protected share, per editor.

    Described in notebook ``07_sequential_editing``.
    """
    d = df[df["edits_applied"] > 0]
    return _draw(d, [("|W|/|W0|", "norm growth |W| / |W0|", False),
                     ("|dW|/|W0|", "|dW| / |W0|", True),
                     ("cond / cond0", "condition number / base", False),
                     ("overlap out", "top-k overlap with W0 (output side)", False),
                     ("overlap in", "top-k overlap with W0 (input side)", False),
                     ("protected share", "share of dW in protected subspace", False)],
                 "The health of the edited matrices", ncols=3)


def _paper_method(editor: str) -> str | None:
    """The paper's Table 1 row of a sequential editor: its own, else that of the batch method it chunks."""
    from crispedit_lite.editing.registry import registry

    table = registry()
    if editor in table and table[editor].paper_row:
        return editor
    return next((n for n, e in table.items() if e.sequential_form == editor and e.paper_row), None)


def paper_sequential_rows(editors: Sequence[str]) -> Any:
    """The paper's Table 1 (LLaMA-3-8B-Instruct, 3,000 edits) for ``editors``, mean over its three datasets.

    Per editor: its paper row (``paper method``; MEMIT-Chunked and AlphaEdit-Seq take MEMIT's and
    AlphaEdit's, which the official runs made chunk after chunk, in batches of 32 and 100; MEMIT-Seq,
    with its cache of earlier keys, has no row), ``paper QA Rel`` and ``paper NoCtx
    Rel`` (WILD reliability) and ``paper capability`` (mean of MMLU, IFEval, TruthfulQA, ARC-C and
    GSM8K), each the mean over ZsRE, CounterFact and WikiBigEdit. Editors without a row are left out.

    Described in notebook ``07_sequential_editing``.
    """
    import pandas as pd

    from crispedit_lite.reproduction.paper_tables import load_paper_tables

    t = load_paper_tables()
    t = t[(t["table"] == "table1") & t["dataset"].isin(PAPER_DATASETS)]
    out = []
    for name in editors:
        method = _paper_method(name)
        rows = t[t["method"] == method]
        if method is None or rows.empty:
            continue
        mean = rows.groupby("metric")["value"].mean()
        out.append({"editor": name, "paper method": method, "paper QA Rel": float(mean["QA Rel"]),
                    "paper NoCtx Rel": float(mean["NoCtx Rel"]),
                    "paper capability": float(mean[list(_CAPABILITIES)].mean())})
    return pd.DataFrame(out).set_index("editor")


def orderings(df: Any, *, at: int | None = None) -> Any:
    """Measures of the run at ``at`` edits (default: the most that every editor reached) beside the paper's.

    Columns: ``TF Rel (earlier)``, ``PROB Rel (earlier)``, ``TF Rel`` (chunk just edited), ``ΔPPL %`` and
    ``KL`` at ``at`` edits, with each editor's rank on retained TF reliability (``rank retained``, 1 =
    best) and on damage (``rank ΔPPL``, 1 = least), then :func:`paper_sequential_rows` with the paper's
    ranks on NoCtx Rel and on capability. Described in notebook ``07_sequential_editing``.
    """
    d = df[df["edits_applied"] > 0]
    at = int(d.groupby("editor")["edits_applied"].max().min()) if at is None else at
    cur = d[d["edits_applied"] == at].set_index("editor")
    if cur.empty:
        raise ValueError(f"orderings: no editor has a row at {at} edits")
    cols = ["label", "TF Rel (earlier)", "PROB Rel (earlier)", "TF Rel", "ΔPPL %", "KL"]
    table = cur[cols].copy()
    table["rank retained"] = table["TF Rel (earlier)"].rank(ascending=False, method="min")
    table["rank ΔPPL"] = table["ΔPPL %"].rank(method="min")
    paper = paper_sequential_rows(list(table.index))
    table = table.join(paper, how="left")
    table["paper rank NoCtx Rel"] = table["paper NoCtx Rel"].rank(ascending=False, method="min")
    table["paper rank capability"] = table["paper capability"].rank(ascending=False, method="min")
    table.attrs["edits"] = at
    return table
