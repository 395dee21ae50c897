"""One colour per method in every figure of the book: figure cells look colours up, they never write them.

A figure cell (``tests/book/notebook_checks.py``) that names a method (an editor's registry name or
display label, or a curvature model of :data:`~crispedit_lite.teaching.plotting.OTHER_COLORS`) must take
its colours from ``METHOD_COLORS`` / ``method_color``: no ``PALETTE[i]`` indexing, no hex literal, and
no seaborn ``hue=`` without an explicit ``palette=`` (seaborn's default palette is the colorblind one
that the editors' colours come from, so a default hue would give a metric an editor's colour). A cell
that needs an exception goes into :data:`ALLOWED` with the reason.
"""

from __future__ import annotations

import ast
import json
import re

import pytest

from crispedit_lite.editing.registry import registry
from crispedit_lite.teaching.plotting import OTHER_COLORS
from tests.book.notebook_checks import _python_source, cell_source, figure_cells
from tests.helpers import notebook_paths

#: (notebook stem, cell id) -> why the cell may write a colour down.
ALLOWED: dict[tuple[str, str], str] = {}

_CURVATURES = ("Hessian", "Gauss-Newton", "K-FAC", "EK-FAC")
_NAMES = sorted({*registry(), *(e.label for e in registry().values()), *_CURVATURES}, key=len, reverse=True)
_METHOD = re.compile(r"(?<![\w-])(" + "|".join(re.escape(n) for n in _NAMES) + r")(?![\w-])")
_HEX = re.compile(r"#[0-9a-fA-F]{6}\b|#[0-9a-fA-F]{3}\b")
_HUE = re.compile(r"\bhue\s*=")


def _code(source: str) -> str:
    """The source without comments (a comment may name a colour)."""
    lines = source.splitlines()
    return "\n".join("" if line.lstrip().startswith("#") else line.split("  #")[0] for line in lines)


def _violations(source: str) -> list[str]:
    code = _code(source)
    if not _METHOD.search(code):
        return []
    found = []
    if "PALETTE[" in code:
        found.append("PALETTE[...] indexing")
    found += [f"hex literal {h}" for h in _HEX.findall(code)]
    if _HUE.search(code):
        for node in ast.walk(ast.parse(_python_source(source) or "")):
            keys = {k.arg for k in getattr(node, "keywords", [])} if isinstance(node, ast.Call) else set()
            if "hue" in keys and "palette" not in keys:
                found.append(f"hue= without palette= on line {node.lineno}")
    return found


def test_the_rule_sees_a_method_and_a_written_colour():
    assert _violations('ax.plot(x, y, color=PALETTE[2], label="CrispEdit")')
    assert _violations('ax.bar(x, y, color="#029e73", label="FT")')
    assert _violations('sns.lineplot(data=d, hue="metric", ax=ax)\nax.set_title("FT")')
    assert not _violations('ax.plot(x, y, color=method_color("CrispEdit"))')
    assert not _violations('sns.lineplot(data=d, hue="method", palette=METHOD_COLORS)  # "FT"')
    assert not _violations('ax.plot(x, y, color=PALETTE[0])')  # no method named: a concept figure
    assert not _violations('ax.plot(x, y)  # colour #123456 for CrispEdit')  # a comment


def test_every_curvature_and_editor_has_a_colour():
    assert set(_CURVATURES) <= set(OTHER_COLORS)


@pytest.mark.parametrize("path", notebook_paths(), ids=lambda p: p.stem)
def test_figure_cells_take_method_colours_from_the_registry(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    bad = {}
    for i in figure_cells(nb):
        cell = nb["cells"][i]
        if (path.stem, cell.get("id")) in ALLOWED:
            continue
        found = _violations(cell_source(cell))
        if found:
            bad[f"cell {i} (id {cell.get('id')})"] = found
    assert not bad, (
        f"{path.name}: figure cells that name a method write colours down instead of "
        f"METHOD_COLORS / method_color: {bad}"
    )
