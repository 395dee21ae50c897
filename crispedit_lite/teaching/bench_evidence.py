r"""Benchmark files as tables: sweeps, UltraEdit's step sizes, step costs, GPU timings, long streams.

Each function takes the parsed JSON of one kind (:mod:`crispedit_lite.reproduction.inventory`) and
returns a small :class:`pandas.DataFrame` with the quantities that a claim of the paper speaks to:

* :func:`sweep_frames`: ``benchmarks/ch06_sweeps.py``, the :math:`\gamma` sweep and the :math:`n`
  sweep (:math:`n=0` is FT) with reliability, KL and perplexity change;
* :func:`eta_summary`: ``benchmarks/ultraedit_eta_sweep.py``, reliability before and after per step size;
* :func:`step_ratio_summary`: ``benchmarks/step_ratio.py``, one CrispEdit step over one FT step, for the
  fastest projection form and for the paper's dense form;
* :func:`scale_summary`: ``benchmarks/scale.py`` on a GPU at the paper's shapes (random weights, so
  timings only): K-FAC against a plain forward-backward, the eigendecompositions, the step ratio and
  the extrapolated training time of 3,000 edits;
* :func:`long_horizon_summary`: ``benchmarks/long_horizon.py``, each editor at the largest number of
  edits that every editor reached.

Derived in notebook ``11_results``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

__all__ = [
    "VARIANT_FORMS",
    "eta_summary",
    "long_horizon_summary",
    "scale_summary",
    "step_ratio_summary",
    "sweep_frames",
]

#: Step forms that are variants of CrispEdit's optimiser (Adam in the rotated eigenbasis), not its update:
#: left out of "the fastest form" (book page ``performance`` lists them apart).
VARIANT_FORMS = ("eigenbasis", "reparam")


def sweep_frames(record: Mapping[str, Any]) -> dict[str, pd.DataFrame]:
    r"""``{"gamma": ..., "n": ...}``: the two sweeps of a ``ch06_sweeps`` record, ordered by the setting.

    Columns ``gamma`` (or ``n``), ``method``, ``TF Rel``, ``TF Gen``, ``TF Spec``, ``KL``, ``ΔPPL %``,
    ``editable %``, ``steps``. ``attrs`` holds ``model``, ``n_edits``, ``command``.
    Derived in notebook ``11_results``.
    """
    df = pd.DataFrame(record["rows"])
    out = {}
    for sweep in ("gamma", "n"):
        d = df[df["sweep"] == sweep].rename(columns={"value": sweep}).sort_values(sweep)
        keep = [sweep, "method", "TF Rel", "TF Gen", "TF Spec", "KL", "ΔPPL %", "editable %", "steps"]
        d = d[[c for c in keep if c in d]].reset_index(drop=True)
        d.attrs.update({k: record.get(k) for k in ("model", "n_edits", "command")})
        out[sweep] = d
    return out


def eta_summary(record: Mapping[str, Any]) -> pd.DataFrame:
    """One row per (edits, step size) of an UltraEdit step-size sweep: TF Rel before and after, KL.

    Derived in notebook ``11_results``.
    """
    rows = [
        {
            "n_edits": r["n_edits"],
            "eta": r["eta"],
            "TF Rel before": r["before"]["rel"],
            "TF Rel": r["after"]["rel"],
            "TF Spec": r["after"]["spec"],
            "KL": r["kl"],
        }
        for r in record["rows"]
    ]
    return pd.DataFrame(rows).sort_values(["n_edits", "eta"], ignore_index=True)


def step_ratio_summary(records: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """One row per ``step_ratio`` file: the fastest CrispEdit form and the paper's dense form, over FT.

    Columns ``file``, ``device``, ``model``, ``FT step (s)``, ``best form`` and ``best / FT`` (the fastest
    exact form of CrispEdit's projected step; :data:`VARIANT_FORMS` left out), ``dense / FT`` (form
    ``reference``: the paper's four products), ``created``.
    Derived in notebook ``11_results``.
    """
    rows = []
    for name, r in records.items():
        forms = {x["form"]: x for x in r["rows"]}
        crisp = {f: x["crispedit_over_ft"] for f, x in forms.items() if f not in ("ft", *VARIANT_FORMS)}
        best = min(crisp, key=crisp.get)
        rows.append(
            {
                "file": name,
                "device": r.get("device"),
                "model": r.get("model"),
                "FT step (s)": forms["ft"]["median_s"],
                "best form": best,
                "best / FT": crisp[best],
                "dense / FT": crisp.get("reference", float("nan")),
                "created": r.get("created"),
            }
        )
    return pd.DataFrame(rows)


def scale_summary(records: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """One row per (``scale`` file, preset): K-FAC, eigendecompositions, the step and 3,000 edits.

    Columns ``file``, ``device``, ``preset``, ``K-FAC / fwd-bwd`` (per token), ``K-FAC, paper's set (s)``
    (10,000 texts of 512 tokens, extrapolated), ``eigh, all layers (s)``; one step over plain FT:
    ``best / FT`` and ``best variant`` (the fastest exact CrispEdit step, ``crispedit_*``; the
    eigenbasis variants of the optimiser left out), ``official / FT`` (the official code's bf16 dense
    form); and the extrapolated training of 3,000 edits with the eigendecompositions: ``FT 3k (s)``,
    ``CrispEdit 3k (s)`` (the fastest), ``official 3k (s)``. Derived in notebook ``11_results``.
    """
    rows = []
    for name, r in records.items():
        for preset, p in (r.get("presets") or {}).items():
            step, sched = p["step"], p["schedule"]["variants"]
            official = next((k for k in step["variants"] if "official" in k), None)
            exact = {
                k: v["ratio_to_plain_ft"] for k, v in step["variants"].items() if k.startswith("crispedit")
            }
            best = min(exact, key=exact.get)
            rows.append(
                {
                    "file": name,
                    "device": (r.get("hardware") or {}).get("gpu"),
                    "preset": preset,
                    "K-FAC / fwd-bwd": p["kfac"]["kfac_over_fwdbwd"],
                    "K-FAC, paper's set (s)": p["kfac"].get(
                        "paper_capability_set_s_extrapolated", float("nan")
                    ),
                    "eigh, all layers (s)": p["eigh"]["all_layers_eigh_s"],
                    "best / FT": exact[best],
                    "best variant": best,
                    "official / FT": step["variants"][official]["ratio_to_plain_ft"]
                    if official
                    else float("nan"),
                    "FT 3k (s)": sched["plain_ft"]["with_eigh_s"],
                    "CrispEdit 3k (s)": sched[best]["with_eigh_s"],
                    "official 3k (s)": sched[official]["with_eigh_s"] if official else float("nan"),
                }
            )
    return pd.DataFrame(rows)


def long_horizon_summary(records: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """Each editor of the ``long_horizon`` files at the largest number of edits that all of them reached.

    Columns ``editor``, ``label``, ``edits``, ``TF Rel`` (the latest chunk), ``TF Rel (earlier)``
    (edits of earlier chunks, retained), ``KL``, ``ΔPPL %`` (against the unedited model), ``done``
    (the editor finished its stream), ``file``. Derived in notebook ``11_results``.
    """
    per = {}
    for name, r in records.items():
        base_ppl = r["base"]["ppl"]
        per[r["editor"]] = [
            {
                "editor": r["editor"],
                "label": r.get("label", r["editor"]),
                "edits": x["edits_applied"],
                "TF Rel": x["current"]["tf_rel"],
                "TF Rel (earlier)": (x.get("retained") or {}).get("tf_rel"),
                "KL": x["kl"],
                "ΔPPL %": 100 * (x["ppl"] / base_ppl - 1),
                "done": bool(r.get("done")),
                "file": name,
            }
            for x in r["rows"]
        ]
    if not per or not all(per.values()):
        return pd.DataFrame(
            columns=["editor", "label", "edits", "TF Rel", "TF Rel (earlier)", "KL", "ΔPPL %", "done", "file"]
        )
    common = min(max(x["edits"] for x in rows) for rows in per.values())
    out = [max((x for x in rows if x["edits"] <= common), key=lambda x: x["edits"]) for rows in per.values()]
    return pd.DataFrame(out).astype({"TF Rel (earlier)": float})
