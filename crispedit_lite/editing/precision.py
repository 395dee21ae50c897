r"""How much of a weight update the weights' precision loses to rounding.

An editor that computes an update :math:`\Delta` (in float64, like MEMIT's, AlphaEdit's and
UltraEdit's solves) and adds it to weights stored in a reduced precision keeps only

.. math::

    \mathrm{fl}(W + \mathrm{fl}(\Delta)) - W,
    \qquad
    \text{lost} = \frac{\lVert \mathrm{fl}(W + \mathrm{fl}(\Delta)) - W - \Delta\rVert_F}
                       {\lVert \Delta\rVert_F},

with :math:`\mathrm{fl}` the rounding to the weights' dtype. bfloat16 keeps 8 significant bits, so an
entry of :math:`\Delta` smaller than about :math:`2^{-9}|W_{ij}|` is rounded away: on SmolLM2 one
UltraEdit turn at the official step size loses most of its update in bfloat16 (and about half in
float16), while MEMIT's and AlphaEdit's larger updates lose a few percent at most.
:func:`rounding_loss` measures this on the actual weights and update; :class:`RoundingLog` collects
it over the layers and chunks of a run, warns when more than :data:`LOSS_WARN` of an update is lost,
and gives ``EditResult.details["precision"]``.

Described on the book page ``reproducing``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

__all__ = ["LOSS_WARN", "REDUCED", "RoundingLog", "rounding_loss"]

#: Reduced precisions whose rounding is measured (float32 and float64 lose ~1e-7 and less).
REDUCED = (torch.bfloat16, torch.float16)
#: The fraction of an update lost to rounding above which a run warns and says so in its result.
LOSS_WARN = 0.01


def rounding_loss(weight: Tensor, delta: Tensor) -> float:
    r"""The fraction of ``delta`` that adding it to ``weight`` in ``weight.dtype`` loses to rounding.

    :math:`\lVert \mathrm{fl}(W + \mathrm{fl}(\Delta)) - W - \Delta\rVert_F / \lVert\Delta\rVert_F`,
    with the addition done as the editors do it (``weight.add_(delta.to(weight.dtype))``) on a copy,
    and the difference taken in float64. 0 for a zero update.

    Listed on the book page ``api``.
    """
    if weight.shape != delta.shape:
        raise ValueError(f"rounding_loss: weight {tuple(weight.shape)} and delta {tuple(delta.shape)} "
                         "differ in shape")
    with torch.no_grad():
        d = delta.detach().to(weight.device, torch.float64)
        norm = torch.linalg.norm(d)
        if norm == 0:
            return 0.0
        w = weight.detach()
        applied = w.clone().add_(delta.detach().to(w.device, w.dtype))
        kept = applied.double().sub_(w.double())
        return float(torch.linalg.norm(kept.sub_(d)) / norm)


@dataclass
class RoundingLog:
    """The rounding losses of one run's updates, per module (the largest over chunks).

    ``measure(module, weight, delta)`` before each update is added; nothing is measured when the
    weight is not in a :data:`REDUCED` precision. :meth:`summary` is ``details["precision"]``.

    Listed on the book page ``api``.
    """

    method: str
    weight_dtype: str = ""
    losses: dict[str, list[float]] = field(default_factory=dict)

    def measure(self, module: str, weight: Tensor, delta: Tensor) -> None:
        """Record the loss of adding ``delta`` to ``weight`` (only for reduced precisions)."""
        self.weight_dtype = str(weight.dtype).removeprefix("torch.")
        if weight.dtype in REDUCED:
            self.losses.setdefault(module, []).append(rounding_loss(weight, delta))

    def summary(self, warn: bool = True) -> dict[str, Any]:
        """``{"weight_dtype", "rounding_loss": {"max", "mean", "per_module"} or None, "warning"}``.

        With ``warn``, a loss above :data:`LOSS_WARN` also raises a :class:`UserWarning`.
        """
        out: dict[str, Any] = {"weight_dtype": self.weight_dtype, "warn_above": LOSS_WARN}
        every = [x for xs in self.losses.values() for x in xs]
        if not every:
            out.update(rounding_loss=None, warning=None)
            return out
        worst = max(self.losses, key=lambda m: max(self.losses[m]))
        top = max(every)
        out["rounding_loss"] = {"max": round(top, 6), "mean": round(sum(every) / len(every), 6),
                                "per_module": {m: round(max(v), 6) for m, v in self.losses.items()}}
        out["warning"] = None
        if top > LOSS_WARN:
            out["warning"] = (f"{self.method}: adding its updates to {self.weight_dtype} weights loses up to "
                              f"{100 * top:.1f} % of an update to rounding ({worst}); load the model in "
                              f"float32 to keep them")
            if warn:
                warnings.warn(out["warning"], stacklevel=3)
        return out
