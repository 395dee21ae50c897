r"""The paper's Table 1 on a CPU: the results of ``benchmarks/cpu_table1.py`` as tables and figures.

``benchmarks/cpu_table1.py`` edits the embedded SmolLM2 with every runnable editor on several seeded
subsets of the bundled counterfactual set and writes one JSON. :func:`load_table` flattens it to one
row per (method, subset) with the three metric families side by side (teacher-forced token accuracy,
the ROME/MEMIT probability test :math:`P(\text{new})>P(\text{old})`, WILD generation), locality and
the capability proxies (KL to the base model, relative perplexity change); :func:`pareto_figure` draws
reliability against damage with the spread over subsets, and :func:`pareto_front` (from
:mod:`crispedit_lite.teaching.pareto`) names the editors that no other editor beats on both axes.

Derived in notebook ``06_crispedit_on_a_small_lm``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from crispedit_lite.teaching.pareto import pareto_front

__all__ = ["LABELS", "LOWER_IS_BETTER", "VARIANT_LABELS", "label", "load_table",  # noqa: F822
           "method_style", "pareto_figure", "pareto_front", "summary", "tradeoff_figure"]

#: Display names of the rows of ``benchmarks/cpu_table1.py`` that are not editors.
VARIANT_LABELS = {"crispedit+nbhd": "CrispEdit + nbhd texts", "base": "base"}


def label(method: str) -> str:
    """The display name of a row's method: the editor's ``label`` (registry), a variant's, or itself.

    Described on the book page ``running``.
    """
    from crispedit_lite.editing.registry import registry

    table = registry()
    return table[method].label if method in table else VARIANT_LABELS.get(method, method)


def __getattr__(name: str) -> Any:
    """``LABELS``: every editor's display name (the registry's ``label``) and :data:`VARIANT_LABELS`."""
    if name == "LABELS":
        from crispedit_lite.editing.registry import registry

        return {**{n: e.label for n, e in registry().items()}, **VARIANT_LABELS}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _get(tree: Mapping[str, Any], *keys: str) -> float | None:
    for k in keys:
        if not isinstance(tree, Mapping) or k not in tree or tree[k] is None:
            return None
        tree = tree[k]
    return float(tree)


def load_table(path: str | Path | Sequence[str | Path]) -> Any:
    """One row per (method, subset): metric families, locality, KL, perplexity change, training.

    ``path`` may be a list of JSON files (e.g. subsets run by separate processes); their rows are
    joined and their commands listed. A (method, subset) cell present in several files is taken from
    the first file in ``path`` that has it; ``df.attrs["duplicates"]`` lists every cell that a later
    file also held (``"method (subset s): file kept, not file"``), so the choice is visible.

    Columns: ``TF Rel/Gen/Spec``, ``PROB Rel/Gen/Loc``, ``WILD Rel (none)`` and ``WILD Rel (qa)``
    (contains-as-a-word, the decoding the run used), ``WILD EM (qa)``, ``Loc agree (none)``
    (agreement with the pre-edit answer), ``KL``, ``ΔPPL %`` (against the base model of the same subset
    measured by the same run),
    ``steps``, ``final loss``. Derived in notebook ``06_crispedit_on_a_small_lm``.
    """
    import pandas as pd

    paths = [path] if isinstance(path, (str, Path)) else list(path)
    parts = [json.loads(Path(p).read_text()) for p in paths]
    origin = [Path(p).name for p, d in zip(paths, parts) for _ in d["rows"]]
    data = {"rows": [r for d in parts for r in d["rows"]],
            "command": " ; ".join(d.get("command", "") for d in parts),
            "n_edits": parts[0]["n_edits"], "seeds": [s for d in parts for s in d["seeds"]],
            "wild_subsets": sorted({s for d in parts for s in d.get("wild_subsets", [])}),
            "created": max(d.get("created", "") for d in parts)}
    if len({d["n_edits"] for d in parts}) > 1:
        raise ValueError(f"load_table: the files {paths} edit different numbers of edits")
    rows, failed, seen, duplicates = [], [], {}, []
    own_base = {(source, r["seed"]): r["ppl"] for r, source in zip(data["rows"], origin)
                if r["method"] == "base" and "ppl" in r}
    for r, source in zip(data["rows"], origin):
        key = (r["method"], r["seed"])
        if key in seen:  # the same cell from two files: the first one counts
            duplicates.append(f"{r['method']} (subset {r['seed']}): {seen[key]} kept, not {source}")
            continue
        seen[key] = source
        if "error" in r:
            failed.append(f"{r['method']} (subset {r['seed']}): {r['error']}")
            continue
        s = r["side_by_side"]
        wild = {k: v for k, v in s.items() if k.startswith("wild_")}
        dec = next((k.split("_")[1] for k in wild), None)
        rows.append({
            "method": label(r["method"]), "seed": r["seed"],
            "TF Rel": _get(s, "teacher_forced", "rel"), "TF Gen": _get(s, "teacher_forced", "gen"),
            "TF Spec": _get(s, "teacher_forced", "loc"),
            "PROB Rel": _get(s, "probability", "rel"), "PROB Gen": _get(s, "probability", "gen"),
            "PROB Loc": _get(s, "probability", "loc"),
            "WILD Rel (none)": _get(s, f"wild_{dec}_none_contains", "rel") if dec else None,
            "WILD Rel (qa)": _get(s, f"wild_{dec}_qa_contains", "rel") if dec else None,
            "WILD EM (qa)": _get(s, f"wild_{dec}_qa_em", "rel") if dec else None,
            "Loc agree (none)": _get(s, f"wild_{dec}_none_em", "loc") if dec else None,
            "KL": r["kl"], "PPL": r["ppl"], "steps": r.get("steps"), "final loss": r.get("final_loss"),
            "seconds": r.get("seconds"), "_base": own_base.get((source, r["seed"]))})
    df = pd.DataFrame(rows)
    base_ppl = df[df["method"] == "base"].set_index("seed")["PPL"]
    base = df["_base"].astype(float).fillna(df["seed"].map(base_ppl))  # the run's own base, else the subset's
    df["ΔPPL %"] = 100 * (df["PPL"] / base - 1)
    df = df.drop(columns="_base")
    df.attrs.update({k: data.get(k) for k in ("command", "n_edits", "seeds", "wild_subsets", "created")})
    df.attrs["failed"] = failed
    df.attrs["duplicates"] = duplicates
    df.attrs["seeds"] = sorted(int(x) for x in df["seed"].unique())  # the subsets that actually ran
    return df


def summary(df: Any, columns: Sequence[str] = ("TF Rel", "PROB Rel", "WILD Rel (none)", "WILD Rel (qa)",
                                                  "Loc agree (none)", "KL", "ΔPPL %")) -> Any:
    """Mean over subsets per method (WILD columns: the subsets that ran WILD), in the order of ``df``.

    Derived in notebook ``06_crispedit_on_a_small_lm``.
    """
    order = list(dict.fromkeys(df["method"]))
    return df.groupby("method")[list(columns)].mean().reindex(order)


#: Columns where lower is better (damage); every other column is a score where higher is better.
LOWER_IS_BETTER = ("KL", "ΔPPL %", "PPL", "seconds", "steps", "final loss")


def method_style(name: str) -> tuple[str, str]:
    """``(colour, marker)`` of a row's method: its registry colour (:func:`~.plotting.method_color`), a disc.

    A variant named after a method (``"CrispEdit, gamma 0.99"``, ``"CrispEdit (n = 8)"``) gets the
    method's colour and a diamond; a name that is neither gets a neutral grey square. The markers of
    :func:`tradeoff_figure`, e.g. the Gemma comparison in notebook ``10_reproduce_qwen2_5_1_5b``.
    """
    from crispedit_lite.teaching.plotting import method_color

    color = method_color(name)
    if color is not None:
        return color, "o"
    for sep in (", ", " ("):
        head = name.split(sep)[0]
        if method_color(head) is not None:
            return method_color(head), "D"
    return "#777777", "s"


def _scaled_axis(ax, which: str, col: str, data: Any, reach: Any) -> None:
    """Scale one axis by its ``data`` and fit it to ``reach`` (the data and the error bars' ends).

    A damage goes on a log axis, or symlog if a value is <= 0 (an error bar reaching below 0 on a log
    axis is cut at the frame); a score (%) on a linear axis holding 0-100.
    """
    import numpy as np

    from crispedit_lite.teaching.plotting import fit_axis, log_ticks

    v = np.asarray(data, dtype=float)
    v = v[np.isfinite(v)]
    set_scale = ax.set_xscale if which == "x" else ax.set_yscale
    if col not in LOWER_IS_BETTER:
        fit_axis(ax, which, np.concatenate([np.asarray(reach, dtype=float), [0.0, 100.0]]), pad=0.04)
        return
    if v.size and (v > 0).all():
        set_scale("log")
    else:  # linear within a tenth of the largest magnitude (a power of ten), logarithmic beyond
        top = float(np.abs(v).max()) if v.size else 1.0
        set_scale("symlog", linthresh=float(10.0 ** np.floor(np.log10(top / 10))) if top > 0 else 1.0,
                  linscale=0.5)
    fit_axis(ax, which, reach)
    log_ticks(ax, which)


def _panel(ax, d, x: str, y: str, methods: Sequence[str], base: Any) -> list[str]:
    """One panel: subset points, mean ± s.d. per method, the front rimmed in black; axes fitted."""
    import numpy as np

    from crispedit_lite.teaching.plotting import method_color

    g = d.groupby("method")[[x, y]]
    mean, sd = g.mean(), g.std().fillna(0)
    shown = [m for m in methods if np.isfinite(mean.loc[m, [x, y]].to_numpy(dtype=float)).all()]
    front = pareto_front({m: (mean.loc[m, y], mean.loc[m, x]) for m in shown},
                         maximize=(y not in LOWER_IS_BETTER, x not in LOWER_IS_BETTER))
    reach = {x: [d[x].to_numpy(dtype=float)], y: [d[y].to_numpy(dtype=float)]}
    for m in shown:
        color, marker = method_style(m)
        pts = d[d["method"] == m]
        ax.scatter(pts[x], pts[y], s=14, alpha=0.35, color=color, zorder=2)
        mx, my, sx, sy = mean.loc[m, x], mean.loc[m, y], sd.loc[m, x], sd.loc[m, y]
        ax.errorbar(mx, my, xerr=sx, yerr=sy, fmt=marker, ms=8, color=color,
                    mec="k" if m in front else color, mew=1.6, capsize=3, zorder=3,
                    label=m + (" (front)" if m in front else ""))
        reach[x].append([mx - sx, mx + sx])
        reach[y].append([my - sy, my + sy])
    b = float(base.get(y, np.nan)) if base is not None else np.nan
    if y not in LOWER_IS_BETTER and np.isfinite(b):
        ax.axhline(b, color=method_color("base"), ls=":", lw=1.2, zorder=1, label="base model")
        reach[y].append([b])
    for which, col in (("x", x), ("y", y)):
        _scaled_axis(ax, which, col, d[col], np.concatenate([np.asarray(v, dtype=float) for v in reach[col]]))
    unit = {"KL": " (nats/token)"}
    for which, col in (("x", x), ("y", y)):
        label = f"{col}{unit.get(col, '' if col.endswith('%') else ' (%)')}, " \
                f"{'lower' if col in LOWER_IS_BETTER else 'higher'} is better"
        (ax.set_xlabel if which == "x" else ax.set_ylabel)(label)
    ax.set_title("Pareto front: " + ", ".join(front), fontsize=9)
    return front


def tradeoff_figure(df: Any, pairs: Sequence[tuple[str, str]], skip: Sequence[str] = ("base",),
                    title: str | None = None, ties: Sequence[str] = ()):
    """One panel per ``(x, y)`` column pair: each method's subsets and mean ± s.d., in its registry colour.

    A damage column (:data:`LOWER_IS_BETTER`) is drawn on a log axis (symlog where a value is zero or
    negative, linear only near zero), a score on 0-100; both axes fit every point and error bar. Each
    panel rims its Pareto front in black and names it in its title; the base model's score, when
    ``df`` has a ``base`` row, is a dotted line. One legend below the panels, the ``title`` above
    them (constrained layout: neither covers data). ``ties`` lists columns to check for a tie: when
    every shown method has the same mean there, the figure says so under the title ("every method:
    TF Rel 100"), since such a column cannot separate the methods.

    Derived in notebook ``06_crispedit_on_a_small_lm``; also in ``10_reproduce_qwen2_5_1_5b``.
    """
    import matplotlib.pyplot as plt
    import numpy as np
    import pandas as pd

    d = df[~df["method"].isin(skip)]
    methods = list(dict.fromkeys(d["method"]))
    base = df[df["method"] == "base"].drop(columns="method").apply(pd.to_numeric, errors="coerce").mean() \
        if (df["method"] == "base").any() else None
    fig, axes = plt.subplots(1, len(pairs), figsize=(4.2 * len(pairs) + 0.6, 4.4), layout="constrained",
                             squeeze=False)
    for ax, (x, y) in zip(axes[0], pairs):
        _panel(ax, d, x, y, methods, base)
    from matplotlib.lines import Line2D

    from crispedit_lite.teaching.plotting import legend_below, method_color

    handles = [Line2D([], [], ls="", marker=method_style(m)[1], ms=8, color=method_style(m)[0])
               for m in methods]
    labels = list(methods)
    handles.append(Line2D([], [], ls="", marker="o", ms=8, mfc="white", mec="k", mew=1.6))
    labels.append("Pareto front (black rim)")
    if any(line.get_label() == "base model" for ax in axes[0] for line in ax.get_lines()):
        handles.append(Line2D([], [], ls=":", lw=1.2, color=method_color("base")))
        labels.append("base model (before the edit)")
    legend_below(fig, handles, labels, ncol=len(labels) if len(labels) <= 7 else -(-len(labels) // 2))
    tied = []
    for col in ties:
        means = d.groupby("method")[col].mean().dropna().to_numpy(dtype=float)
        if means.size > 1 and np.allclose(means, means[0]):
            tied.append(f"{col} {means[0]:.0f}")
    lines = [title] if title else []
    if tied:
        lines.append("every method: " + ", ".join(tied) + " (not shown: it cannot separate them)")
    if lines:
        fig.suptitle("\n".join(lines), fontsize=10)
    return fig


def pareto_figure(df: Any, rel: str = "TF Rel", damages: Sequence[str] = ("KL", "ΔPPL %"),
                  skip: Sequence[str] = ("base",), title: str | None = None):
    """Reliability against each damage measure: subset points, mean ± s.d. bars, the front outlined.

    :func:`tradeoff_figure` with the pairs ``(damage, rel)``: KL on a log axis, ΔPPL on a symlog axis
    (a run can lower the perplexity), the legend below the panels and ``title`` above them.

    Derived in notebook ``06_crispedit_on_a_small_lm``.
    """
    return tradeoff_figure(df, [(dmg, rel) for dmg in damages], skip=skip, title=title)
