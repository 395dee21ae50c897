r"""When a reproduction cell counts as finished: one marker, written last, that names a sound result.

A cell is run by executing its notebook with papermill; the notebook writes a results JSON into
``RESULTS_ROOT/<cell>/``. The JSON alone proves nothing: a notebook can write it and then fail an
assertion, be killed before its executed copy is saved, or record a run that diverged. So the cell
counts as finished only when :func:`write_marker` has written ``RESULTS_ROOT/<cell>.done.json``,
atomically and as the very last step, after papermill returned success and the new result passed
:func:`~crispedit_lite.reproduction.results.result_problem` (complete, finite, not diverged). The
marker names the result and its SHA-256, the executed notebook and the SHA-256 of the cell's
parameter file; :func:`marker_problem` re-checks all of them, so an edited parameter file, a result
changed or removed since, or a missing notebook makes the cell run again, with the reason said.

Before a cell runs again, :func:`set_aside` renames the results JSONs of its unfinished attempts to
``<name>.json.unfinished`` (and, with ``--force``, a finished one to ``<name>.json.superseded``), so
that nothing is deleted and :func:`~crispedit_lite.reproduction.results.read_results` sees only
results that count.

Described on the book page ``reproducing``.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path
from typing import Any

from crispedit_lite.models.filehash import file_sha256 as sha256_file

__all__ = ["marker_path", "marker_problem", "new_result", "set_aside", "sha256_file", "write_marker"]


def marker_path(results_root: Path, cell: str) -> Path:
    """``RESULTS_ROOT/<cell>.done.json``.

    Listed on the book page ``api``.
    """
    return results_root / f"{cell}.done.json"


def _read_result(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    try:
        return json.loads(path.read_text(encoding="utf-8")), None
    except (OSError, ValueError, RecursionError) as err:
        return None, f"its result {path.name} cannot be read ({' '.join(str(err).split())[:120]})"


def marker_problem(results_root: Path, cell: str, parameters: Path) -> tuple[str | None, Path | None]:
    """``(why the cell is not finished, None)`` or ``(None, its result)``.

    Listed on the book page ``api``.
    """
    from crispedit_lite.reproduction.results import result_problem

    marker = marker_path(results_root, cell)
    if not marker.is_file():
        cell_dir = results_root / cell
        left = sorted(cell_dir.glob("*.json")) if cell_dir.is_dir() else []
        if left:
            return (f"{left[0].name} was written, but the run never finished (the notebook failed or was "
                    "interrupted)", None)
        return "not run yet", None
    try:
        info = json.loads(marker.read_text(encoding="utf-8"))
        result, notebook = Path(info["result"]), Path(info["notebook"])
        digest, params = str(info["result_sha256"]), str(info["parameters_sha256"])
    except (OSError, ValueError, KeyError, TypeError):
        return f"its marker {marker.name} cannot be read", None
    if params != sha256_file(parameters):
        return f"{parameters.name} changed since the cell finished", None
    if not result.is_file():
        return f"its result {result} is gone", None
    if sha256_file(result) != digest:
        return f"its result {result.name} changed since the cell finished", None
    record, why = _read_result(result)
    if record is None:
        return why, None
    problem = result_problem(record)
    if problem is not None:
        return f"its result {result.name} does not count: {problem}", None
    if not notebook.is_file():
        return f"its executed notebook {notebook} is gone", None
    return None, result


def new_result(cell_dir: Path, before: set[str]) -> tuple[Path | None, str | None]:
    """The one results JSON a run added to ``cell_dir`` (not in ``before``) if it counts, else why not.

    Listed on the book page ``api``.
    """
    from crispedit_lite.reproduction.results import result_problem

    added = sorted(p for p in cell_dir.glob("*.json") if p.name not in before) if cell_dir.is_dir() else []
    if not added:
        return None, f"the notebook wrote no results JSON to {cell_dir}"
    if len(added) > 1:
        return None, f"the notebook wrote {len(added)} results JSONs to {cell_dir}; expected one"
    record, why = _read_result(added[0])
    if record is None:
        return None, why
    problem = result_problem(record)
    if problem is not None:
        return None, f"its result {added[0].name} does not count: {problem}"
    return added[0], None


def set_aside(cell_dir: Path, keep_suffix: str = "unfinished") -> list[Path]:
    """Rename every ``*.json`` of ``cell_dir`` to ``<name>.json.<keep_suffix>``; the new paths.

    Listed on the book page ``api``.
    """
    moved = []
    for p in sorted(cell_dir.glob("*.json")) if cell_dir.is_dir() else []:
        target = p.with_name(f"{p.name}.{keep_suffix}")
        n = 1
        while target.exists():
            target, n = p.with_name(f"{p.name}.{keep_suffix}-{n}"), n + 1
        os.replace(p, target)
        moved.append(target)
    return moved


def write_marker(results_root: Path, cell: str, result: Path, notebook: Path, parameters: Path) -> Path:
    """Write the cell's marker atomically (the last step of a finished cell); its path.

    Listed on the book page ``api``.
    """
    from crispedit_lite.atomic import write_json_atomic

    info = {"cell": cell, "result": str(result), "result_sha256": sha256_file(result),
            "notebook": str(notebook), "parameters": str(parameters),
            "parameters_sha256": sha256_file(parameters),
            "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    return write_json_atomic(marker_path(results_root, cell), info, indent=1, sort_keys=True)
