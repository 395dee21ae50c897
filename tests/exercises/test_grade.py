"""Student versions and the grading command (``crispedit_lite.exercises.student`` / ``.grade``).

The grading tests execute real kernels on small notebooks made from chapter 2's exercise section
(its exercises need nothing from the chapter body), so each runs in seconds.
"""

from __future__ import annotations

import csv
import json
import re

import nbformat
import pytest
from conftest import NOTEBOOK_DIR

from crispedit_lite.exercises.__main__ import main
from crispedit_lite.exercises.grade import exercise_cells, grade_notebook, grade_paths
from crispedit_lite.exercises.student import (
    STUB_MESSAGE,
    hidden_tests,
    is_solution_cell,
    student_notebook,
    student_source,
    write_student_versions,
)

NAME = "02_bregman_to_gauss_newton.ipynb"


# ------------------------------------------------------------------------------------ student.py

def test_student_source_replaces_solutions_at_their_indentation():
    src = ("# reference solution\ndef f(x):\n    ### BEGIN SOLUTION\n    return 2 * x\n"
           "    ### END SOLUTION\n\ny = f(1)")
    out = student_source(src)
    assert "return 2 * x" not in out and "BEGIN SOLUTION" not in out
    assert f'    raise NotImplementedError("{STUB_MESSAGE}")' in out
    ns: dict = {}
    with pytest.raises(NotImplementedError, match=re.escape(STUB_MESSAGE)):
        exec(compile(out, "<student>", "exec"), ns)  # noqa: S102


def test_student_source_written_answers_and_hidden_tests():
    src = "x = 1\n### BEGIN SOLUTION\n# because it is flat\n### END SOLUTION\n" \
          "### BEGIN HIDDEN TESTS\nassert x == 1\n### END HIDDEN TESTS\nprint(x)"
    out = student_source(src)
    assert "# YOUR ANSWER HERE" in out and "flat" not in out and "NotImplementedError" not in out
    assert "assert x == 1" not in out and out.endswith("print(x)")
    assert hidden_tests(src) == "assert x == 1"


@pytest.mark.parametrize("src", ["### BEGIN SOLUTION\nx = 1", "x = 1\n### END SOLUTION",
                                 "### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION"])
def test_student_source_rejects_unbalanced_markers(src):
    with pytest.raises(ValueError, match="cell"):
        student_source(src)


def test_student_versions_of_every_chapter(tmp_path):
    """`make student` on the book: no solution left, outputs of solution/grader cells cleared."""
    paths = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
    written = write_student_versions(paths, tmp_path)
    assert [w.name for w in written] == [p.name for p in paths]
    for src_path, dst in zip(paths, written):
        src, out = nbformat.read(src_path, as_version=4), nbformat.read(dst, as_version=4)
        assert len(src.cells) == len(out.cells)
        assert f"blob/student/{dst.name})" in out.cells[0].source, "the badge opens the student copy"
        for a, b in list(zip(src.cells, out.cells))[1:]:
            if not is_solution_cell(a):
                if "check_" not in a.source:
                    assert a.source == b.source and a.get("outputs") == b.get("outputs")
                continue
            assert "BEGIN SOLUTION" not in b.source and "hide-cell" not in b.metadata.get("tags", [])
            assert b.outputs == [] and b.execution_count is None
            for region in re.findall(r"### BEGIN SOLUTION\n(.*?)\n[ \t]*### END SOLUTION", a.source, re.S):
                assert region.strip() and region not in b.source, f"{dst.name}: a solution survived"
        assert "BEGIN HIDDEN TESTS" not in json.dumps(out)


# ------------------------------------------------------------------------------------- grading

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
