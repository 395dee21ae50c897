r"""``python -m crispedit_lite reproduce``: run paper table cells, resumably.

A cell is ``reproduce/<cell>.yaml``: the papermill parameters of notebook ``09_reproduce_llama3_8b``
(Tables 1, 3, 4, 7, 8) or ``10_reproduce_qwen2_5_1_5b`` (Table 5). ``reproduce CELL`` runs one,
``reproduce --table table1`` every ``reproduce/table1_*.yaml``. Every file is read and checked
against its notebook before any cell runs (:mod:`crispedit_lite.cli.cell_files`: YAML, every
parameter given, no unknown ones, values the notebook accepts); a bad one is one line naming the
file, line and key, with exit status 2.

A cell is *finished* only when its marker ``RESULTS_ROOT/<cell>.done.json`` exists and still holds
(:mod:`crispedit_lite.reproduction.finished`): it is written last, after papermill returned success
and the run's results JSON passed the checks (complete, finite, not diverged), and it names that
result, its digest, the executed notebook and the digest of the parameter file. A notebook whose
assertion failed, a run killed at any point (even by SIGKILL, even between writing the JSON and
saving the executed notebook), a diverged run and an edited parameter file all leave a cell that is
not finished: the next run of the same command says why and runs it again, after renaming the
unfinished attempt's JSON to ``<name>.json.unfinished`` (nothing is deleted). The executed notebook
is written under a temporary name and renamed when it completes (``<cell>.ipynb``, or
``<cell>.failed.ipynb`` when it failed and what was saved is a readable notebook); a failure message
names that file only when it exists. K-FAC factors of an interrupted cell come from the cache when
they were complete. A failed cell does not stop a table; the summary lists it.

``--executor inline`` (the default) runs the cells one after another in this process; ``local`` and
``slurm`` submit one job per unfinished cell through ``submitit``
(:mod:`crispedit_lite.cli.executor`), and each job runs the same :func:`reproduce_cell`, so the
results tree, the markers and the resumption are the same whichever executor ran a cell.

Derived in notebook ``09_reproduce_llama3_8b``.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import os
import re
from pathlib import Path
from typing import Any

from crispedit_lite.cli.checks import UsageError

__all__ = ["add_parser", "cells_of", "finished_result", "reproduce_cell", "run_reproduce", "summary"]


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """The ``reproduce`` subcommand's arguments.

    Listed on the book page ``api``.
    """
    r = sub.add_parser("reproduce", parents=[common],
                       help="run paper table cells (papermill + reproduce/CELL.yaml), resumably")
    r.add_argument("cell", nargs="?", help="e.g. table1_zsre_crispedit (see reproduce/README.md)")
    r.add_argument("--table", default=None,
                   help="every cell of a table, e.g. table1 (reproduce/table1_*.yaml)")
    r.add_argument("--results-root", default="results")
    r.add_argument("--root", default=".", help="repository root (holds notebooks/, reproduce/)")
    r.add_argument("--force", action="store_true", help="run even if a finished result exists")
    r.add_argument("--executor", choices=("inline", "local", "slurm"), default="inline",
                   help="inline: one cell after another in this process (default); local or slurm: "
                        "one job per cell through submitit (pip install crispedit-lite[cluster])")
    r.add_argument("--profile", default=None,
                   help="YAML or JSON job resources for --executor local/slurm: partition, gpus_per_node, "
                        "timeout_min, mem_gb, cpus_per_task, and any slurm_* key of submitit")
    r.add_argument("--max-parallel", type=int, default=None,
                   help="jobs running at once (local: 1 unless given; slurm: no limit unless given)")
    r.add_argument("--retries", type=int, default=0,
                   help="resubmit a job that ended without a result (killed, preempted, out of time) "
                        "up to this many times; a cell whose notebook failed is not resubmitted")


def cells_of(root: Path, cell: str | None, table: str | None) -> list[str]:
    """The cells to run: ``[cell]``, or every cell of ``table``; unknown names are errors.

    Listed on the book page ``api``.
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


def finished_result(results_root: Path, cell: str, root: Path) -> tuple[Path | None, str | None]:
    """``(result, None)`` when ``cell`` is finished (its marker holds), else ``(None, why not)``.

    Listed on the book page ``api``.
    """
    from crispedit_lite.reproduction.finished import marker_problem

    why, result = marker_problem(results_root, cell, root / "reproduce" / f"{cell}.yaml")
    return result, why


def _failed_notebook(partial: Path, failed: Path) -> str:
    """Keep the executed notebook of a failed cell as ``failed`` when it is readable; where it is."""
    import nbformat

    if not partial.exists():
        return "no executed notebook was written"
    try:
        nbformat.read(str(partial), as_version=4)
    except Exception as err:  # a truncated file (a full disk), or a run killed mid-write
        partial.unlink()
        return f"the executed notebook could not be saved whole ({type(err).__name__}); removed"
    os.replace(partial, failed)
    return f"notebook: {failed}"


def _run_one(root: Path, cell: str, params: dict[str, Any], results_root: Path) -> tuple[Path, Path]:
    """Execute one cell's notebook; ``(executed notebook, result)``. Raises on a failed cell."""
    import papermill

    from crispedit_lite.cli.cell_files import notebook_of
    from crispedit_lite.reproduction.finished import new_result

    params = dict(params, RESULTS_DIR=str(results_root / cell))
    results_root.mkdir(parents=True, exist_ok=True)
    cell_dir = results_root / cell
    before = {p.name for p in cell_dir.glob("*.json")} if cell_dir.is_dir() else set()
    partial = results_root / f".{cell}.partial.ipynb"
    try:
        papermill.execute_notebook(str(root / "notebooks" / f"{notebook_of(cell)}.ipynb"), str(partial),
                                   parameters=params, cwd=str(root / "notebooks"), log_output=True)
    except BaseException as err:
        raise _CellFailed(err, _failed_notebook(partial, results_root / f"{cell}.failed.ipynb")) from err
    out = results_root / f"{cell}.ipynb"
    os.replace(partial, out)
    result, why = new_result(cell_dir, before)
    if result is None:
        raise _CellFailed(ValueError(why), f"notebook: {out}")
    return out, result


class _CellFailed(Exception):
    def __init__(self, cause: BaseException, notebook: str) -> None:
        lines = str(cause).strip().splitlines()
        super().__init__(f"{type(cause).__name__}: {lines[-1] if lines else ''} ({notebook})")
        self.cause = cause


def reproduce_cell(root: Path, cell: str, params: dict[str, Any], results_root: Path,
                   force: bool = False) -> dict[str, Any]:
    """Run one cell unless it is finished; print what happens; the outcome as a dict.

    The outcome holds ``cell``, ``status`` (``"done"``, ``"skipped"`` or ``"failed"``), ``message``
    (the line printed last, without the cell's name) and ``result`` (the results JSON, or ``None``).
    The same function runs a cell in this process (``--executor inline``) and as one job of
    :mod:`crispedit_lite.cli.executor`, so both write the same results tree. While it runs, the cell
    holds ``RESULTS_ROOT/.<cell>.lock`` (:func:`~crispedit_lite.kfac.lock.file_lock`): a second run
    of the same cell at the same time fails at once instead of writing beside the first.

    Described on the book page ``reproducing``.
    """
    from crispedit_lite.kfac.lock import file_lock
    from crispedit_lite.reproduction.finished import marker_path, set_aside, write_marker

    def outcome(status: str, message: str, result: Path | None = None) -> dict[str, Any]:
        print(f"{cell}: {message}", flush=True)
        return {"cell": cell, "status": status, "message": message,
                "result": None if result is None else str(result)}

    results_root.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(file_lock(results_root / f".{cell}.lock", timeout=0))
        except TimeoutError as err:
            return outcome("failed", f"FAILED: another run of this cell is in progress ({err})")
        found, why = finished_result(results_root, cell, root)
        if found is not None and not force:
            return outcome("skipped", f"finished ({found}); skipped (use --force to run again)", found)
        marker_path(results_root, cell).unlink(missing_ok=True)
        moved = set_aside(results_root / cell, "superseded" if found is not None else "unfinished")
        note = f"; set aside {', '.join(p.name for p in moved)}" if moved else ""
        print(f"{cell}: running ({'--force' if found is not None else why}{note})", flush=True)
        try:
            out, result = _run_one(root, cell, params, results_root)
        except _CellFailed as err:  # one failed cell does not stop the table
            if isinstance(err.cause, KeyboardInterrupt):
                raise err.cause from None
            return outcome("failed", f"FAILED: {err}")
        write_marker(results_root, cell, result, out, root / "reproduce" / f"{cell}.yaml")
        return outcome("done", f"done; executed {out}; result {result}", result)
    raise AssertionError("unreachable")  # pragma: no cover


def summary(cells: list[str], outcomes: dict[str, dict[str, Any]]) -> str:
    """The last line of ``reproduce``: how many cells were done, skipped and failed (named).

    Described on the book page ``reproducing``.
    """
    by = {s: [c for c in cells if outcomes.get(c, {}).get("status") == s] for s in ("done", "skipped")}
    failed = [c for c in cells if outcomes.get(c, {}).get("status") not in ("done", "skipped")]
    return (f"summary: {len(cells)} cell(s): {len(by['done'])} done, {len(by['skipped'])} skipped "
            f"(finished), {len(failed)} failed" + (f": {', '.join(failed)}" if failed else ""))


def run_reproduce(args: argparse.Namespace) -> int:
    """Run the cells (skipping finished ones), print a summary; 0 when none failed, else 1.

    With ``--executor local`` or ``slurm`` each cell that is not finished is one job
    (:mod:`crispedit_lite.cli.executor`); the finished ones are skipped without a job.

    Listed on the book page ``api``.
    """
    from crispedit_lite.cli.cell_files import read_cell

    root = Path(args.root).resolve()
    executor = getattr(args, "executor", "inline")
    if executor != "inline":
        from crispedit_lite.cli.executor import check_options

        check_options(args)  # the options, the profile and submitit, before any file is read
    cells = cells_of(root, args.cell, args.table)
    results_root = Path(args.results_root).expanduser().resolve()
    if results_root.exists() and not results_root.is_dir():
        raise UsageError(f"argument --results-root: {args.results_root!r} is a file; expected a folder")
    params = {cell: read_cell(root, cell) for cell in cells}  # every file checked before any cell runs
    if executor != "inline":
        from crispedit_lite.cli.executor import run_jobs

        outcomes = run_jobs(args, cells, results_root, lambda c: finished_result(results_root, c, root)[0],
                            reproduce_cell, lambda c, force: (root, c, params[c], results_root, force))
    else:
        outcomes = {cell: reproduce_cell(root, cell, params[cell], results_root, args.force)
                    for cell in cells}
    print(summary(cells, outcomes), flush=True)
    return 0 if all(o["status"] in ("done", "skipped") for o in outcomes.values()) else 1
