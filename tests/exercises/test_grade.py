"""The grading command (``crispedit_lite.exercises.grade`` and ``python -m crispedit_lite.exercises``).

The tests execute real kernels on small notebooks made from chapter 2's exercise section
(its exercises need nothing from the chapter body), so each runs in seconds.
"""

from __future__ import annotations

import csv
import json

import nbformat
import pytest

from crispedit_lite.exercises.__main__ import main
from crispedit_lite.exercises.grade import exercise_cells, grade_notebook, grade_paths
from crispedit_lite.exercises.student import STUB_MESSAGE, is_solution_cell, student_notebook
from tests.helpers import NOTEBOOK_DIR

NAME = "02_bregman_to_gauss_newton.ipynb"


def _chapter2_exercises() -> nbformat.NotebookNode:
    """Chapter 2 cut down to its title, install, parameters and exercise cells, plus one import cell."""
    nb = nbformat.read(NOTEBOOK_DIR / NAME, as_version=4)
    first = next(i for i, c in enumerate(nb.cells)
                 if c.cell_type == "markdown" and "{exercise}" in c.source)
    imports = nbformat.v4.new_code_cell("import torch\nfrom crispedit_lite.exercises import ch02")
    head = nb.cells[:3] + [imports]
    heading = nbformat.v4.new_markdown_cell("## Exercises")
    small = nbformat.v4.new_notebook(cells=head + [heading] + nb.cells[first:], metadata=nb.metadata)
    for c in small.cells:
        if c.cell_type == "code" and "google.colab" in c.source:
            c.source = "import sys"
    return small


def _write(nb, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """source/ (the instructor's), subs/solved/ and subs/student/ (the handed-out stub version)."""
    root = tmp_path_factory.mktemp("grading")
    solved = _chapter2_exercises()
    _write(solved, root / "source" / NAME)
    _write(solved, root / "subs" / "solved" / NAME)
    _write(student_notebook(solved, NAME), root / "subs" / "student" / NAME)
    return root


@pytest.mark.notebook
def test_grade_folder_with_a_solved_and_a_student_notebook(folder, capsys):
    out = folder / "grades"
    rc = main(["grade", str(folder / "subs"), "--source", str(folder / "source"), "--out", str(out),
               "--timeout", "120"])
    assert rc == 0
    rows = list(csv.DictReader(open(out / "grades.csv", encoding="utf-8")))
    by = {(("solved" if "solved" in r["notebook"] else "student"), r["exercise"]): r for r in rows}
    assert set(by) == {(w, e) for w in ("solved", "student") for e in ("ex-02-1", "ex-02-2")}
    for e in ("ex-02-1", "ex-02-2"):
        assert by["solved", e]["status"] == "passed" and float(by["solved", e]["points"]) == 1.0
        assert by["student", e]["status"] == "failed" and float(by["student", e]["points"]) == 0.0
        assert STUB_MESSAGE in by["student", e]["feedback"]
    report = {d["notebook"].split("/")[-2]: d for d in json.loads((out / "grades.json").read_text())}
    assert (report["solved"]["points"], report["solved"]["max_points"]) == (2.0, 2.0)
    assert report["student"]["points"] == 0.0
    assert "total 2/4" in capsys.readouterr().out


@pytest.mark.notebook
def test_timeout_and_errors_give_partial_credit(folder):
    nb = _chapter2_exercises()
    graders = exercise_cells(nb)
    slow = nb.cells[graders["ex-02-2"] - 1]
    assert is_solution_cell(slow)
    slow.source = "import time\ntime.sleep(600)\n" + slow.source
    path = _write(nb, folder / "slow" / NAME)
    scores = {s.exercise: s for s in grade_notebook(path, timeout=300, cell_timeout=20)}
    assert scores["ex-02-1"].status == "passed" and scores["ex-02-1"].points == 1
    assert scores["ex-02-2"].status == "failed" and scores["ex-02-2"].points == 0
    assert "time limit" in scores["ex-02-2"].feedback
    # the notebook's own deadline stops everything after it
    scores = grade_notebook(path, timeout=1)
    assert all(s.points == 0 for s in scores) and all("limit" in s.feedback for s in scores)

    broken = _chapter2_exercises()
    broken.cells[3].source = "raise RuntimeError('the chapter body is broken')"
    path = _write(broken, folder / "broken" / NAME)
    scores = grade_notebook(path, timeout=60)
    assert [s.status for s in scores] == ["not run", "not run"]
    assert all("cell 3" in s.feedback and "RuntimeError" in s.feedback for s in scores)


@pytest.mark.notebook
def test_instructor_graders_and_hidden_tests_are_run(folder):
    source = _chapter2_exercises()
    graders = exercise_cells(source)
    g1 = source.cells[graders["ex-02-1"]]
    g1.source += ("\n### BEGIN HIDDEN TESTS\n"
                  "assert float(bregman_mse(torch.ones(2, 3), torch.zeros(2, 3))) == 3.0\n"
                  "### END HIDDEN TESTS")
    _write(source, folder / "source_hidden" / NAME)
    sub = student_notebook(source, NAME)
    assert "HIDDEN" not in sub.cells[graders["ex-02-1"]].source
    # ex-02-1: passes the visible grader but not the hidden test (sums over rows instead of a mean
    # would fail the visible grader; this one special-cases the visible grader's shape)
    sub.cells[graders["ex-02-1"] - 1].source = (
        "def bregman_mse(out, base_out):\n"
        "    if out.shape == (2, 3):\n        return torch.tensor(0.0)\n"
        "    return ((out - base_out) ** 2).sum(-1).mean()")
    # ex-02-2: a wrong solution whose grader cell was replaced by a fake success
    sub.cells[graders["ex-02-2"] - 1].source = "def softmax_hessian(z):\n    return torch.eye(len(z))"
    sub.cells[graders["ex-02-2"]].source = "print('correct')  # ch02.check_softmax_hessian(softmax_hessian)"
    path = _write(sub, folder / "tampered" / NAME)
    own = {s.exercise: s.status for s in grade_paths([path], timeout=120)}
    assert own == {"ex-02-1": "passed", "ex-02-2": "passed"}  # without the source: fooled
    scores = {s.exercise: s for s in grade_paths([path], timeout=120, source_dir=folder / "source_hidden")}
    assert scores["ex-02-1"].status == "failed" and "AssertionError" in scores["ex-02-1"].feedback
    assert scores["ex-02-2"].status == "failed"


def test_grade_reports_bad_paths_without_crashing(tmp_path, capsys):
    assert main(["grade", str(tmp_path / "missing.ipynb")]) == 2
    assert "does not exist" in capsys.readouterr().err
    bad = tmp_path / "00_bad.ipynb"
    bad.write_text("not json")
    [score] = grade_notebook(bad)
    assert score.status == "failed" and "cannot read" in score.feedback
    assert main(["grade", str(tmp_path), "--points", "ex-01-1"]) == 2
