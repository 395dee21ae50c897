r"""Markdown tables that book pages include, rendered from committed benchmark JSON.

A book page that is not a notebook cannot compute its numbers, so it includes a Markdown file that a
benchmark script writes from its JSON (MyST ``{include}``); ``tests/book`` checks that the included file
is what this module renders from the committed JSON, so the page and the record cannot drift apart.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

__all__ = ["ultraedit_eta_tables", "fmt_sci"]


def fmt_sci(x: float, digits: int = 2) -> str:
    r"""A number for a Markdown table: plain from 0.1 to 10^4, else :math:`m\times10^{e}` in LaTeX."""
    if x == 0 or not math.isfinite(x):
        return f"{x:g}"
    if 0.1 <= abs(x) < 1e4:
        return f"{x:.{digits}g}" if abs(x) < 100 else f"{x:.0f}"
    exponent = math.floor(math.log10(abs(x)))
    mantissa = x / 10**exponent
    return f"${mantissa:.1f}\\times10^{{{exponent}}}$"


def _eta(x: float) -> str:
    exponent = round(math.log10(x))
    return f"$10^{{{exponent}}}$" if math.isclose(x, 10.0**exponent) else f"${x:g}$"


def ultraedit_eta_tables(record: Mapping[str, Any], official_eta: float = 1e-6) -> str:
    r"""The :math:`\eta` tables of ``book/ultraedit.md`` from ``benchmarks/ultraedit_eta_sweep.py``'s JSON.

    One table per number of edits: teacher-forced reliability, generalisation and specificity after
    the edit (%), the KL to the base model on held-out text (nats per token) and the perplexity, with
    a line giving the scores before the edit and the command that produced the JSON.
    """
    rows = list(record["rows"])
    out = [f"Produced by `{record['command']}` ({record['created']}); "
           f"model {record['model']}, edit set {record['edit_set']}.", ""]
    for n in sorted({r["n_edits"] for r in rows}):
        group = sorted((r for r in rows if r["n_edits"] == n), key=lambda r: r["eta"])
        first = group[0]
        b = first["before"]
        turns = "one turn" if first["chunks"] == 1 else f"{first['chunks']} turns"
        out += [f"**{n} edits** ({turns}, {first['key_rows']} target positions per layer, "
                f"{first['layers']} layers). Before the edit: reliability {b['rel']:.1f} %, "
                f"generalisation {b['gen']:.1f} %, specificity {b['spec']:.1f} %, "
                f"perplexity {first['ppl_before']:.2f}.", "",
                "| $\\eta$ | TF reliability (%) | TF generalisation (%) | TF specificity (%) "
                "| KL to base (nats) | perplexity |",
                "|---|---|---|---|---|---|"]
        for r in group:
            a = r["after"]
            label = _eta(r["eta"]) + (" (official)" if math.isclose(r["eta"], official_eta) else "")
            out.append(f"| {label} | {a['rel']:.1f} | {a['gen']:.1f} | {a['spec']:.1f} "
                       f"| {fmt_sci(r['kl'])} | {fmt_sci(r['ppl'], 4)} |")
        out.append("")
    return "\n".join(out)
