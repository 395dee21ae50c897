"""crispedit_lite.exercises.student: solutions become stubs, hidden tests go, every chapter's copy."""

from __future__ import annotations

import json
import re

import nbformat
import pytest

from crispedit_lite.exercises.student import (
    STUB_MESSAGE,
    hidden_tests,
    is_solution_cell,
    student_source,
    write_student_versions,
)
from tests.helpers import NOTEBOOK_DIR


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
