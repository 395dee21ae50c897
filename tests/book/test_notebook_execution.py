"""Notebook kernels as the book starts them: figures inline, and no reads of the checkout.

* ``make book`` (jupyter-book, which executes through nbclient) and ``make test`` (nbval) start kernels
  that inherit their environment. ipykernel installs its inline backend only when ``MPLBACKEND`` is
  unset, so an exported ``MPLBACKEND=Agg`` silently removes every figure. The Makefile unexports it,
  ``tests/conftest.py`` keeps it out of nbval's kernels, and each chapter's ``set_style()`` switches a
  kernel to ``%matplotlib inline`` whatever the environment says. Each path is checked by executing a
  two-cell notebook and looking for its ``image/png`` output.
* nbval's kernels run outside the checkout with an audit hook against reading repository files
  (``tests/book/notebook_checks.py``, wired in ``tests/conftest.py``): a notebook that reads the checkout's
  ``README.md`` fails under it, one that reads package data passes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.book.notebook_checks import GUARD_MESSAGE, environ_with, guard_environment
from tests.helpers import ROOT

pytestmark = pytest.mark.notebook

PLOT = "import matplotlib.pyplot as plt\nfig, ax = plt.subplots()\nax.plot([0, 1], [1, 0])\nplt.show()"
STYLE = "from crispedit_lite.teaching.plotting import set_style\nset_style()"


def _execute(cells: list[str], env: dict[str, str], cwd: Path, allow_errors: bool = False):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    client = NotebookClient(nb, timeout=180, kernel_name="python3", allow_errors=allow_errors,
                            resources={"metadata": {"path": str(cwd)}})
    client.execute(env=env)
    return nb


def _pngs(nb) -> list[bool]:
    return [any("image/png" in o.get("data", {}) for o in c.outputs) for c in nb.cells]


def _make_environment(tmp_path: Path, parent: dict[str, str]) -> dict[str, str]:
    """The environment that `make book` / `make test` give their tools: the Makefile applied to ``parent``."""
    make = shutil.which("make")
    if make is None:
        pytest.skip("GNU make is not installed; `make book` cannot run here either")
    dump = tmp_path / "env.bin"
    mk = tmp_path / "env.mk"
    mk.write_text(f"include {ROOT / 'Makefile'}\n.PHONY: crispedit-env\ncrispedit-env:\n\t@env -0 > {dump}\n",
                  encoding="utf-8")
    subprocess.run([make, "-s", "-C", str(ROOT), "-f", str(mk), "crispedit-env"], env=parent, check=True,
                   capture_output=True, timeout=60)
    pairs = [item.split("=", 1) for item in dump.read_bytes().decode().split("\0") if "=" in item]
    return dict(pairs)


def test_make_book_kernels_draw_figures_inline(tmp_path):
    parent = environ_with({"MPLBACKEND": "Agg"})  # as a shell that exports it (this workplace does)
    env = _make_environment(tmp_path, parent)
    assert "MPLBACKEND" not in env, "the Makefile must keep MPLBACKEND out of the notebook kernels"
    assert _pngs(_execute([PLOT], env, tmp_path)) == [True]


def test_nbval_kernels_draw_figures_inline(tmp_path):
    """nbval's kernels inherit this process's environment, as tests/conftest.py leaves it."""
    assert "MPLBACKEND" not in os.environ
    assert _pngs(_execute([PLOT], dict(os.environ), tmp_path)) == [True]


def test_chapter_setup_draws_inline_even_under_agg(tmp_path):
    env = environ_with({"MPLBACKEND": "Agg"})
    assert _pngs(_execute([PLOT], env, tmp_path)) == [False], "under Agg a bare plt.show() outputs nothing"
    assert _pngs(_execute([STYLE, PLOT], env, tmp_path)) == [False, True], "set_style() draws inline"


def test_guard_reads_package_data_and_refuses_the_checkout(tmp_path):
    env = environ_with(guard_environment(ROOT, tmp_path / "guard"))
    cells = [
        "import os\nprint(os.getcwd())",
        "from crispedit_lite.reproduction.committed import committed_run\n"
        "print(committed_run('ch06-sweeps-smollm2.json')['n_edits'])",
        f"open({str(ROOT / 'README.md')!r}).read()",
        f"import os\nos.listdir({str(ROOT / 'notebooks')!r})",
    ]
    nb = _execute(cells, env, tmp_path, allow_errors=True)
    out = ["".join(o.get("text", "") for o in c.outputs if o.get("name") == "stdout") for c in nb.cells]
    errors = [[o.evalue for o in c.outputs if o.output_type == "error"] for c in nb.cells]
    assert Path(out[0].strip()) == (tmp_path / "guard" / "notebooks").resolve()
    assert out[1].strip() == "12" and not errors[1]
    for k in (2, 3):
        assert errors[k] and GUARD_MESSAGE in errors[k][0], f"cell {k} read the checkout: {errors[k]}"


def test_nbval_fails_a_notebook_that_reads_the_checkout(tmp_path):
    """The wiring of tests/conftest.py: nbval's run of a notebook that reads README.md fails, by the guard."""
    import nbformat

    probe = tmp_path / "probe" / "reads_the_checkout.ipynb"
    probe.parent.mkdir()
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("from crispedit_lite.reproduction.cells import paper_cell\n"
                                  "assert paper_cell('table1_zsre_crispedit')['GAMMA'] == 0.7"),
        nbformat.v4.new_code_cell(f"text = open({str(ROOT / 'README.md')!r}).read()"),
    ])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, probe)
    # as in `make test`: a path under tests/ loads tests/conftest.py, whose plugin guards every kernel
    companion = f"{ROOT / 'tests' / 'book' / 'test_parameter_sets.py'}::test_expected_edit_share"
    cmd = [sys.executable, "-m", "pytest", companion, str(probe), "-p", "no:cacheprovider", "-q",
           "--rootdir", str(ROOT), "-c", str(ROOT / "pyproject.toml")]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 1, log[-3000:]
    assert "1 failed, 2 passed" in log and GUARD_MESSAGE in log, log[-3000:]


def test_make_books_parallel_execution_fills_the_cache_the_build_reads(tmp_path, monkeypatch):
    """tools/execute_book.py: a notebook it executes draws inline and is the cache entry myst-nb matches."""
    import importlib.util

    import nbformat
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn

    spec = importlib.util.spec_from_file_location("execute_book", ROOT / "tools" / "execute_book.py")
    execute_book = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(execute_book)
    toc = {p.name for p in execute_book._book_notebooks()}
    assert toc == {p.name for p in (ROOT / "notebooks").glob("*.ipynb")}, "every chapter is executed"
    listed = {str(p.relative_to(ROOT)) for p in execute_book._book_notebooks()}
    assert set(execute_book.COLLECTORS) <= listed, "the chapters run last are chapters of the book"

    path = tmp_path / "figure.ipynb"
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(PLOT)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    monkeypatch.setenv("MPLBACKEND", "Agg")  # a shell that exports it: the kernels must not see it
    _, executed, _, error = execute_book._execute(str(path), 120, 1)
    assert error is None and _pngs(executed) == [True]
    cache = get_cache(str(tmp_path / "cache"))
    with pytest.raises(KeyError):  # cold: what the build would execute itself
        cache.match_cache_notebook(nbformat.read(path, as_version=4))
    record = cache.add_nb_to_project(str(path))
    cache.cache_notebook_bundle(CacheBundleIn(executed, record.uri, data={"execution_seconds": 1.0}),
                                check_validity=False, overwrite=True)
    # what myst-nb's cache client calls on the notebook as it reads it from disk
    hit = cache.match_cache_notebook(nbformat.read(path, as_version=4))
    _, merged = cache.merge_match_into_notebook(nbformat.read(path, as_version=4))
    assert hit is not None and _pngs(merged) == [True]
