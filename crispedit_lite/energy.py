r"""The energy rule (CrispEdit eq. 3) and the eigendecompositions it runs on.

A curvature with eigenvalues :math:`\sigma_1\ge\sigma_2\ge\dots` is split by the smallest :math:`k`
whose top-:math:`k` eigenvalues hold a fraction :math:`\gamma` of the trace: those directions are
protected, every other one is editable. :mod:`crispedit_lite.projector` applies the rule to the
products :math:`\lambda^{\rm out}_i\lambda^{\rm in}_j` of the two K-FAC factors. Every "keep the
top :math:`\gamma` of the energy" of the package goes through this module: :func:`energy_curve` (the
cumulative share), :func:`energy_rank` (the cut :math:`k`), :func:`energy_threshold` (the eigenvalue
at the cut) and :func:`energy_mask` (which entries are editable).

Derived in notebook ``03_low_curvature_subspace``.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

__all__ = ["Rule", "energy_curve", "energy_mask", "energy_rank", "energy_threshold"]

Rule = Literal["paper", "code"]


def _check_gamma(gamma: float) -> float:
    gamma = float(gamma)
    if not (0.0 < gamma <= 1.0):
        raise ValueError(f"gamma must lie in (0, 1], got {gamma}")
    return gamma


def _sorted_energy(eigenvalues: Tensor) -> tuple[Tensor, Tensor]:
    ev = torch.as_tensor(eigenvalues).detach().reshape(-1).to(torch.float64)
    if ev.numel() == 0:
        raise ValueError("energy rule needs at least one eigenvalue")
    if not torch.isfinite(ev).all():
        raise ValueError("eigenvalues contain NaN or Inf")
    ev = ev.clamp_min(0.0)  # tiny negative values from eigh are rounding, not curvature
    srt = torch.sort(ev, descending=True).values
    return srt, torch.cumsum(srt, 0)


def _rank(cum: Tensor, gamma: float) -> int:
    total = cum[-1]
    if total <= 0:
        return 0
    ratio = cum / total
    target = torch.tensor([gamma], dtype=ratio.dtype, device=ratio.device)
    return int(torch.searchsorted(ratio, target).item()) + 1


def energy_curve(eigenvalues: Tensor) -> Tensor:
    r"""Share of the trace held by the top-:math:`r` eigenvalues, for :math:`r = 1, \dots, n`.

    .. math:: e_r = \textstyle\sum_{i\le r}\sigma_i \big/ \sum_i \sigma_i

    in float64, non-decreasing, ending at 1 (all zeros for an all-zero spectrum). Eigenvalues may come
    in any order and shape; negatives (``eigh`` rounding) count as zero. :func:`energy_rank` is the
    first :math:`r` with :math:`e_r\ge\gamma`. Derived in notebook ``03_low_curvature_subspace``.
    """
    _, cum = _sorted_energy(eigenvalues)
    total = cum[-1]
    return cum / total if total > 0 else torch.zeros_like(cum)


def energy_rank(eigenvalues: Tensor, gamma: float) -> int:
    r"""Smallest :math:`k` whose top-:math:`k` eigenvalues hold a fraction :math:`\gamma` of the trace.

    .. math:: k = \min\{r : \textstyle\sum_{i\le r}\sigma_i \ge \gamma \sum_i \sigma_i\}

    (CrispEdit eq. 3). Eigenvalues may come in any order and shape; negatives (``eigh`` rounding) are
    clamped to zero and the cumulative sum runs in float64. All-zero curvature gives ``k = 0``.
    Derived in notebook ``03_low_curvature_subspace``.
    """
    gamma = _check_gamma(gamma)
    return _rank(_sorted_energy(eigenvalues)[1], gamma)


def energy_threshold(eigenvalues: Tensor, gamma: float, rule: Rule = "code") -> float:
    r"""The eigenvalue at the cut: :math:`\sigma_{k+1}` (``"paper"``) or :math:`\sigma_k` (``"code"``).

    ``"paper"``: editable iff :math:`\lambda\le\sigma_{k+1}` (eq. 6 read literally); ``"code"``:
    editable iff :math:`\lambda<\sigma_k` (the official implementation). They differ only when
    :math:`\sigma_{k+1}=\sigma_k`: then eq. 6 leaves the tied members of the top-:math:`k` editable,
    so less than :math:`\gamma` of the energy is protected, while the strict rule protects the whole
    tied group and keeps eq. 3's guarantee (protected energy :math:`\ge\gamma`). That guarantee is
    what the paper means, so ``"code"`` is the default everywhere. Derived in notebook
    ``04_kfac_step_by_step``.

    Listed on the book page ``api``.
    """
    gamma = _check_gamma(gamma)
    srt, cum = _sorted_energy(eigenvalues)  # one sort, on the eigenvalues' device
    k = _rank(cum, gamma)
    if rule == "paper":
        return float(srt[k]) if k < srt.numel() else -1.0  # k = all: nothing editable
    if rule == "code":
        return float(srt[k - 1]) if k > 0 else float("inf")
    raise ValueError(f"rule must be 'paper' or 'code', got {rule!r}")


def energy_mask(values: Tensor, gamma: float, rule: Rule = "code",
                rtol: float = 1e-9) -> tuple[Tensor, float]:
    r"""Which of ``values`` the energy rule leaves editable, and the cut: ``(mask, threshold)``.

    ``threshold`` is :func:`energy_threshold` of all ``values``; ``mask`` (``values``' shape) is true
    where a value is editable: :math:`v<\sigma_k` (``"code"``) or :math:`v\le\sigma_{k+1}`
    (``"paper"``), values within ``rtol`` (relative) of the cut counting as tied with it. Negative
    values count as zero. Used on the products :math:`\lambda^{\rm out}_i\lambda^{\rm in}_j`
    (CrispEdit), on E-KFAC's eigenvalues and on one factor's eigenvalues (Adam-NSCL, AlphaEdit's
    energy rule). The rule is derived in notebook ``03_low_curvature_subspace``; notebook
    ``07_sequential_editing`` calls this function on raw float32 eigenvalues.
    """
    gamma = _check_gamma(gamma)
    v = torch.as_tensor(values).detach().to(torch.float64).clamp_min(0.0)
    threshold = energy_threshold(v, gamma, rule)
    return _editable(v, threshold, rule, rtol), threshold


def _editable(values: Tensor, threshold: float, rule: Rule, rtol: float) -> Tensor:
    # values within rtol (relative) of the threshold count as tied with it
    tol = rtol * abs(threshold) if threshold not in (float("inf"), -1.0) else 0.0
    if rule == "paper":
        return values <= threshold + tol
    return values < threshold - tol


def _eigh(m: Tensor, name: str, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"{name} must be a square matrix, got shape {tuple(m.shape)}")
    if not torch.isfinite(m).all():
        raise ValueError(f"{name} contains NaN or Inf")
    sym = (m + m.T) / 2
    evals, evecs = torch.linalg.eigh(sym.to(dtype))
    eps = torch.finfo(dtype).eps
    if dtype != torch.float64:
        # A low-precision eigh gets small eigenvalues wrong by ~eps * max, so the energy rule near
        # gamma = 1 would miscount them. Use the float64 Rayleigh quotients u_j^T M u_j of the computed
        # basis instead: they are the curvature the projector actually sees along its directions, sum
        # exactly to the trace, and err only to second order in the eigenvector error.
        u = evecs.to(torch.float64)
        evals, eps = ((sym.to(torch.float64) @ u) * u).sum(0), torch.finfo(torch.float64).eps
    # values below the rounding level (d * eps * max, the matrix_rank tolerance) are numerically
    # zero: clamp them, so that gamma = 1 gives the exact null space
    floor = m.shape[0] * eps * evals.abs().max()
    return torch.where(evals > floor, evals, torch.zeros_like(evals)), evecs
