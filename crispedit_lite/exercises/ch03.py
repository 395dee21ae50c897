r"""Graders for the exercises of notebook ``03_low_curvature_subspace``.

Each grader raises ``AssertionError`` with a hint when the answer is wrong and prints ``"correct"``
when it is right. Derived in notebook ``03_low_curvature_subspace``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from crispedit_lite.projector import energy_rank

__all__ = ["check_gamma_for_tolerance", "check_dense_projector"]


def _gamma_for_tolerance(eigenvalues: Tensor, eps: float) -> float:
    """Independent reference: a plain Python loop over the clamped eigenvalues."""
    vals = [max(float(v), 0.0) for v in eigenvalues.tolist()]
    total = sum(vals)
    return sum(v for v in vals if v > eps) / total


def check_gamma_for_tolerance(fn: Callable[[Tensor, float], float]) -> None:
    r"""Exercise 3.1: ``fn(eigenvalues, eps)``, the :math:`\gamma` at which the energy rule meets a tolerance.

    To guarantee :math:`\Delta^\top\boldsymbol\Omega\Delta\le\varepsilon\|\Delta\|^2` on the editable
    subspace, every eigenvalue above :math:`\varepsilon` must be protected; the energy rule does
    exactly that at

    .. math::

        \gamma(\varepsilon)=\frac{\sum_{i:\,\sigma_i>\varepsilon}\sigma_i}{\sum_i\sigma_i}

    (eigenvalues in any order; negative round-off clamped to zero; "energy" is the trace, not squared
    eigenvalues). Compared with a plain loop on hand-made and random spectra, including an
    :math:`\varepsilon` equal to an eigenvalue. Derived in notebook ``03_low_curvature_subspace``.
    """
    hand = torch.tensor([1.0, 4.0, 3.0, 2.0, -1e-12], dtype=torch.float64)
    cases = [(hand, e) for e in (0.5, 2.0, 2.5, 3.999, 4.0)]
    g = torch.Generator().manual_seed(7)
    for _ in range(4):
        ev = torch.rand(30, generator=g, dtype=torch.float64) ** 4
        cases += [(ev, float(e)) for e in (ev.max() * 1e-3, ev.median(), ev.max() * 0.5)]
    for ev, eps in cases:
        want = _gamma_for_tolerance(ev, eps)
        got = float(fn(ev.clone(), eps))
        assert 0.0 <= got <= 1.0 + 1e-12, f"gamma is a fraction of the total curvature, got {got}"
        squares = float((ev.clamp_min(0)[ev > eps] ** 2).sum() / (ev.clamp_min(0) ** 2).sum())
        if abs(got - squares) < 1e-9 and abs(want - squares) > 1e-9:
            raise AssertionError("energy is the sum of eigenvalues (the trace), not of their squares")
        assert abs(got - want) < 1e-9, (
            f"for eigenvalues {[round(v, 4) for v in ev.tolist()[:6]]}... and eps={eps:.4g}: expected "
            f"gamma={want:.6f}, got {got:.6f}. Protect every eigenvalue strictly above eps; gamma is their "
            "share of the sum of all (clamped) eigenvalues")
    print("correct")


def check_dense_projector(dense_projector: Callable[[Tensor, float], Tensor]) -> None:
    r"""Exercise 3.2: ``dense_projector(Omega, gamma)`` is :math:`\mathbf U_{>k}\mathbf U_{>k}^\top`.

    Checked on random positive semi-definite matrices: symmetric, idempotent, of rank :math:`p-k`, and
    obeying :math:`\Delta^\top\boldsymbol\Omega\Delta\le\sigma_{k+1}\|\Delta\|^2` on its range. Derived in
    notebook ``03_low_curvature_subspace``.
    """
    g = torch.Generator().manual_seed(9)
    for p, gamma in ((8, 0.9), (15, 0.5), (12, 0.99)):
        B = torch.randn(p, p, generator=g, dtype=torch.float64)
        Omega = B @ B.T
        P = torch.as_tensor(dense_projector(Omega, gamma), dtype=torch.float64)
        assert P.shape == (p, p), f"P must be ({p}, {p}), got {tuple(P.shape)}"
        assert torch.allclose(P, P.T, atol=1e-9), "P must be symmetric (U U^T)"
        assert torch.allclose(P @ P, P, atol=1e-9), "P must be idempotent: columns of U must be orthonormal"
        ev = torch.linalg.eigvalsh(Omega).flip(0)
        k = energy_rank(ev, gamma)
        rank = int(torch.linalg.matrix_rank(P))
        assert rank == p - k, (
            f"P should have rank p - k = {p - k} (k = {k} protected directions), got {rank}; "
            "keep the eigenvectors of the p - k SMALLEST eigenvalues"
        )
        top = torch.linalg.eigh(Omega).eigenvectors[:, -k:] if k else torch.zeros(p, 0, dtype=Omega.dtype)
        assert torch.allclose(P @ top, torch.zeros_like(top), atol=1e-8), (
            "P must annihilate the top-k eigenvectors of Omega (the protected, high-curvature directions)"
        )
        d = P @ torch.randn(p, generator=g, dtype=torch.float64)
        sigma = ev[k] if k < p else torch.tensor(0.0, dtype=Omega.dtype)
        assert d @ Omega @ d <= sigma * (d @ d) * (1 + 1e-9) + 1e-12
    print("correct")
