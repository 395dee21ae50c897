r"""The paper's numbers (CrispEdit, arXiv 2602.15823 v2, Tables 1, 3-8) and this project's runs beside them.

The tables are transcribed once, into ``resources/paper_tables.json``: one row per paper table row,
``{table, dataset, method, label, setting, metrics: {column: value}, origin: "paper"}``, with per-table
metadata (source, caption, model, edited layers, ``n_edits``, columns, CrispEdit's :math:`(n, \gamma)`)
and the notes that change how a cell should be read (e.g. Table 7's caption, MEND's collapse).

:func:`load_paper_tables` gives them as a long frame, :func:`paper_value` reads one cell, and
:func:`compare` joins results JSONs (:mod:`crispedit_lite.reproduction.results`) to the paper's cells and
says, per
cell, whether the run was at paper scale (same model, ``n_edits``, :math:`\gamma`, ``n_capability``,
Wikipedia capability text) and, if not, why.

Derived in notebook ``11_results``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from importlib import resources
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pandas comes with the ``llm`` extra (via datasets); imported lazily
    import pandas as pd

__all__ = ["DATASETS", "METRIC_KEYS", "paper_tables_data", "table_info", "load_paper_tables",
           "paper_value", "run_metric", "scale_issues", "compare"]

#: Dataset aliases (file stems, paper abbreviations) -> this project's dataset names.
DATASETS: dict[str, str] = {
    "zsre": "zsre", "zsre_mend_eval_3k": "zsre", "zsre_mend_3k": "zsre", "zsre_mend_10k": "zsre",
    "zsre10k": "zsre", "counterfact": "counterfact", "cf": "counterfact",
    "counterfact_edit_3k": "counterfact", "wikibigedit": "wikibigedit", "wiki": "wikibigedit",
    "wiki_big_edit_3k": "wikibigedit",
}

#: Paper column -> candidate keys of a run's flattened metrics (nested keys joined by ``_``,
#: lower-cased, non-alphanumerics as ``_``; e.g. ``metrics["after"]["wild"]["scores"]["qa"]["rel"]``
#: is ``wild_scores_qa_rel``, as :func:`crispedit_lite.evaluation.runner.evaluate_run` writes it);
#: the first present key wins.
METRIC_KEYS: dict[str, tuple[str, ...]] = {
    "QA Rel": ("wild_scores_qa_rel", "wild_qa_rel", "qa_rel"),
    "QA Gen": ("wild_scores_qa_gen", "wild_qa_gen", "qa_gen"),
    "NoCtx Rel": ("wild_scores_none_rel", "wild_none_rel", "none_rel", "noctx_rel"),
    "NoCtx Gen": ("wild_scores_none_gen", "wild_none_gen", "none_gen", "noctx_gen"),
    "TF Rel": ("teacher_forced_scores_rel", "teacher_forced_rel", "tf_rel"),
    "TF Gen": ("teacher_forced_scores_gen", "teacher_forced_gen", "tf_gen"),
    "TF Spec": ("teacher_forced_scores_spec", "teacher_forced_spec", "tf_spec"),
}
_HARNESS = {"MMLU": "mmlu", "IFEval": "ifeval", "TruthfulQA": "truthfulqa_mc2", "ARC-C": "arc_challenge",
            "GSM8K": "gsm8k_cot"}
for _col, _task in _HARNESS.items():
    METRIC_KEYS[_col] = tuple(f"{p}{_task}{s}" for p in ("lm_eval_", "harness_", "capability_", "")
                              for s in ("_score", ""))


@lru_cache(maxsize=1)
def _raw() -> str:
    return resources.files("crispedit_lite").joinpath("resources/paper_tables.json").read_text("utf-8")


def paper_tables_data() -> dict[str, Any]:
    """The transcription as stored: ``{source, columns, tables, notes, rows, ...}`` (a fresh copy).

    Listed on the book page ``api``.
    """
    return json.loads(_raw())


def _table_id(table: str | int) -> str:
    m = re.fullmatch(r"(?:table)?\s*(\d+)", str(table).strip().lower())
    if not m:
        raise ValueError(f"table must look like 1, '1', 'Table 1' or 'table1', got {table!r}")
    return f"table{m.group(1)}"


def _dataset_id(name: str) -> str | None:
    stem = re.sub(r"\.jsonl?$", "", str(name).replace("\\", "/").rsplit("/", 1)[-1].lower())
    return DATASETS.get(re.sub(r"[^a-z0-9]+", "_", stem).strip("_"))


def table_info(table: str | int) -> dict[str, Any]:
    """Metadata of one table (source, caption, model, layers, n_edits, columns, settings, notes' text).

    Derived in notebook ``11_results``.
    """
    data = paper_tables_data()
    tid = _table_id(table)
    if tid not in data["tables"]:
        raise ValueError(f"no {tid} in the transcription; tables: {sorted(data['tables'])}")
    info = dict(data["tables"][tid])
    info["notes"] = {k: data["notes"][k] for k in info.get("notes", [])}
    return info


def _setting_text(setting: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={setting[k]}" for k in sorted(setting))


def load_paper_tables() -> pd.DataFrame:
    """All paper cells as a long frame.

    Columns: ``table, dataset, method, label, setting`` (text such as ``"gamma=0.7, n_capability=10000"``),
    ``gamma``, ``n_capability`` (NaN where the row states none), ``metric``, ``value``, ``origin``
    (always ``"paper"``). One row per cell, in the paper's order.

    Derived in notebook ``11_results``.
    """
    import pandas as pd

    out = []
    for row in paper_tables_data()["rows"]:
        s = row["setting"]
        for metric, value in row["metrics"].items():
            out.append({"table": row["table"], "dataset": row["dataset"], "method": row["method"],
                        "label": row["label"], "setting": _setting_text(s),
                        "gamma": float(s.get("gamma", math.nan)),
                        "n_capability": float(s.get("n_capability", math.nan)),
                        "metric": metric, "value": float(value), "origin": row["origin"]})
    return pd.DataFrame(out)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-9)
    return a == b


def paper_value(table: str | int, dataset: str, method: str, metric: str, **setting: Any) -> float:
    """One paper cell, e.g. ``paper_value(8, "counterfact", "crispedit", "QA Rel", gamma=0.95)`` -> 72.0.

    ``setting`` narrows rows that differ only in a setting (``gamma``, ``n_capability``,
    ``chunk_size``, ``prompt_masking``). No match, or several, is a ``ValueError`` that lists the choices.

    Listed on the book page ``api``.
    """
    tid, ds = _table_id(table), _dataset_id(dataset) or dataset
    rows = [r for r in paper_tables_data()["rows"]
            if r["table"] == tid and r["dataset"] == ds and r["method"] == method]
    if not rows:
        raise ValueError(f"no paper row for {tid}, dataset {ds!r}, method {method!r}")
    rows = [r for r in rows
            if all(k in r["setting"] and _same(r["setting"][k], v) for k, v in setting.items())]
    if len(rows) != 1:
        choices = [_setting_text(r["setting"]) for r in paper_tables_data()["rows"]
                   if r["table"] == tid and r["dataset"] == ds and r["method"] == method]
        what = "no" if not rows else "several"
        raise ValueError(f"{what} {tid} {ds} {method} rows match {setting}; settings: {choices}")
    if metric not in rows[0]["metrics"]:
        raise ValueError(f"{tid} has no column {metric!r}; columns: {sorted(rows[0]['metrics'])}")
    return float(rows[0]["metrics"][metric])


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in d.items():
        key = re.sub(r"[^a-z0-9]+", "_", f"{prefix}_{k}".lower()).strip("_")
        if isinstance(v, Mapping):
            out.update(_flatten(v, key))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[key] = float(v)
    return out


def run_metric(result: Mapping[str, Any], metric: str, *, phase: str = "after",
               metric_keys: Mapping[str, Iterable[str]] | None = None) -> float | None:
    """A run's value for a paper column (``None`` if it did not measure it).

    Reads ``result["metrics"][phase]`` through :data:`METRIC_KEYS` (or ``metric_keys``). ``"time"`` is
    the editing wall-clock without the capability K-FAC collection (``total_s - kfac_s``), since the
    paper's caches are precomputed.

    Listed on the book page ``api``.
    """
    if metric == "time":
        t = result.get("timings", {})
        if phase != "after" or "total_s" not in t:
            return None
        return float(t["total_s"]) - float(t.get("kfac_s", 0.0))
    flat = _flatten(result.get("metrics", {}).get(phase, {}) or {})
    keys = (metric_keys or {}).get(metric) or METRIC_KEYS.get(metric, ())
    for key in keys:
        key = re.sub(r"[^a-z0-9]+", "_", key.lower()).strip("_")
        if key in flat:
            return flat[key]
    return None


def _config(result: Mapping[str, Any]) -> dict[str, Any]:
    return dict(result.get("settings", {}).get("config") or {})


def scale_issues(result: Mapping[str, Any], table: str | int, setting: Mapping[str, Any] | None = None,
                 method: str | None = None) -> list[str]:
    """Why ``result`` is not at the paper's scale for a cell of ``table`` (empty list: it is).

    Checks the model, ``n_edits``, edited layers, and for methods that read capability text the
    setting's ``gamma``, ``n_capability`` and ``chunk_size`` and a Wikipedia capability corpus; also a
    random-initialised model or a WILD run scored without the LLM judge, when the run records it.

    Listed on the book page ``api``.
    """
    info, s = table_info(table), result.get("settings", {})
    cfg, setting = _config(result), dict(setting or {})
    method = method or s.get("method")
    issues = []
    model = str(s.get("model", ""))
    if model.rstrip("/").rsplit("/", 1)[-1].lower() != info["model"].rsplit("/", 1)[-1].lower():
        issues.append(f"model {model} (paper: {info['model']})")
    if model.startswith("random:") or any("random-init" in n for n in result.get("notes", [])):
        issues.append("random-init weights")
    if s.get("n_edits") != info["n_edits"]:
        issues.append(f"n_edits {s.get('n_edits')} (paper: {info['n_edits']})")
    if cfg.get("layers") is not None and list(cfg["layers"]) != list(info["layers"]):
        issues.append(f"layers {cfg['layers']} (paper: {info['layers']})")
    from crispedit_lite.editing.registry import needs_capability, registry

    if method in registry() and needs_capability(method):
        for key in ("gamma", "n_capability", "chunk_size"):
            if key in setting and key in cfg and not _same(cfg[key], setting[key]):
                issues.append(f"{key} {cfg[key]} (paper: {setting[key]})")
        if cfg.get("capability_source", "wikipedia") != "wikipedia":
            issues.append(f"capability text {cfg['capability_source']} (paper: Wikipedia)")
    wild = ((result.get("metrics") or {}).get("after") or {}).get("wild") or {}
    scorer = wild.get("settings", {}).get("scorer") if isinstance(wild, Mapping) else None
    if info["evaluation"] == "wild" and (s.get("judge") is False or
                                         (scorer is not None and "judge" not in str(scorer))):
        issues.append(f"WILD scored by {scorer or 'exact match'} (paper: LLM judge gpt-4o-mini)")
    return issues


def _row_methods(method: str) -> tuple[str, ...]:
    """The registered methods whose runs fill the paper rows of ``method``.

    The method itself and, for a row whose official run went in chunks (the editor's ``paper_run``
    has a ``chunk_size``: MEMIT, AlphaEdit), its sequential form, which that row's reproduce cells run
    (``memit_chunked``, ``alphaedit_seq``).
    """
    from crispedit_lite.editing.registry import get_editor, registry, sequential_form

    if method not in registry():
        return (method,)
    editor = get_editor(method)
    if "chunk_size" in editor.paper_run and not editor.sequential and editor.sequential_form:
        return (method, sequential_form(method))
    return (method,)


def _matches(result: Mapping[str, Any], row: Mapping[str, Any], varies: Iterable[str]) -> bool:
    s = result.get("settings", {})
    if _dataset_id(str(s.get("dataset", ""))) != row["dataset"]:
        return False
    if row["method"] != "base" and s.get("method") not in _row_methods(row["method"]):
        return False
    cfg = _config(result)
    defaults = {"prompt_masking": False}
    return all(_same(cfg.get(k, defaults.get(k)), row["setting"][k]) for k in varies if k in row["setting"])


def compare(paper_rows: pd.DataFrame | None, run_results: Iterable[Mapping[str, Any]], *,
            include_missing: bool = True,
            metric_keys: Mapping[str, Iterable[str]] | None = None) -> pd.DataFrame:
    """Paper cells beside this project's runs.

    Each paper row (of ``paper_rows``, a possibly filtered :func:`load_paper_tables` frame; ``None``:
    all) is joined to the runs of the same dataset and method whose settings match the ones the table
    varies (Table 7 ``n_capability``, Table 8 ``gamma``). Base-model rows read a run's ``"before"``
    metrics, the others its ``"after"`` metrics. Among matching runs, one at paper scale is preferred,
    then the newest. Columns: ``table, dataset, method, label, setting, metric, paper, this run,
    difference, run id, run command, paper scale`` (bool) and ``scale notes`` (why not, or ``"not
    run"``). Runs that match no paper cell are listed in ``frame.attrs["unmatched_runs"]``, runs that
    match but lost to a better run in ``frame.attrs["unused_runs"]``.

    Derived in notebook ``11_results``.
    """
    import pandas as pd

    paper_rows = load_paper_tables() if paper_rows is None else paper_rows
    runs = sorted(run_results, key=lambda r: str(r.get("created", "")), reverse=True)
    rows = {(r["table"], r["dataset"], r["method"], _setting_text(r["setting"])): r
            for r in paper_tables_data()["rows"]}
    used: set[str] = set()
    matched: set[str] = set()
    out = []
    for cell in paper_rows.itertuples(index=False):
        row = rows[(cell.table, cell.dataset, cell.method, cell.setting)]
        varies = table_info(cell.table)["varies"]
        cands = [(scale_issues(r, cell.table, row["setting"], row["method"]), r)
                 for r in runs if _matches(r, row, varies)]
        matched.update(str(c[1].get("run_id")) for c in cands)
        cands.sort(key=lambda c: bool(c[0]))  # stable: paper scale first, then newest
        value = None
        issues, run = (cands[0] if cands else (["not run"], None))
        if run is not None:
            phase = "before" if cell.method == "base" else "after"
            value = run_metric(run, cell.metric, phase=phase, metric_keys=metric_keys)
            used.add(str(run.get("run_id")))
            if value is None:
                issues = [*issues, f"the run did not measure {cell.metric}"]
        out.append({"table": cell.table, "dataset": cell.dataset, "method": cell.method,
                    "label": cell.label, "setting": cell.setting, "metric": cell.metric,
                    "paper": float(cell.value), "this run": math.nan if value is None else value,
                    "difference": math.nan if value is None else value - float(cell.value),
                    "run id": None if run is None else run.get("run_id"),
                    "run command": None if run is None else run.get("command"),
                    "paper scale": run is not None and not issues, "scale notes": "; ".join(issues)})
    frame = pd.DataFrame(out)
    if not include_missing and len(frame):
        frame = frame[frame["run id"].notna()].reset_index(drop=True)
    frame.attrs["unmatched_runs"] = [r.get("run_id") for r in runs if str(r.get("run_id")) not in matched]
    frame.attrs["unused_runs"] = [r.get("run_id") for r in runs
                                  if str(r.get("run_id")) in matched - used]
    return frame
