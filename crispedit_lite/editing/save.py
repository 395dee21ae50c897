"""Write an edited model to a *new* directory, atomically, never over the base model.

Derived in notebook ``06_crispedit_on_a_small_lm``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch import nn

from crispedit_lite.atomic import atomic_path, write_json_atomic

__all__ = ["save_edited"]


def save_edited(
    model: nn.Module,
    tokenizer: Any,
    out_dir: str | os.PathLike,
    *,
    info: dict[str, Any] | None = None,
    base_dir: str | os.PathLike | None = None,
) -> Path:
    """Save ``model`` and ``tokenizer`` to ``out_dir`` (which must not exist) plus ``edit_info.json``.

    The directory is assembled in a temporary sibling and renamed into place, so a crash leaves
    nothing half-written. Refuses an existing ``out_dir`` and the model's own source directory
    (``base_dir``, or ``model.config._name_or_path`` when it is a local directory).

    Listed on the book page ``api``.
    """
    out = Path(out_dir).resolve()
    sources = [base_dir, getattr(getattr(model, "config", None), "_name_or_path", None)]
    for src in sources:
        if src and Path(src).exists() and Path(src).resolve() == out:
            raise ValueError(f"refusing to save the edited model over its base model at {out}")
    if out.exists():
        raise ValueError(f"{out} already exists; save_edited writes only to a new directory")
    with atomic_path(out, directory=True) as tmp:
        model.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        write_json_atomic(tmp / "edit_info.json", info or {}, indent=2, sort_keys=True)
    return out
