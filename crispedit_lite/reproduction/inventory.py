r"""Every result this project has, sorted by kind: the committed benchmark files and a folder of your own.

A results file says what it is by its own fields, not by its name: a ``benchmark`` (or ``kind``) field
when the script writes one (``benchmarks/step_ratio.py``), else its shape (a ``benchmarks/cpu_table1.py``
file has rows with a ``side_by_side`` block, a sweep has rows with a ``sweep`` field, a run of the
command line has a ``run_id`` and ``settings``). Only files that carry neither fall back to their name.
So a new benchmark file that follows an existing script joins its kind without a change to the chapter
that reads it, and a file of an unknown kind is still listed (kind ``"other"``), never skipped.

Derived in notebook ``11_results``.
"""

from __future__ import annotations

import fnmatch
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["KINDS", "inventory", "read_folder", "read_committed", "result_kind"]

#: The kinds of result, in the order the chapter shows them, and the script that writes each.
KINDS: dict[str, str] = {
    "table1": "the comparison of Table 1 on a CPU (benchmarks/cpu_table1.py)",
    "sweeps": "CrispEdit's gamma and n sweeps (benchmarks/ch06_sweeps.py)",
    "eta_sweep": "UltraEdit's step-size sweep (benchmarks/ultraedit_eta_sweep.py)",
    "long_horizon": "a long stream of sequential edits (benchmarks/long_horizon.py)",
    "memit_chunks": "MEMIT in chunks, with and without the cache of earlier keys "
                    "(benchmarks/ch07_memit_chunks.py)",
    "mend": "MEND's editing regimes (benchmarks/mend_regimes.py)",
    "step_ratio": "one edit step of each projection form against FT (benchmarks/step_ratio.py)",
    "scale": "GPU timings at the paper's shapes, random weights (benchmarks/scale.py)",
    "run": "one edit run with its evaluation (python -m crispedit_lite edit / reproduce)",
    "wild_causes": "why WILD's QA context scores zero (benchmarks/wild_qa_causes.py)",
    "deviations": "how the closed-form cells' covariance, templates and precision differ from the official "
                  "runs (benchmarks/closed_form_deviations.py)",
    "other": "a result of a kind this chapter lists but does not read",
}

# Names, for files that record neither a kind nor a shape this module knows.
_NAME_PATTERNS = {
    "long-horizon-*.json": "long_horizon",
    "ch07-memit-chunks-*.json": "memit_chunks",
    "mend-*.json": "mend",
    "wild-qa-causes-*.json": "wild_causes",
    "step-ratio-*.json": "step_ratio",
    "scale-*.json": "scale",
    "closed-form-deviations-*.json": "deviations",
}


def _first_row(record: Mapping[str, Any]) -> Mapping[str, Any]:
    rows = record.get("rows")
    return rows[0] if isinstance(rows, list) and rows and isinstance(rows[0], Mapping) else {}


def result_kind(record: Mapping[str, Any], name: str = "") -> str:
    """The kind of a parsed results file (a key of :data:`KINDS`).

    The recorded ``benchmark`` or ``kind`` field decides first (``"mend_regimes"`` counts as
    ``"mend"``); then the shape; then the file ``name``; else ``"other"``.

    Derived in notebook ``11_results``.
    """
    declared = record.get("benchmark", record.get("kind"))
    if isinstance(declared, str) and declared:
        declared = declared.lower().replace("-", "_")
        if declared in KINDS:
            return declared
        if declared.startswith("mend"):
            return "mend"
    row = _first_row(record)
    if "run_id" in record and isinstance(record.get("settings"), Mapping):
        return "run"
    if isinstance(record.get("presets"), Mapping):
        return "scale"
    if "editor" in record and isinstance(record.get("stream"), Mapping):
        return "long_horizon"
    if "side_by_side" in row and "method" in row:
        return "table1"
    if "sweep" in row:
        return "sweeps"
    if "eta" in row:
        return "eta_sweep"
    for pattern, kind in _NAME_PATTERNS.items():
        if fnmatch.fnmatch(Path(name).name, pattern):
            return kind
    return "other"


def _read(paths: list[Path], base: Path | None) -> tuple[dict[str, dict[str, Any]], list[str]]:
    records, problems = {}, []
    for path in paths:
        label = str(path.relative_to(base)) if base is not None else path.name
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, OSError) as err:
            problems.append(f"{label}: {err}")
            continue
        if not isinstance(data, dict):
            problems.append(f"{label}: a JSON object was expected, got {type(data).__name__}")
            continue
        records[label] = data
    return records, problems


def read_committed(pattern: str = "*.json") -> tuple[dict[str, dict[str, Any]], list[str]]:
    """The committed results (package data) matching ``pattern``: ``({file name: record}, problems)``.

    Derived in notebook ``11_results``.
    """
    from crispedit_lite.reproduction.committed import committed_names, committed_path

    return _read([committed_path(n) for n in committed_names(pattern)], None)


def read_folder(folder: str | os.PathLike) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Every ``*.json`` below ``folder`` (recursively): ``({path relative to folder: record}, problems)``.

    A missing folder gives nothing (nothing has been run there yet); a file that is not a JSON object
    is named in ``problems`` with the reason. Derived in notebook ``11_results``.
    """
    base = Path(folder)
    return _read(sorted(base.rglob("*.json")), base) if base.is_dir() else ({}, [])


def _what(kind: str, r: Mapping[str, Any]) -> str:
    rows = r.get("rows") if isinstance(r.get("rows"), list) else []
    if kind == "table1":
        methods = sorted({x.get("method") for x in rows} - {"base", None})
        return f"{len(methods)} editors x {len(r.get('seeds') or [])} subsets, {r.get('n_edits')} edits"
    if kind == "sweeps":
        return ", ".join(
            f"{s}: {sum(x.get('sweep') == s for x in rows)} points"
            for s in dict.fromkeys(x.get("sweep") for x in rows)
        )
    if kind == "eta_sweep":
        return (
            f"{len({x.get('eta') for x in rows})} step sizes x {len({x.get('n_edits') for x in rows})} sizes"
        )
    if kind == "step_ratio":
        return f"{len(rows)} forms, batch {r.get('batch')}, on {r.get('device')}"
    if kind == "scale":
        return f"{', '.join(r.get('presets') or {})} on {(r.get('hardware') or {}).get('gpu', '?')}"
    if kind == "long_horizon":
        return f"{r.get('editor')}: {len(rows)} chunks of {(r.get('stream') or {}).get('chunk_size')} edits"
    if kind == "run":
        s = r.get("settings") or {}
        return f"{s.get('method')} on {s.get('dataset')}, {s.get('n_edits')} edits"
    return f"{len(rows)} rows" if rows else ", ".join(list(r)[:4])


def _model(r: Mapping[str, Any]) -> str:
    s = r.get("settings") if isinstance(r.get("settings"), Mapping) else {}
    return str(r.get("model") or s.get("model") or "")


def inventory(records: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """One row per results file: ``file``, ``kind``, ``model``, ``what`` (its size) and ``created``.

    Sorted by the order of :data:`KINDS`, then by file. Derived in notebook ``11_results``.
    """
    import pandas as pd

    order = list(KINDS)
    rows = []
    for name, r in records.items():
        kind = result_kind(r, name)
        created = str(r.get("created") or r.get("date") or "")[:16]
        rows.append(
            {"file": name, "kind": kind, "model": _model(r), "what": _what(kind, r), "created": created}
        )
    df = pd.DataFrame(rows, columns=["file", "kind", "model", "what", "created"])
    key = df["kind"].map(order.index) if len(df) else df["kind"]
    return df.assign(_k=key).sort_values(["_k", "file"]).drop(columns="_k").reset_index(drop=True)
