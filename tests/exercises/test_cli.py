"""The exercises command line (``python -m crispedit_lite.exercises``): mistakes are one line, exit 2."""

from __future__ import annotations

import subprocess
import sys

import nbformat
import pytest

from crispedit_lite.exercises.__main__ import main
from tests.helpers import ROOT


@pytest.mark.parametrize("argv, expected", [
    ([], "the following arguments are required: command"),
    (["grade"], "the following arguments are required: paths"),
    (["grade", "x.ipynb", "--timeout", "-5"], "--timeout: expected a positive number of seconds, got '-5'"),
    (["grade", "x.ipynb", "--timeout", "inf"], "--timeout: expected a positive number of seconds, got 'inf'"),
    (["grade", "x.ipynb", "--cell-timeout", "soon"],
     "--cell-timeout: expected a number of seconds, got 'soon'"),
    (["grade", "x.ipynb", "--points", "ex-01-1"], "--points: expected LABEL=POINTS"),
    (["mark", "x.ipynb"], "invalid choice: 'mark'"),
])
def test_a_mistake_is_one_line_and_exit_2(argv, expected, capsys):
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith("error: ") and expected in err


def test_out_that_is_a_file_is_refused_before_grading(tmp_path, capsys):
    out = tmp_path / "grades"
    out.write_text("keep me")
    sub = tmp_path / "01_editing_as_constrained_optimization.ipynb"
    nbformat.write(nbformat.v4.new_notebook(), sub)
    assert main(["grade", str(sub), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is a file; expected a folder" in err and "Traceback" not in err
    assert out.read_text() == "keep me"


def test_through_the_entry_point_there_is_no_usage_dump():
    cmd = [sys.executable, "-m", "crispedit_lite.exercises", "grade", "x.ipynb", "--timeout", "-5"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "usage:" not in proc.stderr


def test_an_unreadable_submission_scores_zero_of_every_exercise(tmp_path):
    from crispedit_lite.exercises.grade import grade_paths

    name = "01_editing_as_constrained_optimization.ipynb"
    (tmp_path / name).write_bytes(b"\x89 not a notebook")
    scores = grade_paths([tmp_path / name], timeout=60, source_dir=ROOT / "notebooks", confine=False)
    assert scores and all(s.points == 0 and s.status == "failed" for s in scores)
    assert sum(s.max_points for s in scores) > 0  # 0 of N, not 0 of 0
    assert "cannot read the notebook" in scores[0].feedback
