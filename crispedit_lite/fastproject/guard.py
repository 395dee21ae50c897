r"""The editors' projection: the staircase-block form where it is cheaper *and* passes a precision check.

:class:`~crispedit_lite.fastproject.FastProjector` computes the paper's projection

.. math::

    \mathbf P(\mathbf G)=\mathbf G-\sum_{b}\mathbf U_{\rm out}^{(b)}\big((\mathbf U_{\rm out}^{(b)\top}
    \mathbf G\mathbf U_{\rm in}^{(b)})\odot(1-\mathbf M)_b\big)\mathbf U_{\rm in}^{(b)\top}

(the protected staircase covered by rectangles :math:`b`), which equals the reference
:math:`\mathbf U_{\rm out}((\mathbf U_{\rm out}^\top\mathbf G\mathbf U_{\rm in})\odot\mathbf M)
\mathbf U_{\rm in}^\top` in exact arithmetic, so the ProjectedAdam iterates are the paper's. In
floating point the subtraction can cancel: measured on an H200 in bf16 at :math:`\gamma = 0.999` it
left 6.6 % of the result in the protected subspace, against 0.06 % for the reference. Hence
:func:`guarded_projector`:

* the eigenbases are kept in float32 whatever the model's dtype (the gradient is cast up and back);
* the form is used only where its FLOP count (:func:`~crispedit_lite.fastproject.projection_flops`)
  is below the reference's;
* and only if, on a seeded random gradient, it matches the reference to a relative error below
  ``tol`` *and* leaves at most ``tol`` of its norm in the protected subspace (the mask's complement in
  the eigenbasis). Otherwise the reference projector is returned unchanged.

The choice and both measured errors are returned, and the editors record them per layer in
``EditResult.projector_stats`` (``projection``, ``projection_error``, ``protected_leak``).

Described on the book page ``performance``.
"""

from __future__ import annotations

from typing import Any

import torch

from crispedit_lite.fastproject.fast_projector import FastProjector
from crispedit_lite.projector import KroneckerProjector

__all__ = ["GUARD_TOL", "guarded_projector"]

GUARD_TOL = 1e-4  # float32 rounding of these products is ~1e-6 relative; a cancelling form is far above


def guarded_projector(proj: KroneckerProjector, *, tol: float = GUARD_TOL,
                      seed: int = 0) -> tuple[Any, dict[str, Any]]:
    """``(projector, info)``: the float32 block form of ``proj`` if cheaper and accurate, else ``proj``.

    ``info`` holds ``projection`` (``"blocks"`` or ``"reference"``), ``reason``, and for a checked
    block form ``projection_error`` (relative to the reference) and ``protected_leak`` (share of the
    result's norm in the protected subspace).

    Described on the book page ``performance``.
    """
    fast = FastProjector.from_projector(proj, dtype=torch.float32, method="blocks")
    flops = fast.flops(None)
    if not fast.blocks:  # nothing protected: the projection is the identity
        return fast, {"projection": "blocks", "reason": "nothing protected", "projection_error": 0.0,
                      "protected_leak": 0.0}
    if flops["blocks"] >= flops["reference"]:
        return proj, {"projection": "reference", "reason": "the block form is not cheaper"}
    d_out, d_in = proj.shape
    gen = torch.Generator(device="cpu").manual_seed(seed)
    g = torch.randn(d_out, d_in, generator=gen, dtype=torch.float32).to(proj.U_in.device)
    if proj.transposed:
        g = g.T.contiguous()
    ref = proj.project(g.to(proj.U_in.dtype)).double()
    got = fast.project(g).double()
    err = float((got - ref).norm() / ref.norm().clamp_min(1e-30))
    u_out, u_in = proj.U_out.double(), proj.U_in.double()
    core = u_out.T @ (got.T if proj.transposed else got) @ u_in
    leak = float((core * (~proj.mask)).norm() / core.norm().clamp_min(1e-30))
    info = {"projection_error": err, "protected_leak": leak}
    if err > tol or leak > tol:
        return proj, {"projection": "reference", "reason": f"block form failed the precision check "
                      f"(error {err:.1e}, leak {leak:.1e} > {tol:.0e})", **info}
    return fast, {"projection": "blocks", "reason": "cheaper and within the precision check", **info}
