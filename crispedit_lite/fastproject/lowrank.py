r"""The low-rank gradient form: project a batch's gradient from its per-token factors, never forming it.

A linear layer's weight gradient over a batch of :math:`T` tokens is
:math:`\mathbf G=\sum_t\mathbf g_t\mathbf a_t^\top=\mathbf G_{\rm out}^\top\mathbf A_{\rm in}`, so the rotated
core of the projection is

.. math::

    \mathbf U_{\rm out}^\top\mathbf G\mathbf U_{\rm in}
    =(\mathbf G_{\rm out}\mathbf U_{\rm out})^\top(\mathbf A_{\rm in}\mathbf U_{\rm in}),

:math:`2T(d_{\rm out}^2+d_{\rm in}^2+d_{\rm out}d_{\rm in})` FLOPs instead of
:math:`2d_{\rm out}d_{\rm in}(d_{\rm out}+d_{\rm in})`. :class:`TokenFactorCapture` records the
per-token factors during training, with the hooks of K-FAC
(:func:`crispedit_lite.kfac.capture.hook_inputs_and_output_grads`). The reference projection is
derived in notebook ``05_matrix_free_projector``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from crispedit_lite.kfac.capture import hook_inputs_and_output_grads
from crispedit_lite.projector import KroneckerProjector

__all__ = ["lowrank_core", "lowrank_project", "TokenFactorCapture"]


def _as_rows(x: Tensor, d: int, name: str) -> Tensor:
    if x.shape[-1] != d:
        raise ValueError(f"{name} has last dimension {x.shape[-1]}, expected {d}")
    return x.reshape(-1, d)


def lowrank_core(Gout: Tensor, Ain: Tensor, U_out: Tensor, U_in: Tensor) -> Tensor:
    r"""Return the rotated gradient core from per-token factors, never forming ``G``.

    :math:`(\mathbf G_{\rm out}\mathbf U_{\rm out})^\top(\mathbf A_{\rm in}\mathbf U_{\rm in})
    =\mathbf U_{\rm out}^\top(\mathbf G_{\rm out}^\top\mathbf A_{\rm in})\mathbf U_{\rm in}`.

    ``Gout``: ``(..., d_out)`` output gradients, ``Ain``: ``(..., d_in)`` inputs, one row per token (leading
    dims flattened); ``U_out``/``U_in`` may be column slices. Computed in ``U_in``'s dtype.

    Listed on the book page ``api``.
    """
    dt = U_in.dtype
    g = _as_rows(Gout, U_out.shape[0], "Gout").to(dt)
    a = _as_rows(Ain, U_in.shape[0], "Ain").to(dt)
    if g.shape[0] != a.shape[0]:
        raise ValueError(f"Gout has {g.shape[0]} token rows but Ain has {a.shape[0]}")
    return (g @ U_out).T @ (a @ U_in)


def lowrank_project(proj: KroneckerProjector, Gout: Tensor, Ain: Tensor) -> Tensor:
    r"""Project :math:`\mathbf G=\mathbf G_{\rm out}^\top\mathbf A_{\rm in}` without forming it (form (a)).

    Equals ``proj.project(Gout.T @ Ain)`` (transposed for a ``transposed`` projector) up to rounding.
    Returned in the projector's dtype.

    Described on the book page ``performance``.
    """
    core = lowrank_core(Gout, Ain, proj.U_out, proj.U_in) * proj.mask
    out = (proj.U_out @ core) @ proj.U_in.T
    return out.T if proj.transposed else out


class TokenFactorCapture:
    """Record per-token layer inputs and output gradients during training, for form (a).

    Hooks each named module; after a backward pass, :meth:`pop` returns the ``(Gout, Ain)`` rows of every
    backward since the last pop (so gradient accumulation over micro-batches matches ``p.grad``).
    A forward whose output gets no gradient leaves nothing behind. Call :meth:`clear` wherever the
    gradients are zeroed without an optimiser step, and :meth:`remove` (or leave the ``with`` block)
    to take the hooks off.

    Described on the book page ``performance``.
    """

    def __init__(self, modules: Mapping[str, nn.Module]) -> None:
        self._rows: dict[str, list[tuple[Tensor, Tensor]]] = {n: [] for n in modules}
        self._handles = hook_inputs_and_output_grads(modules, self._on_grad)

    def _on_grad(self, name: str, a: Tensor, g: Tensor) -> None:
        self._rows[name].append((g.reshape(-1, g.shape[-1]), a.reshape(-1, a.shape[-1])))

    def pop(self, name: str) -> tuple[Tensor, Tensor] | None:
        """``(Gout (T, d_out), Ain (T, d_in))`` accumulated for ``name``, or ``None``; clears them."""
        rows = self._rows.get(name)
        if not rows:
            return None
        self._rows[name] = []
        if len(rows) == 1:
            return rows[0]
        return torch.cat([g for g, _ in rows]), torch.cat([a for _, a in rows])

    def clear(self) -> None:
        """Drop everything recorded."""
        for n in self._rows:
            self._rows[n] = []

    def remove(self) -> None:
        """Remove the hooks."""
        for h in self._handles:
            h.remove()
        self._handles = []
        self.clear()

    def __enter__(self) -> TokenFactorCapture:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()
