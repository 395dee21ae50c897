r"""What an edit did: :class:`EditResult` (settings, changed modules, logs, timings, statistics used).

Every editor of :mod:`crispedit_lite.editing.registry` returns one. Editors change the model **in
memory**; :attr:`EditResult.original` keeps the pre-edit weights of every changed matrix so that
:meth:`EditResult.restore` undoes the edit, and nothing is ever written over a model on disk.

Derived in notebook ``06_crispedit_on_a_small_lm``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["EditResult"]


@dataclass
class EditResult:
    """What an edit did: settings, trained modules, training logs, projector stats, timings.

    Attributes:
        config: the :class:`~crispedit_lite.editing.config.EditConfig` of the run.
        modules: names of the changed modules (``down_proj`` matrices, or adapted projections).
        logs: one :class:`~crispedit_lite.editing.loops.trainer.TrainLog` per training loop (chunk).
        timings: seconds per phase.
        projector_stats: rank / editable fraction per module, where a projector was used.
        capability: where the capability statistics came from (cache path, hit, tokens).
        statistics: which statistics the editor read (registry names, e.g. ``capability_kfac``).
        details: editor-specific record (closed-form residual norms, per-chunk schedules, ...).
        original: pre-edit weights, keyed by parameter name (CPU copies).

    Derived in notebook ``06_crispedit_on_a_small_lm``.
    """

    config: Any
    modules: list[str]
    logs: list[Any]
    timings: dict[str, float]
    projector_stats: dict[str, Any] = field(default_factory=dict)
    capability: dict[str, Any] = field(default_factory=dict)
    statistics: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    original: dict[str, Tensor] = field(default_factory=dict, repr=False)

    def restore(self, model: nn.Module) -> None:
        """Put the pre-edit weights back (undo the edit in memory)."""
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, w in self.original.items():
                params[name].copy_(w.to(params[name].device, params[name].dtype))

    def changed_norms(self, model: nn.Module) -> dict[str, float]:
        r"""Frobenius norm :math:`\lVert W_{\rm edited}-W_{\rm base}\rVert_F` of every changed matrix.

        An edit that returned an unedited model (a known failure of other editing tools) shows up
        here as zeros.
        """
        params = dict(model.named_parameters())
        return {name: float((params[name].detach().float().cpu() - w.float()).norm())
                for name, w in self.original.items()}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no tensors)."""
        return {"config": self.config.to_dict(), "modules": self.modules,
                "train": [log.to_dict() for log in self.logs],
                "timings": {k: round(v, 3) for k, v in self.timings.items()},
                "projectors": self.projector_stats, "capability": self.capability,
                "statistics": list(self.statistics), "details": self.details}
