"""Submissions that try to fool or harm the grading command get nothing and harm nothing.

One folder of submissions is graded with the real command (``python -m crispedit_lite.exercises
grade``): a solved notebook, an unsolved one, and one notebook per attack, each an unsolved (or wrong)
submission plus one cell that tries to cheat or do damage. For every attack: the affected exercises
score zero, the solved classmate keeps full marks, no instructor file or classmate file changes,
nothing the grading process knows (an environment variable) reaches the grades, and no process is
left behind. A notebook that ignores interrupts and loops forever is killed at its deadline.

The small notebook is built from the book's own solution cells (chapter 2's ``bregman_mse``,
chapter 1's ``project_out``) plus a table answer, so a submission grades in seconds. The checks that
need Linux Landlock (reading or writing outside the submission's folder) are skipped where the
kernel has no Landlock, with that reason; the file guard that restores instructor files there is
tested with ``--no-confine``.
"""

from __future__ import annotations

import csv
import os
import time
from pathlib import Path

import nbformat
import pytest

from crispedit_lite.exercises.__main__ import main
from crispedit_lite.exercises.grade import exercise_cells
from crispedit_lite.exercises.isolation import landlock_abi
from crispedit_lite.exercises.student import is_grader_cell, is_solution_cell, student_notebook
from tests.helpers import NOTEBOOK_DIR

NAME = "02_bregman_to_gauss_newton.ipynb"
SECRET = "crispedit-secret-4711"
MARK = "987654"  # sleep time of the background processes: their command line gives them away
pytestmark = [pytest.mark.notebook, pytest.mark.slow]
needs_landlock = pytest.mark.skipif(landlock_abi() < 1, reason="Landlock (Linux 5.13+) is not available here")


def _exercise(nn_: str, label: str) -> list:
    nb = nbformat.read(next(NOTEBOOK_DIR.glob(f"{nn_}_*.ipynb")), as_version=4)
    start = next(i for i, c in enumerate(nb.cells) if f":label: {label}" in c.source)
    stop = next(
        (i for i in range(start + 1, len(nb.cells)) if ":label: ex-" in nb.cells[i].source), len(nb.cells)
    )
    return [
        c
        for c in nb.cells[start:stop]
        if c.cell_type == "markdown" or is_solution_cell(c) or is_grader_cell(c)
    ]


def small_notebook() -> nbformat.NotebookNode:
    """Chapter 2's name; exercises: bregman_mse (2.1), project_out (2.2), a table (2.3)."""
    cells = [
        nbformat.v4.new_markdown_cell("# 2. A small chapter"),
        nbformat.v4.new_code_cell(
            "import pandas as pd\nimport torch\nimport torch.nn.functional as F\n"
            "from crispedit_lite.exercises import ch01, ch02"
        ),
        nbformat.v4.new_markdown_cell("## Exercises"),
    ]
    cells += _exercise("02", "ex-02-1")
    proj = _exercise("01", "ex-01-2")
    proj[0].source = proj[0].source.replace("ex-01-2", "ex-02-2")
    cells += proj
    cells += [
        nbformat.v4.new_markdown_cell("```{exercise}\n:label: ex-02-3\n\nA table.\n```"),
        nbformat.v4.new_code_cell(
            "# reference solution\n### BEGIN SOLUTION\nsweep = pd.DataFrame({'lambda': [0.0, 1.0, 10.0], "
            "'edit accuracy': [1.0, 1.0, 0.8], 'old-task accuracy': [0.3, 0.6, 0.9], "
            "'KL to base': [2.0, 0.5, 0.1]})\n### END SOLUTION",
            metadata={"tags": ["hide-cell"]},
        ),
        nbformat.v4.new_code_cell("ch01.check_penalty_sweep(sweep)"),
    ]
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


LABELS = ("ex-02-1", "ex-02-2", "ex-02-3")


def _with_cell(nb: nbformat.NotebookNode, code: str, where: str = "before") -> nbformat.NotebookNode:
    """``nb`` with one more code cell, after the imports ("before" the exercises) or at the end."""
    nb = nbformat.reads(nbformat.writes(nb), as_version=4)
    cell = nbformat.v4.new_code_cell(code)
    if where == "before":
        nb.cells.insert(2, cell)
    else:
        nb.cells.append(cell)
    return nb


def _attacks(source: Path, classmate: Path, grader_file: str) -> dict[str, tuple[nbformat.NotebookNode, set]]:
    """name -> (submission, exercises it must not score)."""
    solved = small_notebook()
    stub = student_notebook(solved, NAME)
    wrong = nbformat.reads(nbformat.writes(stub), as_version=4)
    g = exercise_cells(wrong)
    wrong.cells[g["ex-02-2"] - 1].source = "def project_out(g, U):\n    return g  # wrong: nothing removed"
    reads_solution = nbformat.reads(nbformat.writes(stub), as_version=4)
    reads_solution.cells[g["ex-02-2"] - 1].source = (
        "import json\n\n\ndef project_out(g, U):\n"
        f"    nb = json.load(open({str(source)!r}))\n"
        "    cells = [''.join(c['source']) for c in nb['cells']]\n"
        "    cell = next(c for c in cells if 'def project_out' in c)\n"
        "    ns = {}\n    exec(cell, ns)\n    return ns['project_out'](g, U)\n"
    )
    return {
        "allclose": (
            _with_cell(
                wrong,
                "import torch\ntorch.allclose = lambda *a, **k: True\n"
                "torch.Tensor.allclose = lambda *a, **k: True",
            ),
            {"ex-02-2"},
        ),
        "transformer": (
            _with_cell(stub, "get_ipython().input_transformers_post.append(lambda lines: ['pass\\n'])"),
            set(LABELS),
        ),
        "grader_patch": (
            _with_cell(
                stub,
                "import importlib\nfrom crispedit_lite.exercises import ch01, ch02, core\n"
                "ch01.check_project_out = lambda *a: print('correct')\n"
                "ch01.check_penalty_sweep = lambda *a: print('correct')\n"
                "ch02.check_bregman_mse = lambda *a: print('correct')\n"
                "core.Exercise.__call__ = lambda self, *a: print('correct')\n"
                "importlib.reload = lambda m: m",
            ),
            set(LABELS),
        ),
        "reads_solution": (
            _with_cell(reads_solution, f"print(open({str(source)!r}).read()[:100])"),
            {"ex-02-2"},
        ),
        "writes_source": (_with_cell(stub, f"open({str(source)!r}, 'w').write('{{}}')"), set(LABELS)),
        "writes_grader": (
            _with_cell(
                stub,
                f"open({grader_file!r}, 'a').write("
                "'\\ndef check_project_out(*a):\\n    print(\"correct\")\\n')",
            ),
            set(LABELS),
        ),
        "empties_classmate": (_with_cell(stub, f"open({str(classmate)!r}, 'w').close()"), set(LABELS)),
        "leaks_env": (
            _with_cell(
                stub,
                "import os\nleak = os.environ.get('CRISPEDIT_TEST_SECRET', '')\n"
                "try:\n    leak += open(f'/proc/{os.getppid()}/environ').read()\n"
                "except OSError as e:\n    leak += str(e)\nraise RuntimeError(leak)",
            ),
            set(LABELS),
        ),
        "background": (
            _with_cell(
                stub,
                "import os, subprocess\n"
                f"subprocess.Popen(['sleep', '{MARK}'], start_new_session=True)\n"
                "if os.fork() == 0:\n    os.setsid()\n"
                f"    os.execv('/bin/sleep', ['sleep', '{MARK}'])",
            ),
            set(LABELS),
        ),
    }


def _sleepers() -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if MARK in (d / "cmdline").read_bytes().decode(errors="replace"):
                    out.append(int(d.name))
            except OSError:
                continue
    return out


def _grade(subs: Path, source: Path, out: Path, *extra: str) -> dict[tuple[str, str], dict]:
    os.environ["CRISPEDIT_TEST_SECRET"] = SECRET
    try:
        rc = main(["grade", str(subs), "--source", str(source), "--out", str(out), *extra])
    finally:
        os.environ.pop("CRISPEDIT_TEST_SECRET", None)
    assert rc == 0
    rows = list(csv.DictReader(open(out / "grades.csv", encoding="utf-8")))
    return {(Path(r["notebook"]).parent.name, r["exercise"]): r for r in rows}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    root = tmp_path_factory.mktemp("attacks")
    solved = small_notebook()
    source = root / "source" / NAME
    source.parent.mkdir()
    nbformat.write(solved, source)
    subs = root / "subs"
    classmate = subs / "a_classmate" / NAME  # graded first: its file must survive what follows
    classmate.parent.mkdir(parents=True)
    nbformat.write(solved, classmate)
    import crispedit_lite.exercises.ch01 as ch01

    attacks = _attacks(source, classmate, ch01.__file__)
    for name, (nb, _) in attacks.items():
        (subs / name).mkdir()
        nbformat.write(nb, subs / name / NAME)
    (subs / "zz_unsolved").mkdir()  # graded last: after the attempts on the source and the grader
    nbformat.write(student_notebook(solved, NAME), subs / "zz_unsolved" / NAME)
    snapshot = {p: p.read_bytes() for p in (source, classmate, Path(ch01.__file__))}
    t0 = time.monotonic()
    rows = _grade(subs, source.parent, root / "grades", "--timeout", "300")
    return {
        "rows": rows,
        "attacks": attacks,
        "snapshot": snapshot,
        "root": root,
        "seconds": time.monotonic() - t0,
    }


def _scored(rows, who: str) -> dict[str, float]:
    return {e: float(r["points"]) for (w, e), r in rows.items() if w == who}


def test_the_solved_classmate_keeps_full_marks_and_the_unsolved_gets_none(graded):
    assert _scored(graded["rows"], "a_classmate") == dict.fromkeys(LABELS, 1.0)
    assert _scored(graded["rows"], "zz_unsolved") == dict.fromkeys(LABELS, 0.0)


@pytest.mark.parametrize("attack", ["allclose", "transformer", "grader_patch", "leaks_env", "background"])
def test_attacks_inside_the_kernel_score_zero(graded, attack):
    scored = _scored(graded["rows"], attack)
    _, zero = graded["attacks"][attack]
    assert {e: scored[e] for e in zero} == dict.fromkeys(zero, 0.0), scored


@needs_landlock
@pytest.mark.parametrize("attack", ["reads_solution", "writes_source", "writes_grader", "empties_classmate"])
def test_attacks_on_files_score_zero(graded, attack):
    scored = _scored(graded["rows"], attack)
    _, zero = graded["attacks"][attack]
    assert {e: scored[e] for e in zero} == dict.fromkeys(zero, 0.0), scored


def test_no_instructor_or_classmate_file_changed(graded):
    for path, data in graded["snapshot"].items():
        assert path.read_bytes() == data, f"{path.name} was changed"


def test_no_environment_variable_reaches_the_grades(graded):
    text = (graded["root"] / "grades" / "grades.csv").read_text() + (
        graded["root"] / "grades" / "grades.json"
    ).read_text()
    assert SECRET not in text
    leak = graded["rows"][("leaks_env", "ex-02-1")]
    assert (
        "RuntimeError" in leak["feedback"] or "not graded" in leak["feedback"] or leak["status"] == "failed"
    )


def test_no_process_outlives_the_grading(graded):
    assert _sleepers() == []


def test_a_sigint_proof_endless_loop_is_killed_at_the_deadline(tmp_path):
    solved = small_notebook()
    nbformat.write(solved, _mk(tmp_path / "source" / NAME))
    loop = _with_cell(
        student_notebook(solved, NAME),
        "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
        f"import subprocess\nsubprocess.Popen(['sleep', '{MARK}'])\n"
        "while True:\n    pass",
    )
    nbformat.write(loop, _mk(tmp_path / "subs" / "loop" / NAME))
    nbformat.write(solved, _mk(tmp_path / "subs" / "solved" / NAME))
    t0 = time.monotonic()
    rows = _grade(tmp_path / "subs", tmp_path / "source", tmp_path / "grades", "--timeout", "40")
    assert time.monotonic() - t0 < 2 * 40 + 60  # two notebooks, each stopped at its own deadline
    assert _scored(rows, "loop") == dict.fromkeys(LABELS, 0.0)
    loop_rows = [r["feedback"] for (w, _), r in rows.items() if w == "loop"]
    assert all("limit" in f for f in loop_rows), loop_rows
    assert _scored(rows, "solved") == dict.fromkeys(LABELS, 1.0)
    assert _sleepers() == []


def test_without_landlock_changed_files_are_restored_and_cost_the_points(tmp_path):
    """``--no-confine``: nothing stops the write; the file guard restores the file and zeroes the notebook."""
    solved = small_notebook()
    source = _mk(tmp_path / "source" / NAME)
    nbformat.write(solved, source)
    before = source.read_bytes()
    vandal = _with_cell(solved, f"open({str(source)!r}, 'w').write('{{}}')", where="end")
    nbformat.write(vandal, _mk(tmp_path / "subs" / "vandal" / NAME))
    rows = _grade(
        tmp_path / "subs", tmp_path / "source", tmp_path / "grades", "--timeout", "300", "--no-confine"
    )
    assert source.read_bytes() == before
    assert _scored(rows, "vandal") == dict.fromkeys(LABELS, 0.0)
    assert all("changed files" in r["feedback"] for r in rows.values())


def _mk(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path
