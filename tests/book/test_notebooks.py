"""The notebooks follow CONTRIBUTING.md, accept papermill parameters, and the sanitizers do what they say.

Three layers of notebook validation run in ``make test``:

1. here, fast static checks of every ``notebooks/*.ipynb`` (structure conventions of CONTRIBUTING.md,
   and every cell that draws a figure carries its PNG: the rule is in ``notebook_checks.py``);
2. here, ``papermill --prepare-only`` with a parameter override, proving that injection works
   (marked ``notebook``);
3. nbval, configured in ``pyproject.toml``: every notebook is executed cell by cell in this environment,
   outside the checkout and guarded against reading it (``conftest.py``, ``notebook_checks.py``);
   a cell that raises fails, and cells marked ``# NBVAL_CHECK_OUTPUT`` must reproduce their committed
   output after ``tests/nbval_sanitize.cfg`` (items marked ``notebook`` by ``conftest.py``).
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.book.notebook_checks import draws_a_figure, figure_cells, has_image
from tests.helpers import ROOT, notebook_paths

NOTEBOOKS = notebook_paths()
IDS = [p.stem for p in NOTEBOOKS]
COLAB_PREFIX = "https://colab.research.google.com/github/crispedit-lite/crispedit-lite/blob/main/"
MAX_BYTES = 1_000_000
SANITIZE = ROOT / "tests" / "nbval_sanitize.cfg"
NAME_RE = re.compile(r"^(\d{2})_[a-z0-9]+(_[a-z0-9]+)*$")


def _load(path: Path) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _src(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def _tags(cell: dict) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def _code(nb: dict) -> list[dict]:
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def _number(path: Path) -> int:
    m = NAME_RE.match(path.stem)
    assert m, f"{path.name}: notebooks are named NN_snake_case_title.ipynb"
    return int(m.group(1))


def _parameters_cell(nb: dict) -> dict:
    cells = [c for c in nb["cells"] if "parameters" in _tags(c)]
    assert len(cells) == 1, f"expected exactly one cell tagged 'parameters', found {len(cells)}"
    assert cells[0]["cell_type"] == "code", "the 'parameters' cell must be a code cell"
    return cells[0]


def _parameter_names(cell: dict) -> list[str]:
    """UPPER_CASE names assigned in the parameters cell (assignments only, literal or simple)."""
    tree = ast.parse(_src(cell))
    names = []
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign):
            targets = [node.target]
        else:
            raise AssertionError(
                f"the parameters cell holds only assignments; found {type(node).__name__} "
                f"at line {node.lineno}"
            )
        for t in targets:
            elts = t.elts if isinstance(t, ast.Tuple) else [t]
            for e in elts:
                assert isinstance(e, ast.Name), f"parameters assign plain names (line {node.lineno})"
                names.append(e.id)
    return names


def test_there_are_notebooks():
    assert NOTEBOOKS, "no notebooks/*.ipynb found: the book's chapters are missing"


def test_notebook_numbers_are_unique():
    numbers = [_number(p) for p in NOTEBOOKS]
    assert len(numbers) == len(set(numbers)), f"two notebooks share a number: {IDS}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
class TestConventions:
    """CONTRIBUTING.md, "Notebooks", checked one rule per test so a failure names the rule."""

    def test_valid_nbformat_and_kernel(self, path):
        import nbformat

        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        kernel = nb.metadata.get("kernelspec", {}).get("name")
        assert kernel == "python3", (
            f"kernelspec name is {kernel!r}; use 'python3' so papermill/nbval find the kernel "
            "(papermill NoSuchKernel otherwise)"
        )

    def test_size(self, path):
        size = path.stat().st_size
        assert size < MAX_BYTES, f"{path.name} is {size / 1e6:.2f} MB (limit 1 MB): lower dpi, fewer outputs"

    def test_colab_badge_and_title(self, path):
        first = _load(path)["cells"][0]
        assert first["cell_type"] == "markdown", "the first cell is markdown: Colab badge and title"
        text = _src(first)
        url = COLAB_PREFIX + "notebooks/" + path.name
        assert "colab-badge.svg" in text, "the first cell shows the Colab badge image"
        assert f"({url})" in text, f"the Colab badge links to this notebook's own path: {url}"
        n = _number(path)
        assert re.search(rf"^# {n}\. \S", text, re.M), f"the first cell has the title '# {n}. Title'"

    def test_colab_guarded_install_cell(self, path):
        code = _code(_load(path))
        assert code, "no code cells"
        src = _src(code[0])
        assert '"google.colab" in sys.modules' in src or "'google.colab' in sys.modules" in src, (
            'the first code cell is the install cell guarded by `if "google.colab" in sys.modules:`'
        )
        assert re.search(r"%pip install .*crispedit-lite", src), (
            "the install cell runs %pip install crispedit-lite"
        )
        for line in src.splitlines():
            if "pip install" in line:
                assert line.startswith((" ", "\t")), "pip install runs only inside the Colab guard"

    def test_one_parameters_cell_with_upper_case_defaults(self, path):
        nb = _load(path)
        cell = _parameters_cell(nb)
        code = _code(nb)
        assert code.index(cell) == 1, (
            "the parameters cell is the second code cell, right after the install cell"
        )
        names = _parameter_names(cell)
        assert names, "the parameters cell defines at least one parameter"
        lower = [n for n in names if n != n.upper()]
        assert not lower, f"parameters are UPPER_CASE: {lower}"

    def test_imports_the_library(self, path):
        sources = "\n".join(_src(c) for c in _code(_load(path)))
        assert re.search(r"^\s*(from crispedit_lite[\w.]* import|import crispedit_lite)", sources, re.M), (
            "notebooks import crispedit_lite (never redefine it)"
        )

    def test_summary_and_exercises_sections(self, path):
        md = "\n".join(_src(c) for c in _load(path)["cells"] if c["cell_type"] == "markdown")
        assert re.search(r"^## Summary\s*$", md, re.M), "a '## Summary' section"
        assert re.search(r"^## Exercises\s*$", md, re.M), "a '## Exercises' section"

    def test_at_least_two_exercises_with_hidden_solutions_and_graders(self, path):
        nb = _load(path)
        n = _number(path)
        cells = nb["cells"]
        exercises = [
            i
            for i, c in enumerate(cells)
            if c["cell_type"] == "markdown" and re.search(r"^(```|:::)\{exercise\}", _src(c), re.M)
        ]
        assert len(exercises) >= 2, f"at least two {{exercise}} directives, found {len(exercises)}"
        grader = re.compile(rf"\bch{n:02d}\.check_\w+\(|exercises\.ch{n:02d}\.check_\w+\(")
        graded = 0
        for k, start in enumerate(exercises):
            stop = exercises[k + 1] if k + 1 < len(exercises) else len(cells)
            block = [c for c in cells[start + 1 : stop] if c["cell_type"] == "code"]
            label = re.search(r":label:\s*(\S+)", _src(cells[start]))
            name = label.group(1) if label else f"exercise {k + 1}"
            assert any("hide-cell" in _tags(c) for c in block), (
                f"{name}: the reference solution is a code cell tagged 'hide-cell'"
            )
            if "**Written answer**" in _src(cells[start]):  # graded by hand: a model answer, no grader
                assert not any(grader.search(_src(c)) for c in block), f"{name}: written, no grader"
                continue
            graded += 1
            assert any(grader.search(_src(c)) for c in block), (
                f"{name}: a grader cell calls crispedit_lite.exercises.ch{n:02d}.check_...()"
            )
        assert graded >= 1, "at least one exercise with a grader"

    def test_committed_executed_without_errors(self, path):
        nb = _load(path)
        for i, c in enumerate(nb["cells"]):
            if c["cell_type"] != "code":
                continue
            assert c.get("execution_count") is not None, (
                f"cell {i} was not executed: commit notebooks executed (see CONTRIBUTING.md)"
            )
            errors = [o for o in c.get("outputs", []) if o.get("output_type") == "error"]
            assert not errors, f"cell {i} has a committed error output: {errors[0].get('ename')}"

    def test_checked_cells_have_committed_output(self, path):
        for i, c in enumerate(_code(_load(path))):
            if _src(c).lstrip().startswith("# NBVAL_CHECK_OUTPUT"):
                assert c.get("outputs"), (
                    f"code cell {i} is marked NBVAL_CHECK_OUTPUT but has no committed output to compare"
                )

    def test_figures_use_the_book_style(self, path):
        """set_style() runs before the first figure: the book's style, and figures inline in any kernel."""
        nb = _load(path)
        figures = figure_cells(nb)
        if figures:
            styled = [i for i, c in enumerate(nb["cells"])
                      if c["cell_type"] == "code" and "set_style(" in _src(c)]
            assert styled and styled[0] < figures[0], (
                f"cell {figures[0]} draws a figure before crispedit_lite.teaching.plotting.set_style() runs "
                "(the setup cell calls it: book style, and %matplotlib inline whatever MPLBACKEND says)"
            )

    def test_every_figure_cell_has_its_image(self, path):
        """Every cell that draws a figure (tests/book/notebook_checks.py) carries its committed PNG.

        Fails on a notebook executed with ``MPLBACKEND=Agg`` in the kernel's environment (no inline
        backend: ``plt.show()`` outputs nothing). Fix: re-execute the chapter (``make book``, or papermill
        from ``notebooks/``) and commit its outputs.
        """
        nb = _load(path)
        missing = [i for i in figure_cells(nb) if not has_image(nb["cells"][i])]
        assert not missing, (
            f"{path.name}: cells {missing} draw a figure but have no image/png output; re-execute the "
            "chapter and commit it (the kernel must not run with MPLBACKEND=Agg)"
        )

    def test_every_image_comes_from_a_figure_cell(self, path):
        """The figure-cell rule sees every committed image, so the check above misses no figure."""
        nb = _load(path)
        unseen = [i for i, c in enumerate(nb["cells"]) if has_image(c) and not draws_a_figure(_src(c))]
        assert not unseen, f"cells {unseen} output an image that the figure-cell rule does not detect"

    def test_in_table_of_contents(self, path):
        toc = (ROOT / "_toc.yml").read_text(encoding="utf-8")
        assert f"file: notebooks/{path.stem}" in toc, f"{path.name} is not listed in _toc.yml"


@pytest.mark.notebook
@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_papermill_injects_parameters(path, tmp_path):
    """``papermill --prepare-only -y`` overrides a parameter: the injected cell follows ``parameters``."""
    nb = _load(path)
    names = _parameter_names(_parameters_cell(nb))
    name = "SEED" if "SEED" in names else names[0]
    value = 12345 if name == "SEED" else "papermill-override"
    out = tmp_path / path.name
    cmd = [
        sys.executable, "-m", "papermill", str(path), str(out),
        "--prepare-only", "-k", "python3", "--cwd", str(path.parent),
        "-y", yaml.safe_dump({name: value}),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    cells = _load(out)["cells"]
    idx = [i for i, c in enumerate(cells) if "parameters" in _tags(c)]
    inj = [i for i, c in enumerate(cells) if "injected-parameters" in _tags(c)]
    assert len(idx) == 1 and inj == [idx[0] + 1], (
        "papermill puts 'injected-parameters' right after 'parameters'"
    )
    namespace: dict = {}
    exec(compile(_src(cells[inj[0]]), "injected-parameters", "exec"), namespace)  # noqa: S102
    assert namespace[name] == value


# --- the sanitize file ----------------------------------------------------------------------------


def _sanitizers():
    from nbval.plugin import get_sanitize_patterns

    text = SANITIZE.read_text(encoding="utf-8")
    return text, get_sanitize_patterns(text)


def _sanitize(s: str) -> str:
    for regex, replace in _sanitizers()[1]:
        s = re.sub(regex, replace, s)
    return s


def test_every_sanitize_section_parses():
    text, pairs = _sanitizers()
    sections = re.findall(r"^\[.+\]$", text, re.M)
    assert len(pairs) == len(sections), (
        "each [section] of tests/nbval_sanitize.cfg needs `regex: ...` then `replace: ...` "
        "(non-empty) on consecutive lines, or nbval silently drops it"
    )
    for regex, _ in pairs:
        re.compile(regex)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("took 1.234 s", "took 0.5 s"),
        ("elapsed 12 ms", "elapsed 7 ms"),
        (
            "K-FAC: 100%|██████████| 8/8 [00:01<00:00,  5.21it/s]",
            "K-FAC: 100%|██████████| 8/8 [00:02<00:00,  3.90it/s]",
        ),
        ("<object object at 0x7f1e1f4c73b0>", "<object object at 0x7fabcdef0123>"),
        ("saved to /tmp/pytest-of-root/abc/results.json", "saved to /home/user/x/results.json"),
        ("run at 2026-03-01 12:00:01", "run at 2026-03-02 09:10:11"),
        ("err = -0.000", "err = 0.000"),
    ],
)
def test_sanitizers_remove_what_varies(a, b):
    assert _sanitize(a) == _sanitize(b)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("k = 4", "k = 5"),
        ("rel. error 0.031", "rel. error 0.032"),
        ("ratio 1/2", "ratio 1/3"),
        ("5 sequences", "6 sequences"),
        ("loss -0.5", "loss 0.5"),
        ("gamma = 0.90, rank 12 of 30", "gamma = 0.90, rank 13 of 30"),
    ],
)
def test_sanitizers_keep_the_claims(a, b):
    assert _sanitize(a) != _sanitize(b)


# --- the figure-cell rule (tests/book/notebook_checks.py) --------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        "plt.show()",
        "fig, ax = plt.subplots()",
        "plt.figure(figsize=(3, 2))",
        "axes[0].plot(x, y)",
        "ax2.scatter(x, y)",
        "df.plot.barh(stacked=True, ax=ax)",
        "loc_df.T.plot.bar(ax=ax, rot=0)",
        "sns.lineplot(data=df, x='a', y='b')",
        "sns.heatmap(R)",
        "fig = cpu_table.pareto_figure(t1)",
        "run_report.plot_run(record, metrics, TABLES, MODEL)",
        "diagrams.kfac_hooks_diagram()",
        "import sys\n%pip install -q x\nplt.show()",
        "for k in range(3):\n    axes[k].imshow(M[k])",
    ],
)
def test_figure_rule_finds_figures(source):
    assert draws_a_figure(source)


@pytest.mark.parametrize(
    "source",
    [
        "# plt.show()",
        "print('plt.show()')",
        "display(frame.round(1))",
        "out = x.scatter(0, index, src)",  # torch's scatter
        "optimizer.step()",
        "def draw(ax):\n    ax.plot([1, 2])\n    plt.show()",
        "f = lambda: plt.show()",
        "%%timeit\nplt.show()",
        "import matplotlib.pyplot as plt",
    ],
)
def test_figure_rule_ignores_what_draws_nothing(source):
    assert not draws_a_figure(source)


def test_figure_rule_counts_the_book_figures():
    """Every cell that calls plt.show() is a figure cell, and every chapter that plots has figure cells."""
    for path in NOTEBOOKS:
        nb = _load(path)
        shows = {i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code" and "plt.show()" in _src(c)}
        assert shows <= set(figure_cells(nb)), f"{path.name}: plt.show() cells {sorted(shows)} missed"
