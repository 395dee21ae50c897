r"""Editor comparisons of this project, from every Table-1 file and every run, one group per model.

``benchmarks/cpu_table1.py`` writes one JSON per process, and the comparison of one model is spread
over several (chapter 6's nine editors over six files, chapter 10's Gemma runs over three). An
:class:`EditorGroup` joins the files of one ``(model, n_edits)``: one row per (editor, setting, subset)
with teacher-forced reliability and specificity, the probability test, the KL to the base model on
held-out text (nats per token) and the perplexity change against the same subset's unedited model.

* **Settings.** A row whose learning rate, :math:`\gamma`, capability-set size, epochs or batch size
  differ from the group's usual value (the most common one among its rows) is a *setting* of its
  editor, labelled ``"CrispEdit (gamma 0.99)"``; the others are the comparison proper.
* **Repeats.** When two files hold the same (editor, setting, subset), the newer file's row counts
  (its ``created``), so a rerun replaces the rows it repeats.
* **Runs of the command line** (``python -m crispedit_lite edit`` / ``reproduce``, one results JSON
  each) form groups of their own by ``(model, dataset, n_edits)``; the newest run of a method counts.

Derived in notebook ``11_results``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

__all__ = ["COLUMNS", "SETTING_KEYS", "EditorGroup", "run_groups", "table1_groups"]

#: The measures of a group's rows (percentages, KL in nats per token, ΔPPL in %).
COLUMNS = ("TF Rel", "TF Gen", "TF Spec", "PROB Rel", "PROB Loc", "KL", "ΔPPL %")
#: Settings whose difference from the group's usual value makes a row a setting of its editor.
SETTING_KEYS = {"gamma": "gamma", "lr": "lr", "n_capability": "n", "epochs": "epochs", "batch_size": "batch"}


@dataclass
class EditorGroup:
    """One model's comparison: ``rows`` per (editor, setting, subset), their ``means``, provenance.

    ``rows`` columns: ``editor`` (registry name, or the benchmark's own row name such as
    ``crispedit+nbhd``), ``label`` (display name, with the setting), ``setting`` (``{key: value}``
    where it differs from the group's usual value), ``seed``, :data:`COLUMNS`, ``file``, ``created``
    and ``details`` (the run's recorded details).

    Listed on the book page ``api``.
    """

    model: str
    n_edits: int
    source: str
    rows: pd.DataFrame
    files: list[str] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    file_notes: list[str] = field(default_factory=list)

    @property
    def title(self) -> str:
        """``"<model>, <n> edits x <k> subsets"`` (or ``"..., <dataset>"`` for runs)."""
        seeds = sorted(set(self.rows["seed"]))
        return f"{self.model}, {self.n_edits} edits x {len(seeds)} subset{'s' * (len(seeds) != 1)}"

    @property
    def means(self) -> pd.DataFrame:
        """Mean over subsets per label in the order of ``rows``, with ``editor``, ``setting``, ``subsets``."""
        r = self.rows
        order = list(dict.fromkeys(r["label"]))
        g = r.groupby("label", sort=False)
        out = g[list(COLUMNS)].mean().reindex(order)
        out.insert(0, "subsets", g["seed"].nunique().reindex(order))
        out.insert(0, "setting", g["setting"].first().reindex(order))
        out.insert(0, "editor", g["editor"].first().reindex(order))
        return out

    def plain(self) -> pd.DataFrame:
        """:attr:`means` of the registered editors at the group's usual settings (the comparison proper)."""
        from crispedit_lite.editing.registry import registry

        m = self.means
        return m[m["editor"].isin(list(registry())) & (m["setting"].map(len) == 0)]

    def notes(self) -> list[str]:
        """What a reader must know: each file's recorded ``note``, and LoRA rows without the regulariser."""
        out = list(self.file_notes)
        lora = self.rows[self.rows["editor"].isin(["lora", "lora_seq"])]
        old = lora[lora["details"].map(lambda d: "orth_reg" not in (d or {}))]
        if len(old):
            files = ", ".join(sorted(set(old["file"])))
            out.append(
                f"LoRA rows from {files} record no value of AdaLoRA's orthogonal regulariser "
                "(details['orth_reg']): they were trained on the cross-entropy alone, where the "
                "paper's LoRA adds the regulariser. A rerun that records it replaces them."
            )
        return out


def _label(editor: str, setting: Mapping[str, Any]) -> str:
    from crispedit_lite.teaching.cpu_table import label

    if not setting:
        return label(editor)
    return f"{label(editor)} ({', '.join(f'{SETTING_KEYS[k]} {v:g}' for k, v in setting.items())})"


def _score(s: Mapping[str, Any], family: str, key: str) -> float:
    v = (s.get(family) or {}).get(key)
    return float("nan") if v is None else float(v)


def _usual(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    counts: dict[str, Counter] = {k: Counter() for k in SETTING_KEYS}
    for r in rows:
        for k in SETTING_KEYS:
            if k in (r.get("config") or {}):
                counts[k][r["config"][k]] += 1
    return {k: c.most_common(1)[0][0] for k, c in counts.items() if c}


def _table1_rows(name: str, record: Mapping[str, Any], usual: Mapping[str, Any]) -> list[dict[str, Any]]:
    base_ppl = {r["seed"]: r["ppl"] for r in record["rows"] if r["method"] == "base" and "ppl" in r}
    out = []
    for r in record["rows"]:
        if "error" in r:
            continue
        cfg = r.get("config") or {}
        setting = {k: cfg[k] for k in SETTING_KEYS if k in cfg and k in usual and cfg[k] != usual[k]}
        s = r["side_by_side"]
        ppl0 = base_ppl.get(r["seed"])
        out.append(
            {
                "editor": r["method"],
                "label": _label(r["method"], setting),
                "setting": setting,
                "seed": r["seed"],
                "TF Rel": _score(s, "teacher_forced", "rel"),
                "TF Gen": _score(s, "teacher_forced", "gen"),
                "TF Spec": _score(s, "teacher_forced", "loc"),
                "PROB Rel": _score(s, "probability", "rel"),
                "PROB Loc": _score(s, "probability", "loc"),
                "KL": float(r["kl"]),
                "ΔPPL %": 100 * (r["ppl"] / ppl0 - 1) if ppl0 else float("nan"),
                "file": name,
                "created": str(record.get("created", "")),
                "details": r.get("details") or {},
            }
        )
    return out


def _newest(rows: list[dict[str, Any]], key: Sequence[str]) -> pd.DataFrame:
    """The newest row per ``key``; then base first, the editors in registry order, settings after each."""
    from crispedit_lite.editing.registry import registry

    df = pd.DataFrame(rows)
    df["_key"] = df[list(key)].astype(str).agg("|".join, axis=1)
    keep = df.sort_values("created", kind="stable").groupby("_key", sort=False).tail(1).index
    df = df.loc[sorted(keep)]
    names = ["base", *registry()]
    rank = df["editor"].map(lambda e: names.index(e) if e in names else len(names))
    df = df.assign(_rank=rank, _set=df["setting"].map(len)).sort_values(
        ["_rank", "_set", "label", "seed"], kind="stable"
    )
    return df.drop(columns=["_key", "_rank", "_set"]).reset_index(drop=True)


def table1_groups(records: Mapping[str, Mapping[str, Any]]) -> list[EditorGroup]:
    """One :class:`EditorGroup` per ``(model, n_edits)`` of the ``benchmarks/cpu_table1.py`` files given.

    ``records`` maps file names to parsed JSON (files of other kinds are ignored). The group with the
    most editors comes first; rows run base first, then the editors in registry order.
    Derived in notebook ``11_results``.
    """
    from crispedit_lite.reproduction.inventory import result_kind

    by_key: dict[tuple[str, int], list[str]] = {}
    for name, rec in records.items():
        if result_kind(rec, name) == "table1":
            by_key.setdefault((str(rec.get("model", "?")), int(rec["n_edits"])), []).append(name)
    groups = []
    for (model, n_edits), names in by_key.items():
        usual = _usual([r for n in names for r in records[n]["rows"] if r["method"] != "base"])
        rows = [row for n in names for row in _table1_rows(n, records[n], usual)]
        df = _newest(rows, ["label", "seed"])
        groups.append(
            EditorGroup(
                model=model,
                n_edits=n_edits,
                source="committed",
                rows=df,
                files=names,
                commands=[str(records[n].get("command", "")) for n in names],
                file_notes=[f"{n}: {records[n]['note']}" for n in names if records[n].get("note")],
            )
        )
    return sorted(groups, key=lambda g: -g.rows["editor"].nunique())


def _run_row(run: Mapping[str, Any]) -> dict[str, Any]:
    from crispedit_lite.reproduction.paper_tables import run_metric

    s = run["settings"]
    after = (run["metrics"].get("after") or {}).get("proxies") or {}
    before = (run["metrics"].get("before") or {}).get("proxies") or {}
    ppl, ppl0 = after.get("perplexity"), before.get("perplexity")

    def metric(name: str) -> float:
        v = run_metric(run, name)
        return float("nan") if v is None else v

    return {
        "editor": s["method"],
        "label": _label(s["method"], {}),
        "setting": {},
        "seed": s["seed"],
        "TF Rel": metric("TF Rel"),
        "TF Gen": metric("TF Gen"),
        "TF Spec": metric("TF Spec"),
        "PROB Rel": float("nan"),
        "PROB Loc": float("nan"),
        "KL": float(after["kl_to_base"]) if "kl_to_base" in after else float("nan"),
        "ΔPPL %": 100 * (ppl / ppl0 - 1) if ppl and ppl0 else float("nan"),
        "file": str(run.get("_path", run.get("run_id", ""))),
        "created": str(run.get("created", "")),
        "details": {},
    }


def run_groups(runs: Sequence[Mapping[str, Any]], min_editors: int = 2) -> list[EditorGroup]:
    """Groups of command-line runs (results JSON) by ``(model, dataset, n_edits)``, newest run per method.

    ``source`` is ``"runs: <dataset>"``; a group of fewer than ``min_editors`` methods compares
    nothing and is left out. Derived in notebook ``11_results``.
    """
    by_key: dict[tuple[str, str, int], list[Mapping[str, Any]]] = {}
    for run in runs:
        s = run["settings"]
        by_key.setdefault((s["model"], s["dataset"], int(s["n_edits"])), []).append(run)
    groups = []
    for (model, dataset, n_edits), rs in by_key.items():
        df = _newest([_run_row(r) for r in rs], ["label"])
        if df["editor"].nunique() < min_editors:
            continue
        groups.append(
            EditorGroup(
                model=model,
                n_edits=n_edits,
                source=f"runs: {dataset}",
                rows=df,
                files=list(df["file"]),
                commands=[str(r.get("command", "")) for r in rs],
            )
        )
    return groups
