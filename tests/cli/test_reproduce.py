"""``python -m crispedit_lite reproduce``: files checked before any cell runs; finished means marked.

* A parameter file that is not YAML, repeats a key, lacks a parameter of its notebook, has an unknown
  one or a value the notebook refuses is one line naming the file, line and key, exit 2, before any
  cell runs and with nothing written (checked against a copy of the real chapter 9 notebook).
* On a stand-in repository (a tiny notebook that writes a results JSON, then maybe fails): a cell whose
  notebook fails after writing its JSON, and a cell whose run diverged (a NaN metric), are not
  finished; the next run says why, sets the old JSON aside and runs them again; a finished cell is
  skipped until its parameter file changes. A failure names an executed notebook only when it exists.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nbformat
import pytest
import yaml

from crispedit_lite.cli import main
from tests.helpers import ROOT

REAL_CELL = "table1_zsre_ft"


@pytest.fixture()
def real_root(tmp_path):
    """A repository root with chapter 9's notebook and one real cell file."""
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "reproduce").mkdir()
    shutil.copy(ROOT / "notebooks" / "09_reproduce_llama3_8b.ipynb", tmp_path / "notebooks")
    shutil.copy(ROOT / "reproduce" / f"{REAL_CELL}.yaml", tmp_path / "reproduce")
    return tmp_path


def _edit_yaml(root: Path, fn) -> Path:
    path = root / "reproduce" / f"{REAL_CELL}.yaml"
    path.write_text(fn(path.read_text()))
    return path


FILE_MISTAKES = {
    "not YAML": (lambda t: t.replace('N_EDITS: 3000', 'N_EDITS: [3000'),
                 f"reproduce/{REAL_CELL}.yaml line "),
    "a key missing": (lambda t: t.replace("SEED: 0\n", ""),
                      f"reproduce/{REAL_CELL}.yaml: lacks SEED; a cell gives every parameter of notebook "
                      "09_reproduce_llama3_8b"),
    "an unknown key": (lambda t: t.replace("GAMMA: 0.7", "GAMA: 0.7\nGAMMA: 0.7"),
                       "GAMA is not a parameter of notebook 09_reproduce_llama3_8b"),
    "a key twice": (lambda t: t + "SEED: 1\n", "key SEED is given twice"),
    "not a mapping": (lambda t: "- 1\n- 2\n", "expected a mapping of notebook parameters"),
    "a value the notebook refuses": (lambda t: t.replace('METHOD: "ft"', 'METHOD: "crisp"'),
                                     "(METHOD): unknown method 'crisp'"),
}


@pytest.mark.parametrize("name", FILE_MISTAKES)
def test_a_bad_cell_file_is_one_line_before_any_cell_runs(real_root, tmp_path, capsys, name):
    change, phrase = FILE_MISTAKES[name]
    text = _edit_yaml(real_root, change).read_text().splitlines()
    key = next((n for n, line in enumerate(text, 1) if line.startswith("GAMA:")), None)
    phrase = f"line {key}: {phrase}" if key else phrase  # the line of the unknown key
    code = main(["reproduce", REAL_CELL, "--root", str(real_root), "--results-root", str(tmp_path / "res")])
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2 and out == "" and len(lines) == 1 and lines[0].startswith("error: "), err
    assert phrase in lines[0], lines[0]
    assert not (tmp_path / "res").exists()


def test_the_committed_cell_files_pass_the_checks():
    from crispedit_lite.cli.cell_files import read_cell

    for path in sorted((ROOT / "reproduce").glob("*.yaml"))[::7]:
        assert read_cell(ROOT, path.stem)["DATA_PATH"]


def test_a_failed_notebook_is_named_only_when_it_exists(tmp_path):
    from crispedit_lite.cli.reproduce import _failed_notebook

    partial, failed = tmp_path / ".c.partial.ipynb", tmp_path / "c.failed.ipynb"
    assert _failed_notebook(partial, failed) == "no executed notebook was written"
    partial.write_text('{"cells": [{"cell_type": "code", "sour')  # a disk that filled up mid-write
    assert "could not be saved whole" in _failed_notebook(partial, failed)
    assert not partial.exists() and not failed.exists()
    nbformat.write(nbformat.v4.new_notebook(), partial)
    assert _failed_notebook(partial, failed) == f"notebook: {failed}" and failed.is_file()


NOTEBOOK_CODE = '''\
from crispedit_lite.reproduction.results import write_result
score = float("nan") if MODE == "nan" else 100.0
write_result({"run_id": CELL, "command": "papermill", "timings": {},
              "metrics": {"after": {"teacher_forced": {"scores": {"rel": score}}}},
              "settings": {"model": "m", "dataset": "d", "n_edits": 1, "method": "ft", "seed": 0},
              "environment": {"python": "3", "torch": "2", "device": "cpu", "packages": {}}}, RESULTS_DIR)
assert MODE != "late", "this cell's own check fails after its results JSON was written"
'''


def _stand_in(root: Path, cells: dict[str, str]) -> None:
    (root / "notebooks").mkdir(parents=True)
    (root / "reproduce").mkdir()
    params = nbformat.v4.new_code_cell('CELL = ""\nMODE = "ok"\nRESULTS_DIR = "results/x"')
    params.metadata["tags"] = ["parameters"]
    nb = nbformat.v4.new_notebook(cells=[params, nbformat.v4.new_code_cell(NOTEBOOK_CODE)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, root / "notebooks" / "09_reproduce_llama3_8b.ipynb")
    for cell, mode in cells.items():
        (root / "reproduce" / f"{cell}.yaml").write_text(yaml.safe_dump({"CELL": cell, "MODE": mode}))


def test_a_cell_counts_as_finished_only_through_its_marker(tmp_path, capsys):
    root, res = tmp_path / "repo", tmp_path / "results"
    _stand_in(root, {"table1_ok": "ok", "table1_late": "late", "table1_nan": "nan"})
    args = ["reproduce", "--table", "table1", "--root", str(root), "--results-root", str(res)]
    assert main(args) == 1
    out = capsys.readouterr().out
    assert "table1_ok: done" in out and (res / "table1_ok.done.json").is_file()
    marker = json.loads((res / "table1_ok.done.json").read_text())
    assert marker["result"] == str(res / "table1_ok" / "table1_ok.json")
    assert len(marker["result_sha256"]) == 64
    assert "table1_late: FAILED: PapermillExecutionError: " in out
    assert f"(notebook: {res / 'table1_late.failed.ipynb'})" in out
    assert (res / "table1_late.failed.ipynb").exists()
    assert "table1_nan: FAILED: ValueError: its result table1_nan.json does not count: the run diverged" \
        in out
    assert (res / "table1_late" / "table1_late.json").is_file()  # written, but the cell is not finished
    assert not (res / "table1_late.done.json").exists() and not (res / "table1_nan.done.json").exists()
    nan_json = (res / "table1_nan" / "table1_nan.json").read_text()
    assert "NaN" not in nan_json and json.loads(nan_json)["diverged"]

    assert main(args) == 1  # again: the finished cell is skipped, the others run again and say why
    out = capsys.readouterr().out
    assert f"table1_ok: finished ({res / 'table1_ok' / 'table1_ok.json'}); skipped" in out
    assert ("table1_late: running (table1_late.json was written, but the run never finished (the notebook "
            "failed or was interrupted); set aside table1_late.json.unfinished)") in out
    assert (res / "table1_late" / "table1_late.json.unfinished").is_file()
    assert "summary: 3 cell(s): 0 done, 1 skipped (finished), 2 failed: table1_late, table1_nan" in out

    edited = yaml.safe_dump({"CELL": "table1_ok", "MODE": "ok"}) + "# v2\n"
    (root / "reproduce" / "table1_ok.yaml").write_text(edited)
    assert main(["reproduce", "table1_ok", "--root", str(root), "--results-root", str(res)]) == 0
    out = capsys.readouterr().out
    assert ("table1_ok: running (table1_ok.yaml changed since the cell finished; set aside "
            "table1_ok.json.unfinished)") in out and "table1_ok: done" in out


def test_the_marker_is_checked_against_its_result_and_notebook(tmp_path):
    from crispedit_lite.reproduction.finished import marker_problem, write_marker
    from crispedit_lite.reproduction.results import write_result
    from tests.helpers import cell_run_record

    res, params = tmp_path / "res", tmp_path / "c.yaml"
    params.write_text("CELL: c\n")
    assert marker_problem(res, "c", params) == ("not run yet", None)
    result = write_result(cell_run_record("c"), res / "c")
    why, _ = marker_problem(res, "c", params)  # killed between the JSON and the notebook's rename
    assert why.startswith("c.json was written, but the run never finished")
    notebook = res / "c.ipynb"
    nbformat.write(nbformat.v4.new_notebook(), notebook)
    write_marker(res, "c", result, notebook, params)
    assert marker_problem(res, "c", params) == (None, result)
    notebook.unlink()
    assert marker_problem(res, "c", params)[0] == f"its executed notebook {notebook} is gone"
    nbformat.write(nbformat.v4.new_notebook(), notebook)
    result.write_text(result.read_text().replace('"rel": 100.0', '"rel": 99.0'))
    assert marker_problem(res, "c", params)[0] == "its result c.json changed since the cell finished"
