"""Nothing a chapter prints is wider than the page.

A printed line wider than about 120 characters scrolls sideways on a book page, and a table of more
than eight columns does not fit it either. Checked on what a reader sees:

* **stored outputs** of every code cell that is not collapsed (``hide-output``, ``hide-cell``,
  ``remove-output``, ``remove-cell``): every line of printed text at most :data:`MAX_LINE` characters,
  every HTML table at most :data:`MAX_COLUMNS` columns besides its index. This part reads the committed
  outputs, so it passes once the chapters are re-executed after a change to the code that prints;
* **sources**: a recorded command line (a results JSON's ``command``) is printed through
  :func:`crispedit_lite.teaching.printing.shell_block`, never as one long line;
* the two printing functions themselves keep their lines within the width and lose no word.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from crispedit_lite.teaching.printing import WIDTH, shell_block, wrap

ROOT = Path(__file__).resolve().parents[2]
MAX_LINE = 120
MAX_COLUMNS = 8
COLLAPSED = {"hide-output", "hide-cell", "remove-output", "remove-cell"}
CHAPTERS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def _cells(path: Path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] == "code":
            yield i, cell


def _table_columns(html: str) -> int:
    """The widest row of an HTML table, in cells, less one for the index column."""
    rows = re.findall(r"<tr.*?</tr>", html, re.S)
    return max((len(re.findall(r"<t[hd][\s>]", r)) for r in rows), default=1) - 1


def wide_outputs(path: Path) -> list[str]:
    """``'cell i: ...'`` for every over-wide line or table in the stored outputs of a chapter."""
    found = []
    for i, cell in _cells(path):
        if COLLAPSED & set(cell.get("metadata", {}).get("tags", [])):
            continue
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            texts = ["".join(out["text"])] if "text" in out else []
            if "text/html" in data:
                columns = _table_columns("".join(data["text/html"]))
                if columns > MAX_COLUMNS:
                    found.append(f"cell {i}: a table of {columns} columns (at most {MAX_COLUMNS})")
            elif "text/plain" in data:
                texts.append("".join(data["text/plain"]))
            for text in texts:
                for line in text.splitlines():
                    if len(line) > MAX_LINE:
                        found.append(f"cell {i}: a line of {len(line)} characters: {line[:80]}...")
    return found


def raw_command_prints(path: Path) -> list[str]:
    """Source lines that print a recorded command without :func:`shell_block`."""
    found = []
    for i, cell in _cells(path):
        for line in "".join(cell["source"]).splitlines():
            prints_command = re.search(r"""\[["']command["']\]""", line) and "print(" in line
            if prints_command and "shell_block(" not in line:
                found.append(f"cell {i}: {line.strip()}")
    return found


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_stored_outputs_fit_the_page(path):
    found = wide_outputs(path)
    assert not found, (f"{path.name}: print fewer columns, wrap long lines (crispedit_lite.teaching."
                       "printing) or collapse the cell, then re-execute the chapter:\n" + "\n".join(found))


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_recorded_commands_are_printed_as_shell_blocks(path):
    found = raw_command_prints(path)
    assert not found, f"{path.name}: print a recorded command with shell_block:\n" + "\n".join(found)


def test_a_wide_output_and_a_raw_command_print_are_flagged(tmp_path):
    nb = {"cells": [
        {"cell_type": "code", "metadata": {}, "source": ['print("command:", rec["command"])'],
         "outputs": [{"output_type": "stream", "name": "stdout", "text": ["x" * 121 + "\n"]}]},
        {"cell_type": "code", "metadata": {}, "source": ["df"],
         "outputs": [{"output_type": "execute_result", "data": {
             "text/html": ["<table><tr><th></th>" + "<th>c</th>" * 9 + "</tr></table>"],
             "text/plain": ["..."]}}]},
        {"cell_type": "code", "metadata": {"tags": ["hide-output"]}, "source": ["print(long)"],
         "outputs": [{"output_type": "stream", "name": "stdout", "text": ["y" * 500]}]},
        {"cell_type": "code", "metadata": {}, "source": ['print(shell_block(rec["command"]))'],
         "outputs": [{"output_type": "stream", "name": "stdout", "text": ["z" * 120]}]},
    ]}
    path = tmp_path / "nb.ipynb"
    path.write_text(json.dumps(nb))
    assert [f.split(":")[0] for f in wide_outputs(path)] == ["cell 0", "cell 1"]
    assert [f.split(":")[0] for f in raw_command_prints(path)] == ["cell 0"]


def test_shell_block_and_wrap_keep_the_width_and_every_word():
    command = ("python benchmarks/cpu_table1.py --n-edits 40 --seeds 0 1 2 ; "
               "python benchmarks/cpu_table1.py --n-edits 40 --seeds 0 --wild-seeds --methods crispedit+nbhd "
               "--out benchmarks/results/cpu-table1-smollm2-part2.json && python benchmarks/x.py "
               "--model gemma3-270m --known-only --n-edits 24 --seeds 0 --methods crispedit,ft,adam_nscl "
               "--wild-decoding official")
    block = shell_block(command)
    lines = block.splitlines()
    assert all(len(line) <= WIDTH for line in lines)
    assert sum(1 for line in lines if line.startswith("python ")) == 3  # one line per command
    rejoined = re.sub(r" \\\n\s+", " ", block).splitlines()
    assert [c.split() for c in rejoined] == [c.split() for c in re.split(r"\s*(?:;|&&)\s*", command)]
    text = "subsets per method: " + "; ".join(f"method{k} [0, 1, 2]" for k in range(30))
    wrapped = wrap(text)
    assert all(len(line) <= WIDTH for line in wrapped.splitlines())
    assert wrapped.split() == text.split()
