r"""The health of edited weights: norm growth, conditioning, spectral drift, leaks into protected directions.

Long sequential edit streams break models in ways that show in the edited matrices before they show in
the outputs, and recent lifelong-editing studies read them chunk by chunk (norm growth: Gupta et al.
2025, "Lifelong Sequential Knowledge Editing without Model Degradation"; the condition number: Ma et
al. 2025, "Perturbation-Restrained Sequential Model Editing"; drift of the top singular subspace:
Xu et al. 2025, "Constraining Sequential Model Editing with Editing Anchor Compression"). For an edited
matrix :math:`\mathbf W = \mathbf W_0 + \Delta\mathbf W` (shape ``(d_out, d_in)``) with singular values
:math:`\sigma_1\ge\dots\ge\sigma_r`, :math:`r=\min(d_{out},d_{in})`:

* **norms**: :math:`\lVert\mathbf W\rVert_F`, :math:`\lVert\Delta\mathbf W\rVert_F` and their ratios to
  :math:`\lVert\mathbf W_0\rVert_F`;
* **condition number**: :math:`\kappa(\mathbf W)=\sigma_1/\sigma_r` (infinite if :math:`\sigma_r=0`);
* **top-k subspace overlap** with :math:`\mathbf W_0`: with :math:`\mathbf U_k`, :math:`\mathbf U^0_k`
  the top-:math:`k` left singular vectors of :math:`\mathbf W` and :math:`\mathbf W_0` (output side;
  :math:`\mathbf V_k`, :math:`\mathbf V^0_k` on the input side),

  .. math::

      \mathrm{overlap}_k = \tfrac1k\lVert\mathbf U_k^\top\mathbf U^0_k\rVert_F^2
      = \tfrac1k\sum_{i=1}^k\cos^2\theta_i \in [0, 1],

  the mean squared cosine of the principal angles :math:`\theta_i` between the two subspaces (1: the
  same top subspace, 0: orthogonal). :data:`TOP_K` is the default :math:`k`;
* **protected share**: with :math:`\mathbf P` the CrispEdit projector onto the editable (low-curvature)
  directions (:class:`~crispedit_lite.projector.KroneckerProjector`, an orthogonal projector in the
  Frobenius inner product),

  .. math::

      \mathrm{protected\ share} = \frac{\lVert\Delta\mathbf W-\mathbf P(\Delta\mathbf W)\rVert_F^2}
      {\lVert\Delta\mathbf W\rVert_F^2} \in [0, 1],

  the fraction of the update's squared norm in the directions the capability curvature protects. Built
  from one set of capability factors at one :math:`\gamma`, it is the same ruler for every editor.

Everything is computed in float64. Described in notebook ``07_sequential_editing``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

__all__ = ["TOP_K", "base_spectrum", "condition_number", "layer_health", "pooled_health",
           "protected_share", "subspace_overlap", "top_singular_vectors"]

#: The default :math:`k` of the top-:math:`k` subspace overlap.
TOP_K = 32


def _f64(W: Tensor, name: str) -> Tensor:
    if W.ndim != 2:
        raise ValueError(f"{name} must be a matrix, got shape {tuple(W.shape)}")
    return W.detach().to("cpu", torch.float64)


def condition_number(W: Tensor) -> float:
    r"""The condition number :math:`\kappa(\mathbf W)=\sigma_{\max}/\sigma_{\min}` (all singular values).

    ``inf`` when the smallest singular value is 0. Described in notebook ``07_sequential_editing``.
    """
    s = torch.linalg.svdvals(_f64(W, "W"))
    return math.inf if float(s[-1]) == 0.0 else float(s[0] / s[-1])


def top_singular_vectors(W: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
    r"""The top-:math:`k` singular triplets of ``W``: ``(U_k (d_out, k), s_k, V_k (d_in, k))``, float64.

    Described in notebook ``07_sequential_editing``.
    """
    W = _f64(W, "W")
    if not 1 <= k <= min(W.shape):
        raise ValueError(f"k must lie in [1, {min(W.shape)}] for a {tuple(W.shape)} matrix, got {k}")
    U, s, Vh = torch.linalg.svd(W, full_matrices=False)
    return U[:, :k], s[:k], Vh[:k].T


def subspace_overlap(Q: Tensor, Q0: Tensor) -> float:
    r"""Overlap :math:`\tfrac1k\lVert\mathbf B^\top\mathbf B_0\rVert_F^2` (mean squared cosine of the angles).

    The bases :math:`\mathbf B` (``Q``) and :math:`\mathbf B_0` (``Q0``) are ``(d, k)`` with orthonormal
    columns (e.g. from :func:`top_singular_vectors`).
    Described in notebook ``07_sequential_editing``.
    """
    if Q.shape != Q0.shape:
        raise ValueError(f"subspace_overlap: bases of shapes {tuple(Q.shape)} and {tuple(Q0.shape)}")
    return float((Q.to(torch.float64).T @ Q0.to(torch.float64)).pow(2).sum() / Q.shape[1])


def protected_share(delta: Tensor, projector: Any) -> float | None:
    r"""The protected share :math:`\lVert\Delta-\mathbf P\Delta\rVert_F^2/\lVert\Delta\rVert_F^2`.

    ``None`` for a zero update. Described in notebook ``07_sequential_editing``.
    """
    d = _f64(delta, "delta")
    total = float(d.pow(2).sum())
    if total == 0.0:
        return None
    inside = projector.project(d).to(torch.float64)
    return float((d - inside).pow(2).sum()) / total


def layer_health(W: Tensor, W0: Tensor, *, k: int = TOP_K, projector: Any = None,
                 base: dict[str, Tensor] | None = None) -> dict[str, Any]:
    r"""Every health signal of one edited matrix against its base (see the module docstring).

    Args:
        W, W0: the edited and the base matrix, ``(d_out, d_in)``.
        k: the top-:math:`k` of the subspace overlaps.
        projector: a CrispEdit projector of this matrix for ``protected_share`` (``None``: not computed).
        base: :func:`top_singular_vectors` of ``W0`` as ``{"U", "s", "V", "cond", "norm"}``, to
            reuse across calls (computed when ``None``).

    Returns:
        ``{"norm", "norm_base", "norm_ratio", "delta_norm", "delta_ratio", "sigma_max", "cond",
        "cond_base", "overlap_out", "overlap_in", "protected_share", "delta_sq", "leak_sq", "k"}``
        (``delta_sq`` and ``leak_sq`` are :math:`\lVert\Delta\rVert_F^2` and its protected part, for
        pooling over matrices).

    Described in notebook ``07_sequential_editing``.
    """
    W, W0 = _f64(W, "W"), _f64(W0, "W0")
    if W.shape != W0.shape:
        raise ValueError(f"layer_health: W {tuple(W.shape)} and W0 {tuple(W0.shape)} differ in shape")
    b = base if base is not None else base_spectrum(W0, k)
    U, s, Vh = torch.linalg.svd(W, full_matrices=False)
    delta = W - W0
    norm, dnorm = float(W.norm()), float(delta.norm())
    share = protected_share(delta, projector) if projector is not None else None
    smin = float(s[-1])
    return {"norm": norm, "norm_base": b["norm"], "norm_ratio": norm / b["norm"], "delta_norm": dnorm,
            "delta_ratio": dnorm / b["norm"], "sigma_max": float(s[0]),
            "cond": math.inf if smin == 0.0 else float(s[0]) / smin, "cond_base": b["cond"],
            "overlap_out": subspace_overlap(U[:, :k], b["U"]),
            "overlap_in": subspace_overlap(Vh[:k].T, b["V"]), "protected_share": share,
            "delta_sq": dnorm ** 2, "leak_sq": None if share is None else share * dnorm ** 2, "k": k}


def base_spectrum(W0: Tensor, k: int = TOP_K) -> dict[str, Any]:
    """What :func:`layer_health` needs of the base matrix, once: top-``k`` bases, norm, condition number.

    Described in notebook ``07_sequential_editing``.
    """
    W0 = _f64(W0, "W0")
    U, s, V = top_singular_vectors(W0, k)
    return {"U": U, "s": s, "V": V, "cond": condition_number(W0), "norm": float(W0.norm())}


def pooled_health(per_layer: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    r"""One number per signal over the edited matrices of a model.

    Means over matrices of ``norm_ratio``, ``delta_ratio``, ``cond``, ``cond / cond_base``,
    ``overlap_out`` and ``overlap_in``; the largest ``cond``; and the pooled protected share
    :math:`\sum_l\lVert\Delta_l-\mathbf P_l\Delta_l\rVert_F^2/\sum_l\lVert\Delta_l\rVert_F^2`
    (``None`` without projectors or updates).

    Described in notebook ``07_sequential_editing``.
    """
    rows = list(per_layer.values())
    if not rows:
        raise ValueError("pooled_health: no matrices")

    def mean(key: str) -> float:
        return sum(r[key] for r in rows) / len(rows)

    dsq = sum(r["delta_sq"] for r in rows)
    leaks = [r["leak_sq"] for r in rows]
    return {"norm_ratio": mean("norm_ratio"), "delta_ratio": mean("delta_ratio"), "cond": mean("cond"),
            "cond_max": max(r["cond"] for r in rows),
            "cond_ratio": sum(r["cond"] / r["cond_base"] for r in rows) / len(rows),
            "overlap_out": mean("overlap_out"), "overlap_in": mean("overlap_in"),
            "protected_share": None if dsq == 0 or any(x is None for x in leaks) else sum(leaks) / dsq}
