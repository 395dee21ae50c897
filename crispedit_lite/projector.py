r"""Projections onto the low-curvature subspace: the energy rule and the matrix-free Kronecker projector.

With K-FAC factors :math:`\mathbf A = \mathbf U_{\rm in}\Lambda_{\rm in}\mathbf U_{\rm in}^\top`
(inputs) and :math:`\mathbf S = \mathbf U_{\rm out}\Lambda_{\rm out}\mathbf U_{\rm out}^\top`
(output gradients), the layer curvature :math:`\mathbf A\otimes\mathbf S` has eigenvalues
:math:`\lambda^{\rm out}_i\lambda^{\rm in}_j` with eigenvectors :math:`\mathbf u^{\rm out}_i
(\mathbf u^{\rm in}_j)^\top`. The energy rule (CrispEdit eq. 3) protects the smallest set of top
eigenvalues holding a fraction :math:`\gamma` of the trace; every other direction is editable, and the
projection of a weight gradient :math:`\mathbf G` (``(d_out, d_in)``) is (CrispEdit eq. 6, Prop. 3)

.. math::

    \mathbf P_\gamma(\mathbf G) = \mathbf U_{\rm out}\big((\mathbf U_{\rm out}^\top\mathbf G
    \mathbf U_{\rm in})\odot\mathbf M\big)\mathbf U_{\rm in}^\top, \qquad
    M_{ij} = \mathbb 1[\lambda^{\rm out}_i\lambda^{\rm in}_j < \lambda_\gamma],

without ever forming the :math:`(d_{\rm out}d_{\rm in})^2` projector. :class:`InputNullspaceProjector` is
the Adam-NSCL / AlphaEdit special case :math:`\mathbf S=\mathbf I` (null space of the inputs only).

Derived in notebooks ``03_low_curvature_subspace`` (energy rule) and ``05_matrix_free_projector``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from crispedit_lite.energy import Rule, _check_gamma, _eigh, energy_mask, energy_rank, energy_threshold

# energy_rank / energy_threshold live in crispedit_lite.energy and are re-exported here
__all__ = ["energy_rank", "energy_threshold", "KroneckerProjector", "InputNullspaceProjector", "Rule"]

DENSE_LIMIT = 4096


@dataclass
class KroneckerProjector:
    r"""Matrix-free projector onto the editable (low-curvature) Kronecker eigen-directions of one layer.

    Attributes:
        U_in: ``(d_in, d_in)`` eigenvectors of ``A`` (columns).
        U_out: ``(d_out, d_out)`` eigenvectors of ``S``.
        mask: ``(d_out, d_in)`` bool, True where :math:`\lambda^{out}_i\lambda^{in}_j` is editable.
        eig_in, eig_out: the eigenvalues (clamped at 0).
        gamma: the energy threshold; ``threshold``: the cut eigenvalue (:math:`\\sigma_k` under the
            default ``"code"`` rule, :math:`\\lambda_\\gamma=\\sigma_{k+1}` under ``"paper"``);
            ``rule``: the tie rule.
        transposed: the weight is stored ``(d_in, d_out)`` (HF ``Conv1D``); ``project`` transposes.

    Derived in notebook ``03_low_curvature_subspace``.
    """

    U_in: Tensor
    U_out: Tensor
    mask: Tensor
    eig_in: Tensor
    eig_out: Tensor
    gamma: float
    threshold: float
    rule: Rule = "code"
    transposed: bool = False

    @classmethod
    def from_factors(
        cls,
        A: Tensor,
        S: Tensor,
        gamma: float,
        *,
        rule: Rule = "code",
        eigh_dtype: torch.dtype = torch.float64,
        dtype: torch.dtype = torch.float32,
        rtol: float = 1e-9,
        transposed: bool = False,
    ) -> KroneckerProjector:
        r"""Eigendecompose ``A`` and ``S`` and apply the energy rule to all :math:`d_{out}d_{in}` products.

        Args:
            A: ``(d_in, d_in)`` input factor.
            S: ``(d_out, d_out)`` output-gradient factor.
            gamma: energy threshold in (0, 1]; larger protects more.
            rule: ``"code"`` (default; editable iff :math:`\lambda<\sigma_k`, as the official
                code; keeps protected energy :math:`\ge\gamma` on ties) or ``"paper"`` (eq. 6 read
                literally: editable iff :math:`\lambda\le\sigma_{k+1}`); equal without ties.
                See :func:`energy_threshold`.
            eigh_dtype: precision of the eigendecompositions (float32 is the official code's choice
                and fine for LLM-sized factors on a GPU). Below float64 the eigenvalues used by the
                energy rule are the float64 Rayleigh quotients of the computed eigenvectors, so the
                protected energy is exact in that basis even at gamma near 1.
            dtype: precision of the stored eigenbases, i.e. of the projection itself.
            rtol: products within this relative distance of the cut count as tied with it.
            transposed: the weight is stored ``(d_in, d_out)``.

        Derived in notebook ``05_matrix_free_projector``.
        """
        gamma = _check_gamma(gamma)
        eig_in, U_in = _eigh(A, "A (input factor)", eigh_dtype)
        eig_out, U_out = _eigh(S, "S (output-gradient factor)", eigh_dtype)
        mask, threshold = energy_mask(torch.outer(eig_out, eig_in), gamma, rule, rtol)
        return cls(U_in=U_in.to(dtype), U_out=U_out.to(dtype), mask=mask, eig_in=eig_in,
                   eig_out=eig_out, gamma=gamma, threshold=threshold, rule=rule,
                   transposed=transposed)

    @classmethod
    def from_kfac(cls, factors, gamma: float, **kwargs) -> KroneckerProjector:
        """Build from a :class:`crispedit_lite.kfac.KFACFactors` (reads its ``transposed`` flag)."""
        kwargs.setdefault("transposed", bool(factors.meta.get("transposed", False)))
        return cls.from_factors(factors.A, factors.S, gamma, **kwargs)

    @property
    def shape(self) -> tuple[int, int]:
        """Shape ``(d_out, d_in)`` of the gradients this projects (before any transpose)."""
        return (self.U_out.shape[0], self.U_in.shape[0])

    @property
    def rank(self) -> int:
        """Number of protected (high-curvature) Kronecker directions."""
        return int((~self.mask).sum())

    @property
    def editable_fraction(self) -> float:
        """Fraction of the :math:`d_{out}d_{in}` directions left editable."""
        return float(self.mask.float().mean())

    def to(self, device: torch.device | str) -> KroneckerProjector:
        """Move the eigenbases and mask to ``device``."""
        return KroneckerProjector(self.U_in.to(device), self.U_out.to(device), self.mask.to(device),
                                  self.eig_in, self.eig_out, self.gamma, self.threshold, self.rule,
                                  self.transposed)

    def project(self, G: Tensor) -> Tensor:
        r"""Project a weight gradient onto the editable subspace.

        Returns :math:`\mathbf U_{out}((\mathbf U_{out}^\top\mathbf G\mathbf U_{in})\odot\mathbf M)
        \mathbf U_{in}^\top`, computed in the eigenbases' dtype (fp32 by default) and returned in
        ``G``'s dtype.
        """
        expected = self.shape[::-1] if self.transposed else self.shape
        if tuple(G.shape) != expected:
            raise ValueError(f"gradient of shape {tuple(G.shape)} given to a projector for {expected}")
        g = G.to(self.U_in.dtype)
        if self.transposed:
            g = g.T
        core = (self.U_out.T @ g @ self.U_in) * self.mask
        out = self.U_out @ core @ self.U_in.T
        return (out.T if self.transposed else out).to(G.dtype)

    def dense(self, limit: int = DENSE_LIMIT) -> Tensor:
        """The explicit ``(d_out d_in, d_out d_in)`` projector (row-major ``vec``); refused above ``limit``.

        Derived in notebook ``05_matrix_free_projector``.
        """
        n = self.shape[0] * self.shape[1]
        if n > limit:
            raise ValueError(f"dense projector would be {n}x{n}; refused above {limit} (use project())")
        basis = torch.kron(self.U_out, self.U_in)
        return basis @ torch.diag(self.mask.reshape(-1).to(basis.dtype)) @ basis.T


@dataclass
class InputNullspaceProjector:
    r"""Right-multiply by the null-space projector of the input covariance.

    :math:`\mathbf G\mapsto\mathbf G\mathbf U_0\mathbf U_0^\top` enforces the Adam-NSCL
    (Wang et al. 2021) / AlphaEdit (Fang et al. 2025) constraint
    :math:`\Delta\mathbf W\mathbf a = 0` for capability inputs :math:`\mathbf a`, i.e. a
    :class:`KroneckerProjector` with :math:`\mathbf S=\mathbf I`. ``U0`` spans the eigenvectors of ``A``
    outside the top-:math:`k` energy set (``gamma``) or below an absolute eigenvalue ``threshold``.
    Derived in notebook ``08_one_framework``.
    """

    U0: Tensor
    eig_in: Tensor
    d_out: int
    transposed: bool = False

    @classmethod
    def from_factor(
        cls,
        A: Tensor,
        d_out: int,
        gamma: float | None = None,
        *,
        threshold: float | None = None,
        rule: Rule = "code",
        eigh_dtype: torch.dtype = torch.float64,
        dtype: torch.dtype = torch.float32,
        rtol: float = 1e-9,
        transposed: bool = False,
    ) -> InputNullspaceProjector:
        """Build from the input factor ``A``; give exactly one of ``gamma`` or ``threshold``."""
        if (gamma is None) == (threshold is None):
            raise ValueError("give exactly one of gamma (energy rule) or threshold (absolute)")
        evals, evecs = _eigh(A, "A (input factor)", eigh_dtype)
        if gamma is not None:
            keep, _ = energy_mask(evals, gamma, rule, rtol)
        else:
            keep = evals < threshold
        return cls(U0=evecs[:, keep].to(dtype), eig_in=evals, d_out=d_out, transposed=transposed)

    @property
    def shape(self) -> tuple[int, int]:
        """Shape ``(d_out, d_in)`` of the gradients this projects."""
        return (self.d_out, self.U0.shape[0])

    @property
    def rank(self) -> int:
        """Number of protected Kronecker directions, ``d_out * (d_in - dim null space)``."""
        return self.d_out * (self.U0.shape[0] - self.U0.shape[1])

    @property
    def editable_fraction(self) -> float:
        """Fraction of directions left editable."""
        return self.U0.shape[1] / self.U0.shape[0]

    def to(self, device: torch.device | str) -> InputNullspaceProjector:
        """Move the null-space basis to ``device``."""
        return InputNullspaceProjector(self.U0.to(device), self.eig_in, self.d_out, self.transposed)

    def project(self, G: Tensor) -> Tensor:
        r"""Return :math:`\mathbf G\mathbf U_0\mathbf U_0^\top` in ``G``'s dtype."""
        expected = self.shape[::-1] if self.transposed else self.shape
        if tuple(G.shape) != expected:
            raise ValueError(f"gradient of shape {tuple(G.shape)} given to a projector for {expected}")
        g = G.to(self.U0.dtype)
        if self.transposed:
            return (self.U0 @ (self.U0.T @ g)).to(G.dtype)
        return ((g @ self.U0) @ self.U0.T).to(G.dtype)

    def dense(self, limit: int = DENSE_LIMIT) -> Tensor:
        r"""Explicit projector (row-major ``vec``): :math:`\mathbf I\otimes\mathbf U_0\mathbf U_0^\top`."""
        n = self.d_out * self.U0.shape[0]
        if n > limit:
            raise ValueError(f"dense projector would be {n}x{n}; refused above {limit} (use project())")
        eye = torch.eye(self.d_out, dtype=self.U0.dtype)
        return torch.kron(eye, self.U0 @ self.U0.T)
