"""Results and paper cells that the chapters read ship with the package, and are read from it.

``crispedit_lite/resources/results/*.json`` (benchmark runs the chapters plot) and
``crispedit_lite/resources/paper_cells.json`` (the parameters of ``reproduce/*.yaml``) are package data:
the chapters read them through ``crispedit_lite`` wherever they run. Here: every name a chapter
uses is committed, the package-data globs of ``pyproject.toml`` cover every file, a built wheel holds
them, and the readers behave.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
import sys
import zipfile

import pytest
import yaml

from crispedit_lite.reproduction.cells import paper_cell, paper_cell_names
from crispedit_lite.reproduction.committed import committed_names, committed_path, committed_run
from tests.helpers import ROOT

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

PACKAGE = ROOT / "crispedit_lite"


def _package_data_globs() -> list[str]:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["tool"]["setuptools"]["package-data"]["crispedit_lite"]


def _shipped() -> list[str]:
    """Files under crispedit_lite/resources that the chapters read (relative to the package)."""
    files = [f"resources/results/{n}" for n in committed_names("*.json")] + ["resources/paper_cells.json"]
    assert len(files) > 10
    return files


def test_every_file_a_chapter_names_is_committed():
    names = set()
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for cell in json.loads(path.read_text(encoding="utf-8"))["cells"]:
            if cell["cell_type"] == "code":
                names.update(re.findall(r'"([\w.-]+\.json)"', "".join(cell["source"])))
    assert names, "the chapters name committed result files"
    missing = sorted(names - set(committed_names()))
    assert not missing, f"named by a chapter but not committed: {missing}"


def test_no_chapter_names_the_old_results_folder():
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        text = "".join("".join(c["source"]) for c in json.loads(path.read_text(encoding="utf-8"))["cells"]
                       if c["cell_type"] == "code")
        assert "benchmarks/results" not in text, f"{path.name} reads benchmarks/results/, which is gone"


def test_package_data_globs_cover_what_the_chapters_read():
    globs = _package_data_globs()
    uncovered = [f for f in _shipped() if not any(fnmatch.fnmatch(f, g) for g in globs)]
    assert not uncovered, f"not package data (pyproject.toml [tool.setuptools.package-data]): {uncovered}"


def test_committed_readers():
    run = committed_run("ch06-sweeps-smollm2.json")
    assert run["command"].startswith("python benchmarks/ch06_sweeps.py") and run["rows"]
    assert committed_path("ch06-sweeps-smollm2.json").parent == PACKAGE / "resources" / "results"
    assert "scale-h200-2026-11-30.json" in committed_names("scale-*.json")
    with pytest.raises(FileNotFoundError, match="committed result 'nope.json'"):
        committed_path("nope.json")
    own = ROOT / "README.md"
    assert committed_path(own) == own and committed_path("folder/x.json").name == "x.json"


def test_paper_cells_are_the_yaml_files():
    yamls = {p.stem: yaml.safe_load(p.read_text(encoding="utf-8"))
             for p in (ROOT / "reproduce").glob("*.yaml")}
    assert set(paper_cell_names()) == set(yamls)
    for name, params in yamls.items():
        assert paper_cell(name) == params, name
    assert paper_cell("table42_nothing") is None
    assert paper_cell_names("table5_") == sorted(n for n in yamls if n.startswith("table5_"))
    cell = paper_cell("table1_zsre_crispedit")
    cell["GAMMA"] = 0.1
    assert paper_cell("table1_zsre_crispedit")["GAMMA"] == 0.7, "paper_cell returns a copy"


@pytest.mark.slow
def test_a_built_wheel_ships_them(tmp_path):
    """``pip wheel`` of a copy of the sources (no build isolation: offline) holds every file read."""
    src = tmp_path / "src"
    shutil.copytree(PACKAGE, src / "crispedit_lite", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(src),
           "-w", str(tmp_path / "dist")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("crispedit_lite-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = [f for f in _shipped() if f"crispedit_lite/{f}" not in names]
    assert not missing, f"{wheel.name} lacks {missing}"


def test_parameter_differences_names_each_mismatch_with_both_values():
    from crispedit_lite.reproduction.committed import parameter_differences

    keys = {"SEED": "seed", "N": "n_edits"}
    record = {"seed": 0, "n_edits": 12}
    assert parameter_differences(record, {"SEED": 0, "N": 12, "OTHER": 1}, keys) == {}
    assert parameter_differences(record, {"SEED": 1, "N": 12}, keys) == {"SEED": (0, 1)}
    assert parameter_differences(record, {"N": 12}, keys) == {}  # absent parameters do not count
    fixed = {"DTYPE": "float32"}
    assert parameter_differences(record, {"DTYPE": "bfloat16"}, keys, fixed) == {
        "DTYPE": ("float32", "bfloat16")}
