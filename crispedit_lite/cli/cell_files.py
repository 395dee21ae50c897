r"""The parameter files of ``reproduce``: read, and checked against their notebook, before any cell runs.

A cell ``reproduce/<cell>.yaml`` must give every parameter that its notebook's ``parameters`` cell
declares (``RESULTS_DIR`` excepted: ``reproduce`` sets it), and nothing else, so that none of the
notebook's CPU defaults leaks into a paper run and a misspelt key is not silently ignored. A file
that is not YAML, not a mapping, repeats a key, lacks parameters, has unknown ones, or holds values
that the notebook's own parameter reader
(:func:`crispedit_lite.reproduction.cells.config_from_parameters`) refuses, is one
:class:`~crispedit_lite.cli.checks.UsageError` that names the file, the line and the key.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from crispedit_lite.cli.checks import UsageError

__all__ = ["SET_BY_REPRODUCE", "notebook_of", "notebook_parameters", "read_cell"]

#: Parameters that ``reproduce`` sets itself, whatever the file says.
SET_BY_REPRODUCE = ("RESULTS_DIR",)


def notebook_of(cell: str) -> str:
    """The notebook that runs ``cell``: chapter 10 for Table 5 (Qwen), chapter 9 otherwise.

    Listed on the book page ``api``.
    """
    return "10_reproduce_qwen2_5_1_5b" if cell.startswith("table5_") else "09_reproduce_llama3_8b"


@functools.lru_cache(maxsize=8)
def _declared(path: str, mtime: float) -> tuple[str, ...]:
    import papermill

    return tuple(papermill.inspect_notebook(path))


def notebook_parameters(path: Path) -> tuple[str, ...]:
    """The names declared by the notebook's ``parameters`` cell (papermill's reading of it).

    Listed on the book page ``api``.
    """
    if not path.is_file():
        raise UsageError(f"reproduce: notebook {path} does not exist; expected the repository root in --root")
    try:
        return _declared(str(path), path.stat().st_mtime)
    except Exception as err:  # papermill raises its own types for unreadable notebooks
        raise UsageError(f"reproduce: notebook {path} cannot be read ({' '.join(str(err).split())[:160]})"
                         ) from None


def _compose(path: Path, shown: str) -> tuple[dict[str, Any], dict[str, int]]:
    """The file's mapping and the line of each key; parse errors name the line and column."""
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except UnicodeDecodeError:
        raise UsageError(f"{shown}: not UTF-8 text; expected YAML parameters") from None
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        what = " ".join(str(x) for x in (err.context, err.problem) if x) or "not valid YAML"
        raise UsageError(f"{shown}{where}: {what}") from None
    except yaml.YAMLError as err:
        raise UsageError(f"{shown}: not valid YAML ({' '.join(str(err).split())[:160]})") from None
    except RecursionError:
        raise UsageError(f"{shown}: nested too deeply to be notebook parameters") from None
    if not isinstance(data, dict) or not isinstance(node, yaml.MappingNode):
        raise UsageError(f"{shown}: expected a mapping of notebook parameters (KEY: value), got "
                         f"{type(data).__name__}")
    lines: dict[str, int] = {}
    for key, _ in node.value:
        name = str(key.value)
        if name in lines:
            raise UsageError(f"{shown} line {key.start_mark.line + 1}: key {name} is given twice (also on "
                             f"line {lines[name]})")
        lines[name] = key.start_mark.line + 1
    return data, lines


def _key_of(message: str, params: dict[str, Any]) -> str | None:
    """The parameter an error message is about (by its name, lower-cased name or value)."""
    for key in params:
        if key in message or f" {key.lower()}" in f" {message}":
            return key
    for key, value in params.items():
        if isinstance(value, (str, int, float)) and not isinstance(value, bool) and repr(value) in message:
            return key
    return None


def read_cell(root: Path, cell: str) -> dict[str, Any]:
    """The parameters of ``reproduce/<cell>.yaml``, checked against its notebook (see the module).

    Listed on the book page ``api``.
    """
    from crispedit_lite.reproduction.cells import PARAMETERS, config_from_parameters

    path, shown = root / "reproduce" / f"{cell}.yaml", f"reproduce/{cell}.yaml"
    params, lines = _compose(path, shown)
    declared = notebook_parameters(root / "notebooks" / f"{notebook_of(cell)}.ipynb")
    unknown = [k for k in params if k not in declared]
    if unknown:
        raise UsageError(f"{shown} line {lines[str(unknown[0])]}: {unknown[0]} is not a parameter of "
                         f"notebook {notebook_of(cell)} (its parameters: {', '.join(declared)})")
    missing = [k for k in declared if k not in params and k not in SET_BY_REPRODUCE]
    if missing:
        raise UsageError(f"{shown}: lacks {', '.join(missing)}; a cell gives every parameter of notebook "
                         f"{notebook_of(cell)}, so that none of its defaults leaks into the run")
    if set(PARAMETERS) <= set(declared):  # the reproduction notebooks: their own reader checks values
        try:
            config_from_parameters(params)
        except (ValueError, TypeError) as err:
            message = " ".join(str(err).split())
            key = _key_of(message, params)
            where = f" line {lines[key]} ({key})" if key in lines else ""
            raise UsageError(f"{shown}{where}: {message}") from None
    return params
