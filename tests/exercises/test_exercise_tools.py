"""The chapters as they are, in nbgrader: student versions without solutions, autograding that works.

nbgrader is not a dependency of the book: install it to run these tests
(``pip install 'nbgrader>=0.9.6,<0.10'``). They build a course folder with every chapter as one
assignment and run the real ``nbgrader`` commands: ``generate_assignment`` must remove every
solution and hidden test, and ``autograde`` of chapter 2 must give a solved notebook every automatic
point and the released stub none (written answers wait for manual grading). otter-grader cannot read
these notebooks as they are (the book page ``instructors`` says why), so it is not tested here.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT

NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
NBGRADER = shutil.which("nbgrader", path=str(Path(sys.executable).parent)) or shutil.which("nbgrader")
pytestmark = [
    pytest.mark.notebook,
    pytest.mark.slow,
    pytest.mark.skipif(NBGRADER is None, reason="nbgrader is not installed ('nbgrader>=0.9.6,<0.10')"),
]


def _run(*args: str, cwd: Path, timeout: float = 1200) -> subprocess.CompletedProcess:
    env = dict(
        os.environ,
        PATH=f"{Path(NBGRADER).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    )
    out = subprocess.run([NBGRADER, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, (
        f"nbgrader {' '.join(args)} failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}"
    )
    return out


@pytest.fixture(scope="module")
def course(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("course")
    (root / "nbgrader_config.py").write_text(
        "c = get_config()\n"
        f"c.CourseDirectory.root = {str(root)!r}\n"
        "c.CourseDirectory.course_id = 'crispedit'\n"
        "c.ExecutePreprocessor.timeout = 900\n"
    )
    for nb in NOTEBOOKS:
        dst = root / "source" / nb.stem[:2] / nb.name
        dst.parent.mkdir(parents=True)
        shutil.copy(nb, dst)
    return root


def _solution_regions(path: Path) -> list[str]:
    nb = json.loads(path.read_text(encoding="utf-8"))
    out = []
    for c in nb["cells"]:
        src = "".join(c["source"])
        out += [
            r
            for r in re.findall(r"### BEGIN SOLUTION\n(.*?)\n[ \t]*### END SOLUTION", src, re.S)
            if r.strip()
        ]
    return out


def test_generate_assignment_removes_every_solution_and_hidden_test(course):
    for nb in NOTEBOOKS:
        _run("generate_assignment", nb.stem[:2], "--force", cwd=course)
        released = course / "release" / nb.stem[:2] / nb.name
        text = released.read_text(encoding="utf-8")
        assert "BEGIN SOLUTION" not in text and "BEGIN HIDDEN TESTS" not in text, nb.name
        for region in _solution_regions(nb):
            assert json.dumps(region)[1:-1] not in text, f"{nb.name}: a solution survived"


def test_autograde_gives_the_solution_every_automatic_point_and_the_stub_none(course):
    _run("generate_assignment", "02", "--force", cwd=course)
    name = NOTEBOOKS[1].name
    for student, src in (
        ("solved", course / "source" / "02" / name),
        ("stub", course / "release" / "02" / name),
    ):
        dst = course / "submitted" / student / "02" / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dst)
        _run("db", "student", "add", student, cwd=course)
    _run("autograde", "02", "--force", cwd=course)
    _run("export", cwd=course)
    rows = {r["student_id"]: r for r in csv.DictReader(open(course / "grades.csv", encoding="utf-8"))}
    auto = 2.0  # exercises 2.1 and 2.2; the written answers (2.1-2.3) are graded by hand
    assert float(rows["solved"]["raw_score"]) == auto
    assert float(rows["stub"]["raw_score"]) == 0.0
    assert float(rows["solved"]["max_score"]) > auto  # the manual points are in the total
