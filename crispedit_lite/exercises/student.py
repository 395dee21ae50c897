r"""Student versions of the chapters: solutions become stubs, hidden tests disappear.

The committed notebooks are the solution versions the book renders. A reference solution marks what
a student writes with the markers that nbgrader and otter-grader share::

    def project_out(g, U):
        ### BEGIN SOLUTION
        return g - U @ (U.T @ g)
        ### END SOLUTION

and checks that must not be shown with ``### BEGIN HIDDEN TESTS`` / ``### END HIDDEN TESTS``.
:func:`student_source` replaces each solution region by a stub at the marker's indentation
(``raise NotImplementedError``; a region of comments only, a written answer, becomes
``# YOUR ANSWER HERE``) and deletes hidden tests; :func:`student_notebook` does that to every code
cell, clears the outputs of the cells a student answers or grades and of the chapter cells whose
output would give an answer away (an exercise's markdown cell lists them in its metadata,
``{"exercise": {"clear_outputs_of": [a substring of the cell's source, ...]}}``), and points the Colab
badge at the student version.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Iterable
from pathlib import Path

import nbformat

from crispedit_lite.atomic import atomic_open

__all__ = [
    "BEGIN_SOLUTION", "END_SOLUTION", "BEGIN_HIDDEN", "END_HIDDEN", "STUB_MESSAGE", "COLAB_STUDENT_BASE",
    "student_source", "hidden_tests", "is_solution_cell", "is_grader_cell", "student_notebook",
    "write_student_versions",
]

BEGIN_SOLUTION, END_SOLUTION = "### BEGIN SOLUTION", "### END SOLUTION"
BEGIN_HIDDEN, END_HIDDEN = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
STUB_MESSAGE = "your solution here (see the exercise above)"
#: Where the published student notebooks live: a ``student`` branch holding ``_build/student``.
COLAB_STUDENT_BASE = "https://colab.research.google.com/github/crispedit-lite/crispedit-lite/blob/student/"
_BADGE = re.compile(r"\(https://colab\.research\.google\.com/github/[^)\s]*?/([^/)\s]+\.ipynb)\)")
_GRADER = re.compile(r"\bch\d{2}\.check_\w+\(")


def _regions(lines: list[str], begin: str, end: str, where: str) -> list[tuple[int, int]]:
    """``(start, stop)`` line indices of the marker pairs (inclusive), checked for nesting."""
    out, start = [], None
    for i, line in enumerate(lines):
        text = line.strip()
        if text == begin:
            if start is not None:
                raise ValueError(f"{where}: {begin!r} at line {i + 1} inside another region")
            start = i
        elif text == end:
            if start is None:
                raise ValueError(f"{where}: {end!r} at line {i + 1} without {begin!r}")
            out.append((start, i))
            start = None
    if start is not None:
        raise ValueError(f"{where}: {begin!r} at line {start + 1} is never closed by {end!r}")
    return out


def student_source(source: str, where: str = "cell") -> str:
    """Replace solution regions by stubs and delete hidden-test regions of one cell's source.

    Args:
        source: the cell source.
        where: a name for error messages (notebook and cell).

    Returns:
        The student's source: each solution region is one stub line at the marker's indentation.

    Raises:
        ValueError: when markers are unbalanced or nested.

    Listed on the book page ``api``.
    """
    lines = source.split("\n")
    cut = {}
    for a, b in _regions(lines, BEGIN_HIDDEN, END_HIDDEN, where):
        cut[a] = (b, [])
    for a, b in _regions(lines, BEGIN_SOLUTION, END_SOLUTION, where):
        indent = re.match(r"[ \t]*", lines[a]).group(0)
        body = [x for x in lines[a + 1 : b] if x.strip()]
        if body and all(x.strip().startswith("#") for x in body):
            stub = [f"{indent}# YOUR ANSWER HERE"]
        else:
            stub = [f"{indent}# YOUR CODE HERE", f'{indent}raise NotImplementedError("{STUB_MESSAGE}")']
        cut[a] = (b, stub)
    if not cut:
        return source
    out, i = [], 0
    while i < len(lines):
        if i in cut:
            stop, stub = cut[i]
            out.extend(stub)
            i = stop + 1
        else:
            out.append(lines[i])
            i += 1
    return "\n".join(out).rstrip("\n")


def hidden_tests(source: str, where: str = "cell") -> str:
    """The code inside the hidden-test regions of ``source`` (markers dropped), ``""`` if none.

    Listed on the book page ``api``.
    """
    lines = source.split("\n")
    parts = ["\n".join(lines[a + 1 : b]) for a, b in _regions(lines, BEGIN_HIDDEN, END_HIDDEN, where)]
    return "\n".join(p for p in parts if p.strip())


def is_solution_cell(cell: dict) -> bool:
    """A code cell holding a reference solution: solution markers, or the hidden ``# reference solution``.

    Listed on the book page ``api``.
    """
    if cell.get("cell_type") != "code":
        return False
    src = cell.get("source", "")
    tags = cell.get("metadata", {}).get("tags", [])
    return BEGIN_SOLUTION in src or ("hide-cell" in tags and src.lstrip().startswith("# reference solution"))


def is_grader_cell(cell: dict) -> bool:
    """A code cell that calls a grader ``chNN.check_...``.

    Listed on the book page ``api``.
    """
    return cell.get("cell_type") == "code" and bool(_GRADER.search(cell.get("source", "")))


def student_notebook(nb: nbformat.NotebookNode, filename: str, colab_base: str = COLAB_STUDENT_BASE,
                     ) -> nbformat.NotebookNode:
    """The student version of one solution notebook (the input is not modified).

    Solution cells lose their solutions (a cell with the legacy ``# reference solution`` header and no
    markers becomes one stub), their ``hide-cell`` tag and their outputs; grader cells, and chapter
    cells named by an exercise's ``clear_outputs_of`` metadata, lose their outputs; hidden tests go
    everywhere; the Colab badge opens ``colab_base + filename``.

    Args:
        nb: the executed solution notebook.
        filename: the student file's name (for the badge), such as
            ``01_editing_as_constrained_optimization.ipynb``.
        colab_base: URL prefix of the published student notebooks.

    Listed on the book page ``api``.
    """
    out = copy.deepcopy(nb)
    revealing = [m for c in out.cells if c.cell_type == "markdown"
                 for m in c.get("metadata", {}).get("exercise", {}).get("clear_outputs_of", [])]
    for i, cell in enumerate(out.cells):
        where = f"{filename}, cell {i}"
        if cell.cell_type == "markdown" and i == 0:
            cell.source = _BADGE.sub(lambda m: f"({colab_base}{filename})", cell.source)
        if cell.cell_type != "code":
            continue
        solution, grader = is_solution_cell(cell), is_grader_cell(cell)
        src = cell.source
        if solution and BEGIN_SOLUTION not in src:
            src = f'# YOUR CODE HERE\nraise NotImplementedError("{STUB_MESSAGE}")'
        src = student_source(src, where)
        if solution:
            src = src.replace("# reference solution", "# your solution", 1)
            tags = [t for t in cell.metadata.get("tags", []) if t != "hide-cell"]
            cell.metadata["tags"] = tags
            if not tags:
                cell.metadata.pop("tags")
        cell.source = src
        if solution or grader or any(m in cell.source for m in revealing):
            cell.outputs, cell.execution_count = [], None
    return out


def write_student_versions(paths: Iterable[str | os.PathLike], out_dir: str | os.PathLike,
                           colab_base: str = COLAB_STUDENT_BASE) -> list[Path]:
    """Write the student version of each notebook to ``out_dir`` (same file names, atomic writes).

    Raises:
        ValueError: when a path is not a notebook.

    Listed on the book page ``api``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for p in map(Path, paths):
        if p.suffix != ".ipynb" or not p.is_file():
            raise ValueError(f"student: {p} is not a notebook file (*.ipynb)")
        nb = student_notebook(nbformat.read(p, as_version=4), p.name, colab_base)
        dst = out_dir / p.name
        with atomic_open(dst) as f:
            nbformat.write(nb, f)
        written.append(dst)
    return written
