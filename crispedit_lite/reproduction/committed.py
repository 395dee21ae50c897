"""Benchmark results that ship with the package: ``crispedit_lite/resources/results/*.json``.

The book plots runs that take longer than its build can afford (Table 1 on a CPU, chapter 6's sweeps,
the WILD causes, the Gemma comparison, the GPU timings of ``benchmarks/scale.py``). Their JSON files
live in the package, not in the repository around it, so a chapter reads them wherever it runs: in a
checkout, after ``pip install crispedit-lite``, or on Colab. Each file records the command that wrote
it; the scripts in ``benchmarks/`` write there by default.

Derived in notebook ``06_crispedit_on_a_small_lm``.
"""

from __future__ import annotations

import fnmatch
import json
import os
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = ["RESULTS_PACKAGE_DIR", "committed_names", "committed_path", "committed_run",
           "parameter_differences"]

#: The folder of the committed results inside the package.
RESULTS_PACKAGE_DIR = "resources/results"


def _folder() -> Path:
    return Path(str(resources.files("crispedit_lite").joinpath(RESULTS_PACKAGE_DIR)))


def committed_names(pattern: str = "*.json") -> list[str]:
    """File names of the committed results that match ``pattern`` (``fnmatch``), sorted.

    Listed on the book page ``api``.
    """
    folder = _folder()
    names = [p.name for p in folder.iterdir()] if folder.is_dir() else []
    return sorted(n for n in names if fnmatch.fnmatch(n, pattern))


def committed_path(name: str | os.PathLike) -> Path:
    """The file of a committed result: a bare file name is looked up in the package.

    A name with a folder in it (``my_runs/table1.json``) is a file of your own and is returned as
    given, so a chapter parameter can point at a rerun instead of the committed file.

    Derived in notebook ``06_crispedit_on_a_small_lm``.
    """
    given = Path(name)
    if given.name != str(name):
        return given
    path = _folder() / given.name
    if not path.is_file():
        known = ", ".join(committed_names()) or "none"
        raise FileNotFoundError(f"committed result {str(name)!r}: no such file in crispedit_lite/"
                                f"{RESULTS_PACKAGE_DIR}/ (committed: {known})")
    return path


def committed_run(name: str | os.PathLike) -> dict[str, Any]:
    """The parsed JSON of :func:`committed_path` ``(name)``.

    Derived in notebook ``06_crispedit_on_a_small_lm``.
    """
    return json.loads(committed_path(name).read_text(encoding="utf-8"))


def parameter_differences(record: Mapping[str, Any], params: Mapping[str, Any], keys: Mapping[str, str],
                          fixed: Mapping[str, Any] | None = None) -> dict[str, tuple[Any, Any]]:
    """Where a chapter's parameters and a committed run differ: ``{name: (committed, chapter)}``.

    ``keys`` maps a chapter parameter to the record's key for it; ``fixed`` gives the values of
    parameters the script fixes without recording them. Only parameters present in ``params`` count.
    Empty: the committed file was run with the chapter's settings and may stand for a live run.

    Listed on the book page ``api``.
    """
    out = {name: (record.get(key), params[name]) for name, key in keys.items()
           if name in params and record.get(key) != params[name]}
    out.update({name: (value, params[name]) for name, value in (fixed or {}).items()
                if name in params and params[name] != value})
    return out
