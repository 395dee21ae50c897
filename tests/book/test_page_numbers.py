"""Every number on a book page comes from a file the book reads, or from code that a test runs.

* The pages include tables rendered from committed JSON (``book/_generated``, written by
  :func:`crispedit_lite.teaching.book_tables.write_all`); the files on disk must be exactly what the
  committed JSON renders to, and every page must include the ones it relies on.
* ``book/ultraedit.md`` states what its tables show; each statement is checked against the JSON here.
* ``book/running.md`` prints the output of a memory snippet; the snippet is run here and its output
  compared with the page.
* ``book/reproducing.md`` lists the parameter files of each paper table with a brace pattern and a
  count; both are compared with ``reproduce/``.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import re
from pathlib import Path

import pytest

from crispedit_lite.teaching import book_tables

ROOT = Path(__file__).resolve().parents[2]
BOOK = ROOT / "book"


def test_generated_includes_are_what_the_committed_json_renders():
    rendered = book_tables.render_all(ROOT)
    on_disk = {p.name: p.read_text(encoding="utf-8") for p in (BOOK / "_generated").glob("*.md")}
    assert set(on_disk) == set(rendered), "run python -m crispedit_lite.teaching.book_tables"
    stale = [name for name, text in rendered.items() if on_disk[name] != text]
    assert not stale, f"stale includes {stale}: run python -m crispedit_lite.teaching.book_tables"


def test_every_generated_include_is_included_by_a_page():
    pages = "\n".join(p.read_text(encoding="utf-8") for p in BOOK.glob("*.md"))
    included = set(re.findall(r"```\{include\}\s+_generated/(\S+)", pages))
    assert included == set(book_tables.render_all(ROOT)), included ^ set(book_tables.render_all(ROOT))


# --- book/ultraedit.md: what the page says about its tables ---------------------------------------


@pytest.fixture(scope="module")
def sweep():
    record = json.loads((ROOT / book_tables.ULTRAEDIT_JSON).read_text(encoding="utf-8"))
    groups = {}
    for row in record["rows"]:
        groups.setdefault(row["n_edits"], []).append(row)
    return {n: sorted(rows, key=lambda r: r["eta"]) for n, rows in groups.items()}


def test_ultraedit_official_step_barely_moves_the_model(sweep):
    # "With the official eta the reliability stays within about one edit of its pre-edit value, and the
    # KL to the base model is below 1e-4 nats"
    for n, rows in sweep.items():
        official = next(r for r in rows if r["eta"] == 1e-6)
        assert abs(official["after"]["rel"] - official["before"]["rel"]) <= 100 / n
        assert official["kl"] < 1e-4 and official["after"]["spec"] == official["before"]["spec"]


def test_ultraedit_a_step_that_edits_costs_specificity(sweep):
    # "the eta that edits most of the 8 edits lowers teacher-forced specificity, and the largest eta
    # breaks the model (KL above 1 nat, perplexity many times the base model's)"
    rows = sweep[8]
    best = max(rows, key=lambda r: r["after"]["rel"])
    assert 1e-6 < best["eta"] < max(r["eta"] for r in rows)
    assert best["after"]["rel"] > 3 * best["before"]["rel"]
    assert best["after"]["spec"] < best["before"]["spec"]
    largest = rows[-1]
    assert largest["kl"] > 1 and largest["ppl"] > 10 * largest["ppl_before"]


def test_ultraedit_with_more_turns_reliability_and_damage_grow_with_eta(sweep):
    # "with 40 edits, reliability and KL both grow with eta, and the largest eta costs specificity"
    rows = sweep[40]
    assert rows[0]["chunks"] > 1
    rel = [r["after"]["rel"] for r in rows]
    kl = [r["kl"] for r in rows]
    assert rel == sorted(rel) and kl == sorted(kl)
    assert rows[-1]["after"]["spec"] < rows[-1]["before"]["spec"]


# --- book/running.md: the memory snippet's printed output -----------------------------------------


def test_running_memory_snippet_prints_what_the_page_shows():
    text = (BOOK / "running.md").read_text(encoding="utf-8")
    m = re.search(r"\*\*Memory\.\*\*.*?```python\n(.*?)```\s*```text\n(.*?)```", text, re.S)
    assert m, "book/running.md: the memory snippet and its output block"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(m.group(1), "running.md", "exec"), {})  # noqa: S102 (the page's own snippet)
    assert out.getvalue().strip() == m.group(2).strip()


# --- book/reproducing.md: the index of parameter files ----------------------------------------------


def _expand(pattern: str) -> list[str]:
    parts = re.split(r"\{([^{}]*)\}", pattern)
    options = [[p] if i % 2 == 0 else p.split(",") for i, p in enumerate(parts)]
    return ["".join(c) for c in itertools.product(*options)]


def test_reproducing_index_matches_the_parameter_files():
    text = (BOOK / "reproducing.md").read_text(encoding="utf-8")
    files = {p.stem for p in (ROOT / "reproduce").glob("*.yaml")}
    rows = re.findall(r"^\| \d+: [^|]*\| `(table\d[^`]*)`(?: \((\d+)\))? \|", text, re.M)
    assert rows, "book/reproducing.md: the table of cells"
    listed = set()
    for pattern, count in rows:
        names = _expand(pattern)
        prefix = pattern.split("_")[0] + "_"
        assert set(names) == {f for f in files if f.startswith(prefix)}, pattern
        if count:
            assert int(count) == len(names), pattern
        listed |= set(names)
    assert listed == files
    total = re.search(r"Each of the (\d+) yaml", text)
    assert total and int(total.group(1)) == len(files)
