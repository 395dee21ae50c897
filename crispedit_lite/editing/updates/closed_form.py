r"""Closed-form locate-then-edit updates: MEMIT, AlphaEdit's null-space projector and update, ROME.

Pure tensor algebra on one edited matrix :math:`W` (``down_proj``, shape ``d_out x d_in``). Keys
:math:`K_1=[k_1\dots k_u]` are the matrix inputs of the edits (columns, ``d_in x u``), the
residuals :math:`R = V_1 - W K_1` the wanted change of its outputs (``d_out x u``), and
:math:`C=\mathbb E[kk^\top]` the per-token, uncentred second moment of its inputs on preserved text
(the K-FAC input factor :math:`A`). Every solve runs in float64 and returns a float64 :math:`\Delta`
in :math:`W`'s layout.

* MEMIT (Meng et al., ICLR 2023): :math:`\min_\Delta \lambda\,\mathrm{tr}(\Delta C\Delta^\top)
  + \lVert (W+\Delta)K_1 - V_1\rVert^2` gives :math:`\Delta = RK_1^\top(\lambda C + K_1K_1^\top)^{-1}`.
* AlphaEdit (Fang et al., ICLR 2025): :math:`\Delta = \Delta P` with :math:`P=U_0U_0^\top` the
  projector onto the (near-)null space of :math:`C`, and :math:`\Delta = RK_1^\top P\,
  \big((K_pK_p^\top + K_1K_1^\top)P + \alpha I\big)^{-1}`.
* ROME (Meng et al., NeurIPS 2022): the rank-one :math:`\Delta=(v_*-Wk_*)\,(C^{-1}k_*)^\top /
  ((C^{-1}k_*)^\top k_*)`, which maps :math:`k_*` to :math:`v_*` exactly.

Derived in notebook ``08_one_framework``.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
from torch import Tensor

from crispedit_lite.energy import energy_mask

__all__ = ["NullSpace", "alphaedit_delta", "alphaedit_projector", "memit_delta", "rome_delta"]

_F64 = torch.float64


def _mat(x: Tensor, name: str, rows: int | None = None, cols: int | None = None) -> Tensor:
    x = torch.as_tensor(x)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a matrix, got shape {tuple(x.shape)}")
    if (rows is not None and x.shape[0] != rows) or (cols is not None and x.shape[1] != cols):
        raise ValueError(f"{name} has shape {tuple(x.shape)}, expected "
                         f"({rows if rows is not None else '*'}, {cols if cols is not None else '*'})")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or Inf")
    return x.to(_F64)


def _check_keys(R: Tensor, K1: Tensor) -> tuple[Tensor, Tensor]:
    K1 = _mat(K1, "K1 (keys, d_in x u)")
    R = _mat(R, "R (residuals, d_out x u)", cols=K1.shape[1])
    return R, K1


def memit_delta(R: Tensor, K1: Tensor, C: Tensor, lam: float, cache: Tensor | None = None) -> Tensor:
    r"""MEMIT's least-squares update of one layer.

    .. math::

        \Delta = R\,K_1^\top\big(\lambda C + C_{\rm cache} + K_1K_1^\top\big)^{-1},

    the minimiser of :math:`\lambda\,\mathrm{tr}(\Delta C\Delta^\top)+\mathrm{tr}(\Delta C_{\rm cache}
    \Delta^\top)+\lVert\Delta K_1-R\rVert_F^2` (Meng et al., 2023, eq. 14; ``cache`` is
    :math:`\sum K_pK_p^\top` of earlier batches in sequential MEMIT). Solved in float64 as
    ``solve(M, K1)`` with :math:`M` symmetric, as ``memit_main.py`` does.

    Args:
        R: residuals ``V1 - W K1``, ``(d_out, u)``.
        K1: edit keys, ``(d_in, u)``.
        C: per-token input second moment, ``(d_in, d_in)``.
        lam: MEMIT's ``mom2_update_weight`` (15,000 for Llama-3-8B); must be >= 0.
        cache: accumulated :math:`\sum K_pK_p^\top`, ``(d_in, d_in)``, or ``None``.

    Returns:
        :math:`\Delta`, ``(d_out, d_in)`` float64.

    Listed on the book page ``api``.
    """
    R, K1 = _check_keys(R, K1)
    d_in = K1.shape[0]
    C = _mat(C, "C (input covariance)", d_in, d_in)
    if not lam >= 0:
        raise ValueError(f"lam (MEMIT's mom2_update_weight) must be >= 0, got {lam}")
    M = float(lam) * C + K1 @ K1.T
    if cache is not None:
        M = M + _mat(cache, "cache (sum of earlier K K^T)", d_in, d_in)
    adj_k = torch.linalg.solve(M, K1)  # M^{-1} K1, M symmetric
    return R @ adj_k.T


class NullSpace(NamedTuple):
    r"""AlphaEdit's projector and how it was cut.

    Attributes:
        P: :math:`U_0U_0^\top`, ``(d_in, d_in)`` float64.
        rank: number of null-space directions (columns of :math:`U_0`).
        cut: the eigenvalue threshold (below it a direction is in the null space).
        rule: ``"absolute"`` or ``"energy"``.

    Listed on the book page ``api``.
    """

    P: Tensor
    rank: int
    cut: float
    rule: str


def alphaedit_projector(
    C: Tensor,
    threshold: float = 2e-2,
    rule: Literal["absolute", "energy"] = "absolute",
    gamma: float | None = None,
) -> NullSpace:
    r"""AlphaEdit's null-space projector :math:`P = U_0U_0^\top` of the input covariance :math:`C`.

    With :math:`C = U\,\mathrm{diag}(\sigma)\,U^\top` (float64 ``eigh``), :math:`U_0` holds the
    eigenvectors that are (almost) never excited by preserved text:

    * ``rule="absolute"`` (Fang et al., 2025, the official ``nullspace_threshold``): :math:`\sigma_j <
      \tau` with :math:`\tau=` ``threshold`` (2e-2 on Llama-3-8B's count-normalised :math:`C`; the
      scale is model-specific);
    * ``rule="energy"`` (comparable to CrispEdit's :math:`\gamma`, eq. 3): the top eigenvalues holding a
      fraction ``gamma`` of :math:`\mathrm{tr}\,C` are protected
      (:func:`crispedit_lite.energy.energy_threshold`, tie rule ``"code"``), every other one is in
      :math:`U_0`. This is the input projector of Adam-NSCL at the same :math:`\gamma`.

    Returns:
        :class:`NullSpace` (``P`` symmetric and idempotent).

    Derived in notebook ``08_one_framework``.
    """
    C = _mat(C, "C (input covariance)")
    if C.shape[0] != C.shape[1]:
        raise ValueError(f"C must be square, got shape {tuple(C.shape)}")
    evals, evecs = torch.linalg.eigh((C + C.T) / 2)
    if rule == "absolute":
        if not threshold > 0:
            raise ValueError(f"threshold must be positive, got {threshold}")
        cut = float(threshold)
        keep = evals < cut
    elif rule == "energy":
        if gamma is None:
            raise ValueError("rule='energy' needs gamma (the protected energy fraction)")
        keep, cut = energy_mask(evals, gamma, "code", rtol=1e-9)
    else:
        raise ValueError(f"rule must be 'absolute' or 'energy', got {rule!r}")
    U0 = evecs[:, keep]
    return NullSpace(P=U0 @ U0.T, rank=int(keep.sum()), cut=cut, rule=rule)


def alphaedit_delta(R: Tensor, K1: Tensor, P: Tensor, l2: float, cache: Tensor | None = None) -> Tensor:
    r"""AlphaEdit's projected update of one layer.

    .. math::

        \Delta = R\,K_1^\top P\,\big((K_pK_p^\top + K_1K_1^\top)P + \alpha I\big)^{-1}

    (Fang et al., 2025, eq. 10, :math:`\alpha=` ``l2``, :math:`K_pK_p^\top=` ``cache``). In code form
    (``AlphaEdit_main.py``) :math:`X=\mathrm{solve}(P(K_1K_1^\top+C_{\rm cache})+\alpha I,\;PK_1R^\top)`
    and :math:`\Delta = X^\top`. It satisfies the stationarity equation
    :math:`\Delta\big((K_1K_1^\top+C_{\rm cache})P+\alpha I\big)=RK_1^\top P`, hence
    :math:`\Delta(I-P)=0`: the update never touches the protected directions.

    Args:
        R: residuals, ``(d_out, u)``. K1: keys, ``(d_in, u)``. P: projector, ``(d_in, d_in)``.
        l2: :math:`\alpha > 0` (1 in the paper and EasyEdit, 10 in the official JSON configs).
        cache: :math:`\sum K_pK_p^\top` of earlier batches, or ``None``.

    Returns:
        :math:`\Delta`, ``(d_out, d_in)`` float64.

    Derived in notebook ``08_one_framework``.
    """
    R, K1 = _check_keys(R, K1)
    d_in = K1.shape[0]
    P = _mat(P, "P (null-space projector)", d_in, d_in)
    if not l2 > 0:
        raise ValueError(f"l2 (AlphaEdit's L2 / alpha) must be positive, got {l2}")
    KK = K1 @ K1.T
    if cache is not None:
        KK = KK + _mat(cache, "cache (sum of earlier K K^T)", d_in, d_in)
    lhs = P @ KK + float(l2) * torch.eye(d_in, dtype=_F64, device=K1.device)
    return torch.linalg.solve(lhs, P @ K1 @ R.T).T


def rome_delta(k_star: Tensor, v_star: Tensor, W: Tensor, C: Tensor) -> Tensor:
    r"""ROME's rank-one update that maps the key :math:`k_*` to the value :math:`v_*`.

    .. math::

        \Delta = \frac{(v_* - Wk_*)\,(C^{-1}k_*)^\top}{(C^{-1}k_*)^\top k_*},
        \qquad (W+\Delta)\,k_* = v_*

    (Meng et al., 2022, eq. 2): among all updates with :math:`(W+\Delta)k_*=v_*` it minimises
    :math:`\mathrm{tr}(\Delta C\Delta^\top)`.

    Args:
        k_star: ``(d_in,)``. v_star: ``(d_out,)``. W: ``(d_out, d_in)``. C: ``(d_in, d_in)``, positive
            definite.

    Returns:
        :math:`\Delta`, ``(d_out, d_in)`` float64.

    Listed on the book page ``api``.
    """
    W = _mat(W, "W (edited matrix)")
    d_out, d_in = W.shape
    k = _mat(torch.as_tensor(k_star).reshape(-1, 1), "k_star", d_in, 1)
    v = _mat(torch.as_tensor(v_star).reshape(-1, 1), "v_star", d_out, 1)
    C = _mat(C, "C (input covariance)", d_in, d_in)
    u = torch.linalg.solve(C, k)
    denom = float(u.T @ k)
    if not denom > 0:
        raise ValueError(f"rome_delta: (C^-1 k*)^T k* = {denom} is not positive (C must be positive "
                         f"definite and k* nonzero)")
    return (v - W @ k) @ u.T / denom
