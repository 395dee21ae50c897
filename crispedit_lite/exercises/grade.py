r"""Grade submitted notebooks: execute each one under a time limit and score its exercises.

A chapter's exercises are the ``{exercise}`` directives of its markdown (label ``ex-NN-k``); the
first code cell after a directive that calls ``chNN.check_...`` is that exercise's grader cell. An
exercise scores its points when its grader cell runs without error (graders raise
``AssertionError`` with a hint, print ``correct`` otherwise). When the instructor's solution
notebook of the same name is found in ``source_dir``, its grader cell, with its hidden tests, is
run in place of the submitted one, so editing a grader cell gains nothing, and the grader module
is reloaded first, so patching it gains nothing either.

Execution (nbclient) runs the cells in order. An error or a time-out before the ``## Exercises``
heading stops the notebook, and so does the notebook's own deadline: the exercises graded before
that keep their score, the rest score zero with a feedback that says where it stopped. An error, or
a cell interrupted at the time limit, inside the exercises costs only that exercise. The grader
never raises on a bad submission. Derived in notebook ``01_editing_as_constrained_optimization``
(the first chapter with graded exercises).
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import nbformat

from crispedit_lite.atomic import write_json_atomic, write_text_atomic
from crispedit_lite.exercises.student import is_grader_cell

__all__ = ["ExerciseScore", "exercise_cells", "grade_notebook", "grade_paths", "write_reports"]

_LABEL = re.compile(r":label:\s*(ex-\d{2}-\d+)")
_EXERCISE = re.compile(r"^(```|:::)\{exercise\}", re.M)
_MODULE = re.compile(r"\b(ch\d{2})\.check_\w+\(")


@dataclasses.dataclass
class ExerciseScore:
    """One exercise of one notebook: ``points`` out of ``max_points``, with a status and feedback.

    ``status`` is ``passed``, ``failed`` (the grader or the solution raised), ``not run`` (the
    notebook stopped before it) or ``missing`` (no grader cell). Derived in notebook
    ``01_editing_as_constrained_optimization``.

    Described on the book page ``instructors``.
    """

    notebook: str
    exercise: str
    points: float
    max_points: float
    status: str
    feedback: str


def exercise_cells(nb: nbformat.NotebookNode) -> dict[str, int | None]:
    """Map each exercise label to the index of its grader cell (``None`` when there is none).

    Raises:
        ValueError: when an ``{exercise}`` directive has no ``:label: ex-NN-k``.

    Derived in notebook ``01_editing_as_constrained_optimization``.
    """
    starts = []
    for i, c in enumerate(nb.cells):
        if c.cell_type == "markdown" and _EXERCISE.search(c.source):
            m = _LABEL.search(c.source)
            if not m:
                raise ValueError(f"cell {i}: an {{exercise}} directive needs ':label: ex-NN-k'")
            starts.append((i, m.group(1)))
    out: dict[str, int | None] = {}
    for k, (i, label) in enumerate(starts):
        stop = starts[k + 1][0] if k + 1 < len(starts) else len(nb.cells)
        out[label] = next((j for j in range(i + 1, stop) if is_grader_cell(nb.cells[j])), None)
    return out


def _first_exercise_cell(nb: nbformat.NotebookNode) -> int:
    for i, c in enumerate(nb.cells):
        if c.cell_type == "markdown" and (re.search(r"^## Exercises\s*$", c.source, re.M)
                                          or _EXERCISE.search(c.source)):
            return i
    return len(nb.cells)


def _grader_code(sub: nbformat.NotebookNode, src: nbformat.NotebookNode | None, label: str,
                 idx: int) -> str:
    """The code run for one grader cell: module reload, the instructor's grader and hidden tests."""
    code = sub.cells[idx].source
    if src is not None:
        j = exercise_cells(src).get(label)
        if j is not None:
            code = src.cells[j].source  # hidden tests included: their markers are comments
    mods = sorted(set(_MODULE.findall(code)))
    reload = "".join(f"import importlib as _il, crispedit_lite.exercises.{m} as {m}\n{m} = _il.reload({m})\n"
                     for m in mods)
    return reload + code


def _error_text(err: BaseException) -> str:
    ename = getattr(err, "ename", type(err).__name__)
    evalue = getattr(err, "evalue", str(err))
    text = f"{ename}: {evalue}".strip()
    return text if len(text) < 600 else text[:600] + " ..."


def grade_notebook(path: str | os.PathLike, timeout: float = 600.0, cell_timeout: float | None = None,
                   source_dir: str | os.PathLike | None = None, points: Mapping[str, float] | None = None,
                   kernel_name: str = "python3") -> list[ExerciseScore]:
    """Execute one submitted notebook and score each of its exercises.

    Args:
        path: the submitted ``.ipynb``.
        timeout: seconds for the whole notebook; the cell running at the deadline is interrupted.
        cell_timeout: seconds per cell (default: ``timeout``).
        source_dir: folder of the instructor's solution notebooks (same file names), or ``None``.
        points: points per exercise label (default 1 each).
        kernel_name: the Jupyter kernel.

    Returns:
        One :class:`ExerciseScore` per exercise, in notebook order. A notebook that cannot be read
        or has no exercises gives one row with exercise ``"-"`` and the reason.

    Derived in notebook ``01_editing_as_constrained_optimization``.
    """
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    path = Path(path)
    name = path.name
    try:
        sub = nbformat.read(path, as_version=4)
        graders = exercise_cells(sub)
    except Exception as err:  # a broken submission is a score, not a crash
        return [ExerciseScore(name, "-", 0.0, 0.0, "failed", f"cannot read the notebook: {_error_text(err)}")]
    if not graders:
        return [ExerciseScore(name, "-", 0.0, 0.0, "missing", "no {exercise} directives found")]
    src = None
    if source_dir is not None and (Path(source_dir) / name).is_file():
        src = nbformat.read(Path(source_dir) / name, as_version=4)
    pts = {lab: float((points or {}).get(lab, 1.0)) for lab in graders}
    by_cell = {i: lab for lab, i in graders.items() if i is not None}
    first_ex = _first_exercise_cell(sub)
    result: dict[str, ExerciseScore] = {
        lab: ExerciseScore(name, lab, 0.0, pts[lab], "missing" if i is None else "not run",
                           "no grader cell (chNN.check_...) after the exercise" if i is None else "")
        for lab, i in graders.items()}
    failed_solution: dict[str, str] = {}
    stopped = ""
    deadline = time.monotonic() + timeout
    client = NotebookClient(sub, timeout=int(cell_timeout or timeout), kernel_name=kernel_name,
                            allow_errors=False, interrupt_on_timeout=True,
                            resources={"metadata": {"path": str(path.parent.resolve())}})
    current_label = None
    try:
        with client.setup_kernel():
            for i, cell in enumerate(sub.cells):
                if cell.cell_type == "markdown" and _EXERCISE.search(cell.source):
                    m = _LABEL.search(cell.source)
                    current_label = m.group(1) if m else current_label
                if cell.cell_type != "code":
                    continue
                left = deadline - time.monotonic()
                if left <= 0:
                    stopped = f"the notebook ran past its {timeout:.0f} s limit before cell {i}"
                    break
                client.timeout = int(max(1, min(cell_timeout or timeout, left)))
                label = by_cell.get(i)
                if label is not None:
                    cell.source = _grader_code(sub, src, label, i)
                try:
                    client.execute_cell(cell, i)
                except CellTimeoutError:
                    stopped = f"cell {i} ran past the time limit"
                    break
                except DeadKernelError as err:
                    stopped = f"the kernel died in cell {i}: {_error_text(err)}"
                    break
                except CellExecutionError as err:
                    if getattr(err, "ename", "") == "KeyboardInterrupt":  # interrupted at the time limit
                        err = TimeoutError(f"cell {i} ran past the time limit ({client.timeout} s) and was "
                                           "interrupted")
                    if i < first_ex:
                        stopped = f"cell {i} (the chapter before the exercises) raised {_error_text(err)}"
                        break
                    if label is not None:
                        why = failed_solution.get(label, "")
                        fb = _error_text(err) + (f" (your solution cell raised first: {why})" if why else "")
                        result[label] = ExerciseScore(name, label, 0.0, pts[label], "failed", fb)
                    elif current_label in result:
                        failed_solution.setdefault(current_label, _error_text(err))
                    continue
                if label is not None:
                    result[label] = ExerciseScore(name, label, pts[label], pts[label], "passed", "correct")
    except Exception as err:  # kernel start-up and the like: score what was reached
        stopped = stopped or f"execution failed: {_error_text(err)}"
    for score in result.values():
        if score.status == "not run":
            score.feedback = f"not graded: {stopped or 'the notebook stopped before this exercise'}"
    return list(result.values())


def grade_paths(paths: Iterable[str | os.PathLike], **kwargs: Any) -> list[ExerciseScore]:
    """Grade every ``.ipynb`` among ``paths`` (files, or folders searched recursively, sorted).

    Raises:
        ValueError: when a path does not exist or no notebook is found.

    Derived in notebook ``01_editing_as_constrained_optimization``.
    """
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(q for q in p.rglob("*.ipynb") if ".ipynb_checkpoints" not in q.parts)
        elif p.is_file():
            files.append(p)
        else:
            raise ValueError(f"grade: {p} does not exist")
    if not files:
        raise ValueError("grade: no .ipynb found in the given paths")
    scores: list[ExerciseScore] = []
    for f in files:
        for s in grade_notebook(f, **kwargs):
            s.notebook = str(f)
            scores.append(s)
    return scores


def write_reports(scores: list[ExerciseScore], out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``grades.csv`` (one row per exercise) and ``grades.json`` (per notebook, with totals).

    Derived in notebook ``01_editing_as_constrained_optimization``.
    """
    import csv
    import io

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    fields = [f.name for f in dataclasses.fields(ExerciseScore)]
    w = csv.DictWriter(buf, fieldnames=fields)
    w.writeheader()
    for s in scores:
        w.writerow(dataclasses.asdict(s))
    per_nb: dict[str, dict[str, Any]] = {}
    for s in scores:
        d = per_nb.setdefault(s.notebook, {"notebook": s.notebook, "points": 0.0, "max_points": 0.0,
                                           "exercises": []})
        d["points"] += s.points
        d["max_points"] += s.max_points
        d["exercises"].append(dataclasses.asdict(s))
    csv_path, json_path = out / "grades.csv", out / "grades.json"
    write_text_atomic(csv_path, buf.getvalue())
    write_json_atomic(json_path, list(per_nb.values()), indent=2)
    return csv_path, json_path

