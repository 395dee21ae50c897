r"""``python -m crispedit_lite reproduce``: run paper table cells, resumably.

A cell is ``reproduce/<cell>.yaml``: the papermill parameters of notebook ``09_reproduce_llama3_8b``
(Tables 1, 3, 4, 7, 8) or ``10_reproduce_qwen2_5_1_5b`` (Table 5). ``reproduce CELL`` runs one,
``reproduce --table table1`` every ``reproduce/table1_*.yaml``. A cell is *finished* when
``RESULTS_ROOT/<cell>/`` holds a results JSON that passes the schema
(:func:`crispedit_lite.reproduction.results.validate_result`); finished cells are skipped. Results JSONs are
written atomically (temp file + rename) and the executed notebook is written under a temporary name
and renamed when it completes (``<cell>.ipynb``, or ``<cell>.failed.ipynb``), so a run killed at any
point, even by SIGKILL, leaves nothing that counts as finished, and running the same command again
resumes: finished cells are skipped, the interrupted one starts again (its K-FAC factors come from
the cache when they were complete). A failed cell does not stop a table; the summary lists it.

Derived in notebook ``09_reproduce_llama3_8b``.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import re
from pathlib import Path
from typing import Any

from crispedit_lite.cli.checks import UsageError

__all__ = ["add_parser", "cells_of", "finished_result", "run_reproduce"]


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """The ``reproduce`` subcommand's arguments.

    Described on the book page ``running``.
    """
    r = sub.add_parser("reproduce", parents=[common],
                       help="run paper table cells (papermill + reproduce/CELL.yaml), resumably")
    r.add_argument("cell", nargs="?", help="e.g. table1_zsre_crispedit (see reproduce/README.md)")
    r.add_argument("--table", default=None,
                   help="every cell of a table, e.g. table1 (reproduce/table1_*.yaml)")
    r.add_argument("--results-root", default="results")
    r.add_argument("--root", default=".", help="repository root (holds notebooks/, reproduce/)")
    r.add_argument("--force", action="store_true", help="run even if a finished result exists")


def cells_of(root: Path, cell: str | None, table: str | None) -> list[str]:
    """The cells to run: ``[cell]``, or every cell of ``table``; unknown names are errors.

    Described on the book page ``running``.
    """
    folder = root / "reproduce"
    if not folder.is_dir():
        raise UsageError(f"argument --root: {str(root)!r} has no reproduce/ folder; expected the "
                         "repository root")
    known = sorted(p.stem for p in folder.glob("*.yaml"))
    if (cell is None) == (table is None):
        raise UsageError("reproduce: give one CELL or --table TABLE (not both, not neither)")
    if cell is not None:
        if cell not in known:
            close = difflib.get_close_matches(cell, known, n=5) or known[:5]
            raise UsageError(f"argument cell: no reproduce/{cell}.yaml; cells include {close}")
        return [cell]
    tables = sorted({c.split("_", 1)[0] for c in known}, key=lambda t: int(re.sub(r"\D", "", t) or 0))
    if table == "table3":
        raise UsageError("argument --table: table3 has no cells of its own; it is the teacher-forced "
                         "evaluation of the table1 runs (run --table table1)")
    if table not in tables:
        raise UsageError(f"argument --table: no cells for {table!r}; tables with cells: {', '.join(tables)}")
    return [c for c in known if c.startswith(f"{table}_")]


def finished_result(results: Path) -> Path | None:
    """A results JSON of ``results`` that passes the schema (a finished cell), or ``None``.

    Described on the book page ``running``.
    """
    from crispedit_lite.reproduction.results import validate_result

    for path in sorted(results.glob("*.json")) if results.is_dir() else []:
        try:
            validate_result(json.loads(path.read_text(encoding="utf-8")))
        except (ValueError, OSError):
            continue
        return path
    return None


def _run_one(root: Path, cell: str, results_root: Path) -> str:
    """Execute one cell's notebook; the executed notebook's path. Raises on a failed cell."""
    import papermill
    import yaml

    nb = "10_reproduce_qwen2_5_1_5b" if cell.startswith("table5_") else "09_reproduce_llama3_8b"
    params = yaml.safe_load((root / "reproduce" / f"{cell}.yaml").read_text(encoding="utf-8"))
    params["RESULTS_DIR"] = str(results_root / cell)
    results_root.mkdir(parents=True, exist_ok=True)
    partial = results_root / f".{cell}.partial.ipynb"
    try:
        papermill.execute_notebook(str(root / "notebooks" / f"{nb}.ipynb"), str(partial),
                                   parameters=params, cwd=str(root / "notebooks"), log_output=True)
    except BaseException:
        if partial.exists():
            os.replace(partial, results_root / f"{cell}.failed.ipynb")
        raise
    out = results_root / f"{cell}.ipynb"
    os.replace(partial, out)
    return str(out)


def run_reproduce(args: argparse.Namespace) -> int:
    """Run the cells (skipping finished ones), print a summary; 0 when none failed, else 1.

    Derived in notebook ``09_reproduce_llama3_8b``.
    """
    root = Path(args.root).resolve()
    cells = cells_of(root, args.cell, args.table)
    results_root = Path(args.results_root).expanduser().resolve()
    if results_root.exists() and not results_root.is_dir():
        raise UsageError(f"argument --results-root: {args.results_root!r} is a file; expected a folder")
    done, skipped, failed = [], [], []
    for cell in cells:
        found = finished_result(results_root / cell)
        if found is not None and not args.force:
            print(f"{cell}: finished ({found}); skipped (use --force to run again)", flush=True)
            skipped.append(cell)
            continue
        print(f"{cell}: running", flush=True)
        try:
            out = _run_one(root, cell, results_root)
        except Exception as err:  # one failed cell does not stop the table
            why = str(err).strip().splitlines()
            failed.append(cell)
            print(f"{cell}: FAILED: {type(err).__name__}: {why[-1] if why else ''} "
                  f"(notebook: {results_root / f'{cell}.failed.ipynb'})", flush=True)
            continue
        done.append(cell)
        print(f"{cell}: done; executed {out}; results in {results_root / cell}", flush=True)
    print(f"summary: {len(cells)} cell(s): {len(done)} done, {len(skipped)} skipped (finished), "
          f"{len(failed)} failed" + (f": {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0
