"""Student versions and the grading command (``crispedit_lite.exercises.student`` / ``.grade``).

The grading tests run the real command on a small notebook named like chapter 2, made of the
book's own solution cells (two function answers, one table and one written answer), so each
submission takes seconds. Attacks on the grader are in ``tests/exercises/test_exercise_attacks.py``.
"""

from __future__ import annotations

import csv
import json
import re

import nbformat
import pytest

from crispedit_lite.exercises.__main__ import main
from crispedit_lite.exercises.grade import exercise_cells, grade_notebook, grade_paths
from crispedit_lite.exercises.isolation import landlock_abi
from crispedit_lite.exercises.student import (
    STUB_MESSAGE,
    hidden_tests,
    is_grader_cell,
    is_solution_cell,
    student_notebook,
    student_source,
    write_student_versions,
)
from tests.helpers import NOTEBOOK_DIR

NAME = "02_bregman_to_gauss_newton.ipynb"


# ------------------------------------------------------------------------------------ student.py


def test_student_source_replaces_solutions_at_their_indentation():
    src = (
        "# reference solution\ndef f(x):\n    ### BEGIN SOLUTION\n    return 2 * x\n"
        "    ### END SOLUTION\n\ny = f(1)"
    )
    out = student_source(src)
    assert "return 2 * x" not in out and "BEGIN SOLUTION" not in out
    assert f'    raise NotImplementedError("{STUB_MESSAGE}")' in out
    ns: dict = {}
    with pytest.raises(NotImplementedError, match=re.escape(STUB_MESSAGE)):
        exec(compile(out, "<student>", "exec"), ns)  # noqa: S102


def test_student_source_written_answers_and_hidden_tests():
    src = (
        "x = 1\n### BEGIN SOLUTION\n# because it is flat\n### END SOLUTION\n"
        "### BEGIN HIDDEN TESTS\nassert x == 1\n### END HIDDEN TESTS\nprint(x)"
    )
    out = student_source(src)
    assert "# YOUR ANSWER HERE" in out and "flat" not in out and "NotImplementedError" not in out
    assert "assert x == 1" not in out and out.endswith("print(x)")
    assert hidden_tests(src) == "assert x == 1"


@pytest.mark.parametrize(
    "src",
    [
        "### BEGIN SOLUTION\nx = 1",
        "x = 1\n### END SOLUTION",
        "### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION",
    ],
)
def test_student_source_rejects_unbalanced_markers(src):
    with pytest.raises(ValueError, match="cell"):
        student_source(src)


def test_student_versions_of_every_chapter(tmp_path):
    """`make student` on the book: no solution left, outputs of answer-revealing cells cleared."""
    paths = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
    written = write_student_versions(paths, tmp_path)
    assert [w.name for w in written] == [p.name for p in paths]
    for src_path, dst in zip(paths, written):
        src, out = nbformat.read(src_path, as_version=4), nbformat.read(dst, as_version=4)
        revealing = [m for c in src.cells for m in c.metadata.get("exercise", {}).get("clear_outputs_of", [])]
        assert len(src.cells) == len(out.cells)
        assert f"blob/student/{dst.name})" in out.cells[0].source, "the badge opens the student copy"
        for a, b in list(zip(src.cells, out.cells))[1:]:
            if any(m in a.source for m in revealing):
                assert b.outputs == [], f"{dst.name}: a cell that prints an answer keeps its output"
                continue
            if not is_solution_cell(a):
                if not is_grader_cell(a):
                    assert a.source == b.source and a.get("outputs") == b.get("outputs")
                continue
            assert "BEGIN SOLUTION" not in b.source and "hide-cell" not in b.metadata.get("tags", [])
            assert b.outputs == [] and b.execution_count is None
            for region in re.findall(r"### BEGIN SOLUTION\n(.*?)\n[ \t]*### END SOLUTION", a.source, re.S):
                assert region.strip() and region not in b.source, f"{dst.name}: a solution survived"
        assert "BEGIN HIDDEN TESTS" not in json.dumps(out)


def test_answers_printed_by_the_chapter_are_cleared_in_the_student_version():
    """Exercise 4.3 asks for a number that the chapter's error table prints: that output goes."""
    nb = nbformat.read(NOTEBOOK_DIR / "04_kfac_step_by_step.ipynb", as_version=4)
    table = next(
        i for i, c in enumerate(nb.cells) if "(sampled: one pass)" in c.source and c.cell_type == "code"
    )
    nb.cells[table].outputs = [nbformat.v4.new_output("stream", name="stdout", text="0.027\n")]
    out = student_notebook(nb, "04_kfac_step_by_step.ipynb")
    assert out.cells[table].outputs == [] and nb.cells[table].outputs


# ------------------------------------------------------------------------------------- grading


def _solution(nn_: str, label: str) -> list:
    """The statement, solution and grader cells of one exercise of a chapter."""
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
    """A quick notebook named like chapter 2: bregman_mse, project_out, a sweep table, a written answer."""
    cells = [
        nbformat.v4.new_markdown_cell("# 2. A small chapter"),
        nbformat.v4.new_code_cell(
            "import copy\nimport pandas as pd\nimport torch\nimport torch.nn.functional as F\n"
            "from crispedit_lite.exercises import ch01, ch02"
        ),
        nbformat.v4.new_markdown_cell("## Exercises"),
    ]
    cells += _solution("02", "ex-02-1")
    proj = _solution("01", "ex-01-2")
    proj[0].source = proj[0].source.replace("ex-01-2", "ex-02-2")
    cells += proj
    sweep_md = nbformat.v4.new_markdown_cell("```{exercise}\n:label: ex-02-3\n\nA table.\n```")
    sweep = nbformat.v4.new_code_cell(
        "# reference solution\n### BEGIN SOLUTION\nsweep = pd.DataFrame({'lambda': [0.0, 1.0, 10.0], "
        "'edit accuracy': [1.0, 1.0, 0.8], 'old-task accuracy': [0.3, 0.6, 0.9], "
        "'KL to base': [2.0, 0.5, 0.1]})\n"
        "### END SOLUTION",
        metadata={"tags": ["hide-cell"]},
    )
    cells += [sweep_md, sweep, nbformat.v4.new_code_cell("ch01.check_penalty_sweep(sweep)")]
    written = _solution("02", "ex-02-3")  # a written answer
    written[0].source = written[0].source.replace("ex-02-3", "ex-02-4")
    cells += written
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def _write(nb, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """source/ (the instructor's), subs/solved/ and subs/student/ (the handed-out stub version)."""
    root = tmp_path_factory.mktemp("grading")
    solved = small_notebook()
    _write(solved, root / "source" / NAME)
    _write(solved, root / "subs" / "solved" / NAME)
    _write(student_notebook(solved, NAME), root / "subs" / "student" / NAME)
    return root


LABELS = ("ex-02-1", "ex-02-2", "ex-02-3")


@pytest.mark.notebook
def test_grade_folder_with_a_solved_and_a_student_notebook(folder, capsys):
    out = folder / "grades"
    rc = main(
        [
            "grade",
            str(folder / "subs"),
            "--source",
            str(folder / "source"),
            "--out",
            str(out),
            "--timeout",
            "240",
        ]
    )
    assert rc == 0
    rows = list(csv.DictReader(open(out / "grades.csv", encoding="utf-8")))
    by = {(("solved" if "solved" in r["notebook"] else "student"), r["exercise"]): r for r in rows}
    assert set(by) == {(w, e) for w in ("solved", "student") for e in (*LABELS, "ex-02-4")}
    for e in LABELS:
        assert by["solved", e]["status"] == "passed" and float(by["solved", e]["points"]) == 1.0, by[
            "solved", e
        ]
        assert by["student", e]["status"] == "failed" and float(by["student", e]["points"]) == 0.0
    for e in ("ex-02-1", "ex-02-2"):
        assert STUB_MESSAGE in by["student", e]["feedback"]
    assert by["solved", "ex-02-4"]["status"] == "manual" and float(by["solved", "ex-02-4"]["max_points"]) == 0
    report = {d["notebook"].split("/")[-2]: d for d in json.loads((out / "grades.json").read_text())}
    assert (report["solved"]["points"], report["solved"]["max_points"]) == (3.0, 3.0)
    assert report["student"]["points"] == 0.0
    assert "total 3/6" in capsys.readouterr().out


@pytest.mark.notebook
def test_time_limits_give_partial_credit_and_a_broken_chapter_stops(folder):
    nb = small_notebook()
    graders = exercise_cells(nb)
    slow = nb.cells[graders["ex-02-3"] - 1]
    assert is_solution_cell(slow)
    slow.source = "import time\ntime.sleep(600)\n" + slow.source
    path = _write(nb, folder / "slow" / NAME)
    scores = {s.exercise: s for s in grade_notebook(path, timeout=300, cell_timeout=25)}
    assert scores["ex-02-1"].status == "passed" and scores["ex-02-2"].status == "passed"
    assert scores["ex-02-3"].status == "failed" and "time limit" in scores["ex-02-3"].feedback
    # the notebook's own deadline stops everything after it
    scores = grade_notebook(path, timeout=2)
    assert all(s.points == 0 for s in scores)
    assert all("limit" in s.feedback or "start" in s.feedback for s in scores if s.status != "manual")

    broken = small_notebook()
    broken.cells[1].source += "\nraise RuntimeError('the chapter body is broken')"
    path = _write(broken, folder / "broken" / NAME)
    scores = grade_notebook(path, timeout=120)
    assert [s.status for s in scores] == ["not run"] * 3 + ["manual"]
    assert all("cell 1" in s.feedback and "RuntimeError" in s.feedback for s in scores[:3])


@pytest.mark.notebook
def test_instructor_graders_and_hidden_tests_are_run(folder):
    source = small_notebook()
    graders = exercise_cells(source)
    g1 = source.cells[graders["ex-02-1"]]
    g1.source += (
        "\n### BEGIN HIDDEN TESTS\n"
        "assert float(bregman_mse(torch.ones(2, 3), torch.zeros(2, 3))) == 3.0\n"
        "### END HIDDEN TESTS"
    )
    _write(source, folder / "source_hidden" / NAME)
    sub = student_notebook(source, NAME)
    assert "HIDDEN" not in sub.cells[graders["ex-02-1"]].source
    # ex-02-1: passes the visible grader but not the hidden test (special-cases the hidden test's shape)
    sub.cells[graders["ex-02-1"] - 1].source = (
        "def bregman_mse(out, base_out):\n"
        "    if out.shape == (2, 3):\n        return torch.tensor(0.0)\n"
        "    return ((out - base_out) ** 2).sum(-1).mean()"
    )
    # ex-02-2: a wrong solution whose grader cell was replaced by a fake success
    sub.cells[graders["ex-02-2"] - 1].source = "def project_out(g, U):\n    return g"
    sub.cells[graders["ex-02-2"]].source = "print('correct')  # ch01.check_project_out(project_out)"
    path = _write(sub, folder / "tampered" / NAME)
    own = {s.exercise: s.status for s in grade_paths([path], timeout=240)}
    assert own["ex-02-1"] == "passed"  # without the instructor's cell: only the visible check
    assert own["ex-02-2"] != "passed"  # no call left to judge: its printout earns nothing
    scores = {s.exercise: s for s in grade_paths([path], timeout=240, source_dir=folder / "source_hidden")}
    assert scores["ex-02-1"].status == "failed" and "assertion" in scores["ex-02-1"].feedback
    assert scores["ex-02-2"].status == "failed"


def test_grade_reports_bad_paths_without_crashing(tmp_path, capsys):
    assert main(["grade", str(tmp_path / "missing.ipynb")]) == 2
    assert "does not exist" in capsys.readouterr().err
    bad = tmp_path / "00_bad.ipynb"
    bad.write_text("not json")
    [score] = grade_notebook(bad)
    assert score.status == "failed" and "cannot read" in score.feedback
    assert main(["grade", str(tmp_path), "--points", "ex-01-1"]) == 2


def test_landlock_is_what_the_tests_of_the_attacks_rely_on():
    """Reported for the record: the attack tests skip their confinement checks without Landlock."""
    assert landlock_abi() >= 0
