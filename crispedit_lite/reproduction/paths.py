"""Paths of a checkout: the repository root, and paths of ``reproduce/*.yaml`` resolved against it.

A reproduction run started from ``notebooks/`` (papermill) or from the root writes to the same place.
Outside a checkout (a pip install, Colab) :func:`repo_root` is ``None`` and relative paths resolve
against the working directory.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["repo_root", "resolve_path"]


def repo_root(start: str | os.PathLike | None = None) -> Path | None:
    """The checkout holding ``start`` (a folder with ``reproduce/`` and ``notebooks/``), or ``None``.

    Derived in notebook ``09_reproduce_llama3_8b``.
    """
    here = Path(start or Path.cwd()).resolve()
    for d in (here, *here.parents):
        if (d / "reproduce").is_dir() and (d / "notebooks").is_dir():
            return d
    return None


def resolve_path(path: str | os.PathLike, root: Path | None = None) -> Path:
    """A relative path of ``reproduce/*.yaml`` resolved against the repository root (else the cwd).

    The yaml files give paths relative to the root; papermill may run the notebook from ``notebooks/``
    (``python -m crispedit_lite reproduce``) or from the root, and both must write to the same place.

    Derived in notebook ``11_results``.
    """
    p = Path(path)
    if p.is_absolute():
        return p
    root = root if root is not None else repo_root()
    return (root / p) if root is not None else p.resolve()
