r"""Graders for the exercises of notebook ``03_low_curvature_subspace``.

Each grader raises ``AssertionError`` with a hint when the answer is wrong and prints ``"correct"``
when it is right. Derived in notebook ``03_low_curvature_subspace``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from crispedit_lite.projector import energy_rank

__all__ = ["check_energy_rank", "check_dense_projector"]


def check_energy_rank(my_energy_rank: Callable[[Tensor, float], int]) -> None:
    r"""Exercise 3.1: ``my_energy_rank(eigenvalues, gamma)`` is the :math:`k` of CrispEdit eq. 3.

    Compared with :func:`crispedit_lite.projector.energy_rank` on hand-made and random spectra
    (unsorted input, exact hits of :math:`\gamma`). Derived in notebook ``03_low_curvature_subspace``.
    """
    hand = torch.tensor([1.0, 4.0, 3.0, 2.0], dtype=torch.float64)
    cases = [(hand, g) for g in (0.4, 0.41, 0.7, 0.95, 1.0)]
    g = torch.Generator().manual_seed(7)
    for _ in range(5):
        ev = torch.rand(30, generator=g, dtype=torch.float64) ** 4
        cases += [(ev, gamma) for gamma in (0.5, 0.9, 0.99)]
    for ev, gamma in cases:
        want = energy_rank(ev, gamma)
        got = int(my_energy_rank(ev.clone(), gamma))
        assert got == want, (
            f"for eigenvalues {ev.tolist()[:6]}... and gamma={gamma}: expected k={want}, got {got}. "
            "Sort descending, take the cumulative sum over the total, and return the first r "
            "(counting from 1) whose ratio is >= gamma"
        )
    print("correct")


def check_dense_projector(dense_projector: Callable[[Tensor, float], Tensor]) -> None:
    r"""Exercise 3.2: ``dense_projector(M, gamma)`` is :math:`\mathbf U_{>k}\mathbf U_{>k}^\top`.

    Checked on random positive semi-definite matrices: symmetric, idempotent, of rank :math:`p-k`, and
    obeying :math:`\Delta^\top\mathbf M\Delta\le\sigma_{k+1}\|\Delta\|^2` on its range. Derived in
    notebook ``03_low_curvature_subspace``.
    """
    g = torch.Generator().manual_seed(9)
    for p, gamma in ((8, 0.9), (15, 0.5), (12, 0.99)):
        B = torch.randn(p, p, generator=g, dtype=torch.float64)
        M = B @ B.T
        P = torch.as_tensor(dense_projector(M, gamma), dtype=torch.float64)
        assert P.shape == (p, p), f"P must be ({p}, {p}), got {tuple(P.shape)}"
        assert torch.allclose(P, P.T, atol=1e-9), "P must be symmetric (U U^T)"
        assert torch.allclose(P @ P, P, atol=1e-9), "P must be idempotent: columns of U must be orthonormal"
        ev = torch.linalg.eigvalsh(M).flip(0)
        k = energy_rank(ev, gamma)
        rank = int(torch.linalg.matrix_rank(P))
        assert rank == p - k, (
            f"P should have rank p - k = {p - k} (k = {k} protected directions), got {rank}; "
            "keep the eigenvectors of the p - k SMALLEST eigenvalues"
        )
        top = torch.linalg.eigh(M).eigenvectors[:, -k:] if k else torch.zeros(p, 0, dtype=M.dtype)
        assert torch.allclose(P @ top, torch.zeros_like(top), atol=1e-8), (
            "P must annihilate the top-k eigenvectors of M (the protected, high-curvature directions)"
        )
        d = P @ torch.randn(p, generator=g, dtype=torch.float64)
        sigma = ev[k] if k < p else torch.tensor(0.0, dtype=M.dtype)
        assert d @ M @ d <= sigma * (d @ d) * (1 + 1e-9) + 1e-12
    print("correct")
