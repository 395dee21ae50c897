r"""Graders for the exercises of notebook ``08_one_framework``.

Each grader raises ``AssertionError`` with a hint when the answer is wrong and prints ``"correct"``
when it is right. Derived in notebook ``08_one_framework``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["check_alphaedit_update", "check_gn_quadratic"]


def check_alphaedit_update(fn: Callable[[Tensor, Tensor, Tensor], Tensor]) -> None:
    r"""Exercise 8.1: ``fn(K0, k, r)`` is the minimum-norm update meeting both constraints.

    The update :math:`\Delta\mathbf W` with :math:`\Delta\mathbf W\mathbf K_0=0` and
    :math:`\Delta\mathbf W\mathbf k=\mathbf r` of least norm is
    :math:`\mathbf r(\mathbf P\mathbf k)^\top/\|\mathbf P\mathbf k\|^2`, :math:`\mathbf P` the projector
    onto the orthogonal complement of the columns of :math:`\mathbf K_0` (AlphaEdit's null-space
    constraint for one key). Checked from its defining properties, the two constraints and rows in
    the span of the keys, so the grader does not carry the solution. Derived in notebook
    ``08_one_framework``.

    Derived in notebook ``08_one_framework``.
    """
    g = torch.Generator().manual_seed(81)
    for d_in, n, d_out in ((6, 2, 3), (10, 7, 4), (5, 1, 2)):
        K0 = torch.randn(d_in, n, generator=g, dtype=torch.float64)
        k = torch.randn(d_in, generator=g, dtype=torch.float64)
        r = torch.randn(d_out, generator=g, dtype=torch.float64)
        got = torch.as_tensor(fn(K0.clone(), k.clone(), r.clone()), dtype=torch.float64)
        assert got.shape == (d_out, d_in), f"return a ({d_out}, {d_in}) matrix, got {tuple(got.shape)}"
        assert torch.allclose(got @ K0, torch.zeros(d_out, n, dtype=torch.float64), atol=1e-9), (
            "the update must leave every capability key unchanged (dW @ K0 = 0): project k onto the "
            "orthogonal complement of K0's columns, not onto their span")
        assert torch.allclose(got @ k, r, atol=1e-9), (
            "the update must map the edit key to the new value (dW @ k = r): divide by |P k|^2, "
            "not by |k|^2")
        # least norm among all solutions <=> every row lies in the span of the constraint keys
        # [K0, k]; checked from the constraints alone, without the closed form
        Q, _ = torch.linalg.qr(torch.cat([K0, k[:, None]], 1))
        outside = got - (got @ Q) @ Q.T
        assert torch.allclose(outside, torch.zeros_like(got), atol=1e-9), (
            "constraints met but not the minimum-norm update: its rows must not have components "
            "orthogonal to both K0's columns and k")
    print("correct")


def check_gn_quadratic(fn: Callable[[Tensor, Tensor], float]) -> None:
    r"""Exercise 8.2: ``fn(logits, jv)`` is the Gauss-Newton quadratic form of a softmax output.

    That is :math:`\sum_t\mathbf u_t^\top(\mathrm{diag}\,\mathbf p_t-
    \mathbf p_t\mathbf p_t^\top)\mathbf u_t` with :math:`\mathbf p_t=\mathrm{softmax}(\mathbf z_t)`,
    :math:`\mathbf u_t` = row ``t`` of ``jv``. Derived in notebook ``08_one_framework``.
    """
    g = torch.Generator().manual_seed(82)
    for T, V in ((3, 5), (1, 4), (6, 11)):
        z = 2 * torch.randn(T, V, generator=g, dtype=torch.float64)
        u = torch.randn(T, V, generator=g, dtype=torch.float64)
        p = torch.softmax(z, -1)
        want = sum(float(u[t] @ (torch.diag(p[t]) - torch.outer(p[t], p[t])) @ u[t]) for t in range(T))
        got = float(fn(z.clone(), u.clone()))
        diag_only = float((p * u**2).sum())
        if abs(got - diag_only) < 1e-9 and abs(want - diag_only) > 1e-6:
            raise AssertionError("that is only the diag(p) part; subtract (p_t . u_t)^2 per position")
        assert abs(got - want) < 1e-9 * max(1.0, abs(want)), (
            f"got {got:.6g}, expected {want:.6g} for T={T}, V={V}: use p = softmax(logits) per "
            "position, then sum_v p_v u_v^2 - (sum_v p_v u_v)^2, summed over positions")
        shifted = float(fn(z.clone(), u + torch.randn(T, 1, generator=g, dtype=torch.float64)))
        assert abs(shifted - want) < 1e-9 * max(1.0, abs(want)), (
            "a constant shift of jv per position must not change the value (H 1 = 0)")
    print("correct")
