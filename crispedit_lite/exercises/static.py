r"""What the grader reads from a notebook without running it: functions, imports, names.

The grading command never trusts the student's kernel for a function answer. It reads the
function's source from the submitted file instead: :func:`replay_statements` collects the
top-level ``import``, ``def`` and ``class`` statements of every code cell, and the assignments of
literal constants (the parameters cell), in notebook order; a runner process executes them and
nothing else, so a graded function may use its arguments, the notebook's imports, functions and
constants, but not values the chapter computed (pass those as arguments). :func:`free_names` lists
the names a grader cell needs, so that the harness can fetch exactly those from the kernel or the
runner.
"""

from __future__ import annotations

import ast
import builtins
import re
from collections.abc import Iterable

__all__ = [
    "python_source",
    "replay_statements",
    "import_statements",
    "free_names",
    "defined_functions",
    "function_names",
    "referenced_names",
]

_TOP_KINDS = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def python_source(cell_source: str) -> str:
    """The cell as plain Python: IPython's ``%magics`` and ``!shell`` lines become calls.

    Listed on the book page ``api``.
    """
    try:
        from IPython.core.inputtransformer2 import TransformerManager
    except ImportError:  # without IPython, drop the lines that are not Python
        return "\n".join(x for x in cell_source.splitlines() if not x.lstrip().startswith(("%", "!")))
    return TransformerManager().transform_cell(cell_source)


def _parse(source: str) -> ast.Module | None:
    try:
        return ast.parse(python_source(source))
    except SyntaxError:
        return None


def _is_literal_assign(node: ast.stmt) -> bool:
    if isinstance(node, ast.Assign):
        targets, value = node.targets, node.value
    elif isinstance(node, ast.AnnAssign) and node.value is not None:
        targets, value = [node.target], node.value
    else:
        return False
    if not all(isinstance(t, ast.Name) for t in targets):
        return False
    try:
        ast.literal_eval(value)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False
    return True


def _bound_names(node: ast.stmt) -> list[str]:
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return [(a.asname or a.name).split(".")[0] for a in node.names]
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return [node.name]
    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
    return [t.id for t in targets if isinstance(t, ast.Name)]


def replay_statements(sources: Iterable[str]) -> list[tuple[list[str], str]]:
    """``(bound names, source)`` of each replayable top-level statement of the given cells, in order.

    Replayable: ``import``, ``from ... import``, ``def``, ``class`` and ``NAME = <literal>``.
    Everything else (calls, loops, assignments of computed values, magics) is left out. A cell that
    is not valid Python contributes nothing.

    Listed on the book page ``api``.
    """
    out = []
    for src in sources:
        tree = _parse(src)
        if tree is None:
            continue
        for node in tree.body:
            if isinstance(node, _TOP_KINDS) or _is_literal_assign(node):
                if isinstance(node, ast.ImportFrom) and any(a.name == "*" for a in node.names):
                    continue
                out.append((_bound_names(node), ast.unparse(node)))
    return out


def import_statements(sources: Iterable[str]) -> list[tuple[list[str], str]]:
    """``(bound names, source)`` of the top-level import statements of the given cells.

    Listed on the book page ``api``.
    """
    return [(names, src) for names, src in replay_statements(sources) if src.startswith(("import ", "from "))]


def defined_functions(sources: Iterable[str]) -> set[str]:
    """Names bound by a top-level ``def`` in the given cells.

    Listed on the book page ``api``.
    """
    names = set()
    for src in sources:
        tree = _parse(src)
        for node in tree.body if tree is not None else []:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                names.add(node.name)
    return names


def function_names(replay: list[tuple[list[str], str]]) -> set[str]:
    """Names that the replayed statements bind with ``def`` or ``class``.

    Listed on the book page ``api``.
    """
    return {names[0] for names, src in replay if re.match(r"(async\s+)?(def|class)\s", src)}


class _Names(ast.NodeVisitor):
    def __init__(self) -> None:
        self.loaded: list[str] = []
        self.bound: set[str] = set()

    def visit_Name(self, node: ast.Name) -> None:  # noqa: N802
        (self.loaded.append if isinstance(node.ctx, ast.Load) else self.bound.add)(node.id)

    def visit_arg(self, node: ast.arg) -> None:  # noqa: N802
        self.bound.add(node.arg)

    def _named(self, node) -> None:
        self.bound.add(node.name)
        self.generic_visit(node)

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _named  # noqa: N815

    def visit_alias(self, node: ast.alias) -> None:  # noqa: N802
        self.bound.add((node.asname or node.name).split(".")[0])

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:  # noqa: N802
        if node.name:
            self.bound.add(node.name)
        self.generic_visit(node)


def free_names(code: str) -> list[str]:
    """Names that ``code`` reads but never binds, builtins excepted, in order of first use.

    Raises:
        SyntaxError: when ``code`` is not Python.

    Listed on the book page ``api``.
    """
    v = _Names()
    v.visit(ast.parse(python_source(code)))
    seen, out = set(v.bound) | set(dir(builtins)), []
    for name in v.loaded:
        if name not in seen:
            seen.add(name)
            out.append(name)
    return out


def referenced_names(source: str) -> set[str]:
    """Every identifier that ``source`` mentions: names, attribute names and imported names.

    Listed on the book page ``api``.
    """
    tree = ast.parse(source)
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            out.add(node.id)
        elif isinstance(node, ast.Attribute):
            out.add(node.attr)
        elif isinstance(node, ast.alias):
            out.update(node.name.split("."))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.isidentifier():
            out.add(node.value)  # getattr(module, "name")
    return out


def closure_source(replay: list[tuple[list[str], str]], name: str) -> str:
    """The source of function ``name`` and of every replayed function or class it mentions, transitively."""
    defs = {names[0]: src for names, src in replay if re.match(r"(async\s+)?(def|class)\s", src)}
    out, todo, seen = [], [name], set()
    while todo:
        n = todo.pop()
        if n in seen or n not in defs:
            continue
        seen.add(n)
        out.append(defs[n])
        try:
            todo += sorted(referenced_names(defs[n]) & set(defs))
        except SyntaxError:
            continue
    return "\n\n".join(out)
