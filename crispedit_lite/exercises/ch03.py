r"""Graders for the exercises of notebook ``03_low_curvature_subspace``.

The judges check defining properties with the library's energy rule as an independent oracle
(:func:`crispedit_lite.energy.energy_rank`, itself tested against a plain loop), never a copy of
the answer. Derived in notebook ``03_low_curvature_subspace``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from crispedit_lite.energy import energy_rank
from crispedit_lite.exercises.core import exercise

__all__ = ["check_gamma_for_tolerance", "check_dense_projector"]


def _spectra() -> list[tuple[Tensor, float]]:
    hand = torch.tensor([1.0, 4.0, 3.0, 2.0, -1e-12], dtype=torch.float64)
    cases = [(hand, e) for e in (0.5, 2.0, 2.5, 3.999)]
    # a negative eigenvalue larger in size than eps: it is rounding of a PSD matrix, not curvature
    neg = torch.tensor([5.0, -0.8, 2.0, 0.5, 0.05], dtype=torch.float64)
    cases += [(neg, 0.1), (neg, 1.0)]
    g = torch.Generator().manual_seed(7)
    for _ in range(4):
        ev = torch.rand(30, generator=g, dtype=torch.float64) ** 4
        cases += [(ev, float(e)) for e in (ev.max() * 1e-3, ev.median(), ev.max() * 0.5)]
    return cases


def _probe_gamma(fn) -> dict[str, Any]:
    return {"gammas": [float(fn(ev.clone(), eps)) for ev, eps in _spectra()]}


@exercise(
    "ex-03-1", probe=_probe_gamma, forbidden=["energy_threshold"], piece="the inverse of the energy rule"
)
def check_gamma_for_tolerance(obs: dict[str, Any]) -> None:
    r"""Exercise 3.1: ``gamma_for_tolerance(eigenvalues, eps)``: which gamma protects exactly those above eps.

    Judged with the energy rule itself: at the returned :math:`\gamma` the rule must protect
    exactly the eigenvalues above ``eps``, and at any larger :math:`\gamma` more (hand-made and
    random spectra in any order, ties at ``eps``, negative rounding errors larger than ``eps``).
    Derived in notebook ``03_low_curvature_subspace``.
    """
    for (ev, eps), got in zip(_spectra(), obs["gammas"]):
        shown = [round(v, 4) for v in ev.tolist()[:6]]
        assert 0.0 < got <= 1.0 + 1e-12, f"gamma is a fraction of the total curvature, got {got}"
        need = int((ev > eps).sum())
        pos = ev.clamp_min(0)
        squares = float((pos[ev > eps] ** 2).sum() / (pos**2).sum())
        k = energy_rank(ev, min(max(got - 1e-12, 1e-15), 1.0))  # the rule at your gamma, up to rounding
        n_pos = int((ev > 0).sum())
        larger = energy_rank(ev, min(got + 1e-12, 1.0)) if need < n_pos else need + 1
        if (k != need or larger <= need) and abs(got - squares) < 1e-9:
            raise AssertionError(
                "energy is measured by the eigenvalues themselves (the trace), not their squares"
            )
        assert k >= need, (
            f"for eigenvalues {shown}... and eps={eps:.4g}, the energy rule at your gamma={got:.6f} protects "
            f"{k} directions, fewer than the {need} eigenvalues above eps"
        )
        assert k == need, (
            f"for eigenvalues {shown}... and eps={eps:.4g}, the energy rule at your gamma={got:.6f} protects "
            f"{k} directions; only the {need} above eps must be (is an eigenvalue equal to eps, or a "
            "negative one, counted?)"
        )
        assert larger > need, (
            f"for eigenvalues {shown}... and eps={eps:.4g}, a gamma larger than yours ({got:.6f}) still "
            "protects "
            "only the eigenvalues above eps: return the largest one"
        )


def _psd_cases() -> list[tuple[Tensor, float]]:
    g = torch.Generator().manual_seed(9)
    out = []
    for p, gamma in ((8, 0.9), (15, 0.5), (12, 0.99)):
        B = torch.randn(p, p, generator=g, dtype=torch.float64)
        out.append((B @ B.T, gamma))
    B = torch.randn(10, 4, generator=g, dtype=torch.float64)  # rank 4: a null space of dimension 6
    out.append((B @ B.T, 0.8))
    return out


def _probe_dense_projector(fn) -> dict[str, Any]:
    return {"P": [torch.as_tensor(fn(M.clone(), gamma), dtype=torch.float64) for M, gamma in _psd_cases()]}


@exercise("ex-03-2", probe=_probe_dense_projector)
def check_dense_projector(obs: dict[str, Any]) -> None:
    r"""Exercise 3.2: ``dense_projector(Omega, gamma)``, the projector onto the editable subspace of Omega.

    Checked on random positive semi-definite matrices (one rank-deficient): symmetric, idempotent,
    of rank :math:`p-k` with :math:`k` from the energy rule, annihilating the top-:math:`k`
    eigenvectors, and meeting :math:`\Delta^\top\boldsymbol\Omega\Delta\le\sigma_{k+1}\|\Delta\|^2` on its
    range. Derived in notebook ``03_low_curvature_subspace``.
    """
    g = torch.Generator().manual_seed(10)
    for (M, gamma), P in zip(_psd_cases(), obs["P"]):
        p = M.shape[0]
        assert P.shape == (p, p), f"P must be ({p}, {p}), got {tuple(P.shape)}"
        assert torch.allclose(P, P.T, atol=1e-9), "P must be symmetric"
        assert torch.allclose(P @ P, P, atol=1e-8), (
            "P must be idempotent (P @ P == P): are its directions orthonormal?"
        )
        lam, vecs = torch.linalg.eigh(M)
        k = energy_rank(lam, gamma)
        rank = int(torch.linalg.matrix_rank(P, hermitian=True))
        assert rank == p - k, (
            f"P should have rank {p - k} for gamma = {gamma} (the energy rule protects {k} of {p} "
            f"directions), got rank {rank}"
        )
        top = vecs[:, p - k :]
        assert torch.allclose(P @ top, torch.zeros_like(top), atol=1e-7), (
            "P must remove the protected (highest-curvature) directions; it keeps some of them"
        )
        d = P @ torch.randn(p, generator=g, dtype=torch.float64)
        sigma = lam.flip(0)[k] if k < p else torch.tensor(0.0, dtype=M.dtype)
        assert d @ M @ d <= sigma.clamp_min(0) * (d @ d) * (1 + 1e-8) + 1e-10, (
            "a step in the range of P meets more curvature than the largest editable eigenvalue"
        )
