"""Helpers of the notebook tests: which cells draw a figure, and the guard against reading the checkout.

**Figure cells.** A code cell *draws a figure* when, outside any ``def``/``class``/``lambda`` body, it
calls

* ``plt.show``, ``plt.subplots``, ``plt.figure``, ``plt.subplot`` or ``plt.subplot_mosaic``;
* ``.plot(...)`` or ``.plot.<kind>(...)`` on anything (an Axes, a pandas object);
* another drawing method (``scatter``, ``bar``, ``barh``, ``hist``, ``imshow``, ``matshow``, ``pcolormesh``,
  ``contour(f)``, ``errorbar``, ``fill_between``, ``step``, ``stairs``, ``boxplot``, ``violinplot``,
  ``pie``, ``hexbin``, ``loglog``, ``semilogx``, ``semilogy``, ``stackplot``) on ``plt`` or on an Axes
  by the book's names: ``ax``, ``ax2``, ``axes[0]``, ``axs[i, j]`` (``tensor.scatter`` and
  ``optimizer.step`` draw nothing);
* a seaborn function ``sns.<name>`` whose name ends in ``plot`` or is ``heatmap`` / ``clustermap``;
* a library figure function: a name ending in ``_figure`` or ``_diagram`` or starting with ``plot_``
  (``cpu_table.pareto_figure``, ``run_report.plot_run``), or anything called on ``diagrams``.

Such a cell must carry an ``image/png`` (or ``image/svg+xml``) output in the committed notebook, and its
page must show that many images (``tests/test_notebooks.py``, ``tests/test_book_build.py``).

**The checkout guard.** :func:`guard_environment` prepares an IPython profile whose startup file, run
by every kernel started with that environment, changes the kernel's working directory to a folder
outside the checkout and installs an audit hook (``sys.addaudithook``) that raises ``PermissionError``
on any ``open`` (and any directory listing) of a path inside the repository, except the imported
``crispedit_lite`` package itself and the Python installation (a ``.venv`` inside the checkout). nbval's
kernels get it from ``tests/conftest.py``: every chapter is then executed as on Colab, where no checkout
exists, and a chapter that reads a repository file fails its cell.
"""

from __future__ import annotations

import ast
import os
import shutil
from pathlib import Path

_PLT = {"show", "subplots", "figure", "subplot", "subplot_mosaic"}
_DRAW = {"plot", "scatter", "bar", "barh", "hist", "imshow", "matshow", "pcolormesh", "contour", "contourf",
         "errorbar", "fill_between", "step", "stairs", "boxplot", "violinplot", "pie", "hexbin", "loglog",
         "semilogx", "semilogy", "stackplot"}
_SEABORN_OTHER = {"heatmap", "clustermap"}


def _root_name(expr: ast.expr) -> str | None:
    """The variable a receiver starts from: ``axes[0]`` -> "axes", ``self.ax`` -> "self"."""
    while isinstance(expr, (ast.Attribute, ast.Subscript, ast.Call)):
        expr = expr.func if isinstance(expr, ast.Call) else expr.value
    return expr.id if isinstance(expr, ast.Name) else None


def _call_name(func: ast.expr) -> tuple[str | None, str]:
    """``(owner, name)`` of a call: ``plt.show`` -> ("plt", "show"), ``x.plot.bar`` -> ("plot", "bar")."""
    if isinstance(func, ast.Attribute):
        value = func.value
        owner = value.id if isinstance(value, ast.Name) else value.attr if isinstance(value, ast.Attribute) \
            else None
        return owner, func.attr
    if isinstance(func, ast.Name):
        return None, func.id
    return None, ""


def _is_figure_call(node: ast.Call) -> bool:
    owner, name = _call_name(node.func)
    if owner == "plt":
        return name in _PLT or name in _DRAW
    if owner == "sns":
        return name.endswith("plot") or name in _SEABORN_OTHER
    if owner == "diagrams":
        return True
    if name.endswith(("_figure", "_diagram")) or name.startswith("plot_"):
        return True
    if not isinstance(node.func, ast.Attribute):
        return False
    if name == "plot" or owner == "plot":
        return True
    receiver = _root_name(node.func.value) or ""
    return name in _DRAW and (receiver.startswith("ax") or receiver == "fig")


def _python_source(source: str) -> str | None:
    """The cell without IPython syntax (``%line`` magics and ``!shell`` lines); ``None`` for ``%%`` cells."""
    if source.lstrip().startswith("%%"):
        return None
    lines = []
    for line in source.splitlines():
        stripped = line.lstrip()
        lines.append(line[: len(line) - len(stripped)] + "pass" if stripped.startswith(("%", "!")) else line)
    return "\n".join(lines)


def draws_a_figure(source: str) -> bool:
    """Whether a code cell's source draws a figure (the rule of the module docstring)."""
    code = _python_source(source)
    if code is None:
        return False
    tree = ast.parse(code)
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            continue  # a definition draws nothing until it is called
        if isinstance(node, ast.Call) and _is_figure_call(node):
            return True
        stack.extend(ast.iter_child_nodes(node))
    return False


def cell_source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def figure_cells(nb: dict) -> list[int]:
    """Indices (in ``nb["cells"]``) of the code cells that draw a figure."""
    return [i for i, c in enumerate(nb["cells"])
            if c["cell_type"] == "code" and draws_a_figure(cell_source(c))]


def has_image(cell: dict) -> bool:
    return any("image/png" in o.get("data", {}) or "image/svg+xml" in o.get("data", {})
               for o in cell.get("outputs", []))


# --- the checkout guard --------------------------------------------------------------------------------

GUARD_MESSAGE = "read of the checkout from a notebook"

_STARTUP = '''\
"""Run by IPython at kernel start (tests/book/notebook_checks.py): no reads of the checkout, cwd elsewhere."""


def _crispedit_guard():
    import importlib.util
    import os
    import sys

    root = os.environ.get("CRISPEDIT_GUARD_ROOT")
    if not root:
        return
    cwd = os.environ.get("CRISPEDIT_GUARD_CWD")
    if cwd:
        os.chdir(cwd)
    root = os.path.realpath(root)
    spec = importlib.util.find_spec("crispedit_lite")
    allowed = {os.path.dirname(os.path.realpath(spec.origin))} if spec and spec.origin else set()
    allowed |= {os.path.realpath(p) for p in (sys.prefix, sys.exec_prefix, sys.base_prefix)}
    allowed = tuple(p + os.sep for p in allowed)
    inside = root + os.sep
    events = frozenset({"open", "os.listdir", "os.scandir"})
    realpath, join, getcwd, fsdecode = os.path.realpath, os.path.join, os.getcwd, os.fsdecode

    def hook(event, args):
        if event not in events or not args or args[0] is None or isinstance(args[0], int):
            return
        try:
            path = realpath(join(getcwd(), fsdecode(args[0])))
        except (TypeError, ValueError, OSError):
            return
        if path == root and event != "open":
            return  # listing the root itself (an import path entry) reads no file
        if (path + os.sep).startswith(inside) and not (path + os.sep).startswith(allowed):
            raise PermissionError(f"{MESSAGE}: {path} (a chapter reads package data through "
                                  "crispedit_lite, never a file of the repository)")

    sys.addaudithook(hook)


_crispedit_guard()
del _crispedit_guard
'''


def guard_environment(root: Path, base: Path) -> dict[str, str]:
    """Prepare ``base`` (outside ``root``) and return the environment variables that guard a kernel.

    ``base/notebooks`` receives copies of ``root/notebooks/*.ipynb`` and is the kernels' working
    directory; ``base/ipython`` is the IPython profile whose startup file installs the guard.
    """
    root, base = Path(root).resolve(), Path(base).resolve()
    if base == root or root in base.parents:
        raise ValueError(f"the guard's folder {base} lies inside the checkout {root}")
    work = base / "notebooks"
    work.mkdir(parents=True, exist_ok=True)
    for nb in sorted((root / "notebooks").glob("*.ipynb")):
        shutil.copy2(nb, work / nb.name)
    startup = base / "ipython" / "profile_default" / "startup"
    startup.mkdir(parents=True, exist_ok=True)
    (startup / "00-crispedit-guard.py").write_text(_STARTUP.replace("{MESSAGE}", GUARD_MESSAGE),
                                                   encoding="utf-8")
    return {"IPYTHONDIR": str(base / "ipython"), "CRISPEDIT_GUARD_ROOT": str(root),
            "CRISPEDIT_GUARD_CWD": str(work)}


def environ_with(env: dict[str, str]) -> dict[str, str]:
    """``os.environ`` updated with ``env`` (for a kernel started by hand)."""
    out = dict(os.environ)
    out.update(env)
    return out
