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

__all__ = ["LABELS", "VARIANT_LABELS", "label", "load_table", "pareto_figure",  # noqa: F822
           "pareto_front", "summary"]

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
    (agreement with the pre-edit answer), ``KL``, ``ΔPPL %`` (against the same subset's base model),
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
            "seconds": r.get("seconds")})
    df = pd.DataFrame(rows)
    base_ppl = df[df["method"] == "base"].set_index("seed")["PPL"]
    df["ΔPPL %"] = 100 * (df["PPL"] / df["seed"].map(base_ppl) - 1)
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


def pareto_figure(df: Any, rel: str = "TF Rel", damages: Sequence[str] = ("KL", "ΔPPL %"),
                  skip: Sequence[str] = ("base",)):
    """Reliability against each damage measure: subset points, mean ± s.d. bars, the front outlined.

    Derived in notebook ``06_crispedit_on_a_small_lm``.
    """
    import matplotlib.pyplot as plt

    from crispedit_lite.teaching.plotting import PALETTE, method_color

    d = df[~df["method"].isin(skip)]
    methods = list(dict.fromkeys(d["method"]))
    colors = {m: method_color(m, PALETTE[k % len(PALETTE)]) for k, m in enumerate(methods)}
    fig, axes = plt.subplots(1, len(damages), figsize=(5.2 * len(damages), 4.2))
    axes = [axes] if len(damages) == 1 else list(axes)
    for ax, dmg in zip(axes, damages):
        g = d.groupby("method")[[rel, dmg]]
        mean, sd = g.mean(), g.std().fillna(0)
        front = pareto_front({m: (mean.loc[m, rel], mean.loc[m, dmg]) for m in methods})
        for m in methods:
            pts = d[d["method"] == m]
            ax.scatter(pts[dmg], pts[rel], s=14, alpha=0.35, color=colors[m])
            ax.errorbar(mean.loc[m, dmg], mean.loc[m, rel], xerr=sd.loc[m, dmg], yerr=sd.loc[m, rel],
                        fmt="o", ms=8, color=colors[m], mec="k" if m in front else colors[m],
                        mew=1.5, capsize=3, label=m + (" (front)" if m in front else ""))
        ax.set(xlabel=f"{dmg} (lower is better)", ylabel=f"{rel} (%)", ylim=(-3, 103))
        if dmg == "KL":
            ax.set_xscale("symlog", linthresh=1e-4)
    axes[0].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig
