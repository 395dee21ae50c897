"""Which layers K-FAC sees, and how a batch reaches the model.

:func:`resolve_modules` looks edited or curvature layers up by name (``nn.Linear`` or Hugging Face's
``Conv1D``); ``_forward`` runs one batch (a causal-LM mapping or an ``(inputs, targets)`` pair) on
the model's device. Both are shared by :mod:`crispedit_lite.kfac.hooks` and :mod:`crispedit_lite.ekfac`.

Derived in notebook ``04_kfac_step_by_step``.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor, nn

__all__ = ["resolve_modules"]


def _is_conv1d(module: nn.Module) -> bool:
    # Hugging Face's GPT-2 style Conv1D: weight of shape (d_in, d_out), y = x @ W + b.
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf")


def resolve_modules(model: nn.Module, module_names: Sequence[str]) -> dict[str, nn.Module]:
    """Look up linear layers by name; unknown or non-linear names raise a ``ValueError`` with candidates.

    Listed on the book page ``api``.
    """
    if isinstance(module_names, str):
        module_names = [module_names]
    if len(module_names) == 0:
        raise ValueError("module_names is empty: name at least one linear layer")
    named = dict(model.named_modules())
    linear = [n for n, m in named.items() if isinstance(m, nn.Linear) or _is_conv1d(m)]
    out: dict[str, nn.Module] = {}
    for name in module_names:
        if name not in named:
            close = difflib.get_close_matches(name, linear, n=5, cutoff=0.3) or linear[:5]
            raise ValueError(f"unknown module {name!r}; linear modules include {close}")
        mod = named[name]
        if not (isinstance(mod, nn.Linear) or _is_conv1d(mod)):
            raise ValueError(
                f"module {name!r} is a {type(mod).__name__}; K-FAC here needs nn.Linear or Conv1D"
            )
        out[name] = mod
    return out


def _forward(model: nn.Module, batch: Any) -> tuple[Tensor, Tensor, bool]:
    """Run the model; return (predictions, targets, causal) for a mapping or an (inputs, targets) pair.

    Tensors of the batch are moved to the device of the model's parameters.
    """
    device = next(model.parameters()).device
    if isinstance(batch, Mapping):
        batch = {k: v.to(device) if isinstance(v, Tensor) else v for k, v in batch.items()}
    elif isinstance(batch, (tuple, list)) and len(batch) == 2:
        batch = tuple(v.to(device) if isinstance(v, Tensor) else v for v in batch)
    if isinstance(batch, Mapping):
        if "input_ids" not in batch:
            raise ValueError(f"a mapping batch needs 'input_ids'; got keys {sorted(batch)}")
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        out = model(**inputs)
        logits = out.logits if hasattr(out, "logits") else out
        labels = batch.get("labels")
        if labels is None:
            labels = batch["input_ids"].clone()
            if "attention_mask" in batch:
                labels[batch["attention_mask"] == 0] = -100
        return logits, labels, True
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        x, y = batch
        return model(x), y, False
    raise ValueError(
        "each batch must be a mapping with 'input_ids' (causal LM) or an (inputs, targets) pair; "
        f"got {type(batch).__name__}"
    )
