"""The package's shape: no import circles, and no module imports from a layer above its own.

Layers, lowest first (a module may import from its own layer and the layers below):

1. the method: ``atomic`` (atomic writes), ``curvature``, ``energy``, ``projector``, ``optim``,
   ``costs``, ``ekfac``, ``kfac/``, ``fastproject/``;
2. ``models/``;
3. ``data/``;
4. ``editing/``;
5. ``evaluation/``;
6. ``reproduction/``;
7. ``teaching/``;
8. ``exercises/``;
9. ``cli/`` (and ``__main__``).

Edges are read from the source with :mod:`ast` (module-level and function-level imports alike);
``from package import submodule`` counts as an edge to the submodule, not to the package.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "crispedit_lite"

LAYERS: tuple[tuple[str, ...], ...] = (
    ("atomic", "curvature", "energy", "projector", "optim", "costs", "ekfac", "kfac", "fastproject"),
    ("models",),
    ("data",),
    ("editing",),
    ("evaluation",),
    ("reproduction",),
    ("teaching",),
    ("exercises",),
    ("cli", "__main__"),
)


def modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def import_edges() -> set[tuple[str, str]]:
    """``(importer, imported)`` pairs between modules of the package."""
    mods = modules()
    edges = set()
    for name, path in mods.items():
        pkg = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                subs = [f"{mod}.{a.name}" for a in node.names if f"{mod}.{a.name}" in mods]
                targets = subs if len(subs) == len(node.names) else [mod, *subs]
            for t in targets:
                while t and t not in mods:  # import of a name inside a module
                    t = t.rsplit(".", 1)[0] if "." in t else ""
                if t and t != name:
                    edges.add((name, t))
    return edges


def _layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else ""
    for i, names in enumerate(LAYERS):
        if top in names:
            return i
    raise AssertionError(f"module {module} is in no layer of tests/test_architecture.py; add it")


def cycles(edges: set[tuple[str, str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    graph: dict[str, list[str]] = {}
    for a, b in edges:
        graph.setdefault(a, []).append(b)
        graph.setdefault(b, [])
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_circles():
    assert cycles(import_edges()) == []


def test_no_module_imports_from_a_layer_above_its_own():
    upward = sorted(f"{a} -> {b}" for a, b in import_edges()
                    if a != "crispedit_lite" and _layer(a) < _layer(b))
    assert upward == []


def test_every_module_is_in_a_layer():
    for name in modules():
        if name != "crispedit_lite":
            _layer(name)


@pytest.mark.parametrize("broken", [{("a", "b"), ("b", "a")}, {("a", "b"), ("b", "c"), ("c", "a")}])
def test_the_cycle_finder_finds_circles(broken):
    assert cycles(broken) != []
