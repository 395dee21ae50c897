r"""Eigenvalue-corrected K-FAC (EK-FAC, George et al. 2018): K-FAC's eigenbasis, re-estimated eigenvalues.

K-FAC approximates a linear layer's Gauss-Newton block by :math:`\mathbf A\otimes\mathbf S`, whose
eigenvectors are the Kronecker products :math:`\mathbf u^{\rm out}_i(\mathbf u^{\rm in}_j)^\top` and
whose eigenvalues are the products :math:`\lambda^{\rm out}_i\lambda^{\rm in}_j`. EK-FAC keeps the
eigenbasis and replaces each product by the second moment of the per-example gradient projected on
that eigenvector:

.. math::

    s_{ij} = \frac1N\sum_{t}\sum_y \big(\mathbf u^{{\rm out}\top}_i\,\mathbf g_{t,y}\,
    \mathbf a_t^\top\mathbf u^{\rm in}_j\big)^2
    = \frac1N\sum_{t}\sum_y (\mathbf u^{{\rm out}\top}_i\mathbf g_{t,y})^2
    (\mathbf a_t^\top\mathbf u^{\rm in}_j)^2 ,

with the same :math:`N` terms :math:`(\mathbf a_t,\mathbf g_{t,y})` as
:func:`~crispedit_lite.kfac.collect_kfac` (one term per example or per valid token, i.e.
``approx="expand"``; :math:`y` runs over the type-2 vectors). When the block is
:math:`\mathbf G_{\mathbf W}=\frac1N\sum_{t,y}\mathrm{vec}(\mathbf g_{t,y}\mathbf a_t^\top)
\mathrm{vec}(\mathbf g_{t,y}\mathbf a_t^\top)^\top` (``labels="type2"``), :math:`s_{ij}` is its
diagonal in the Kronecker eigenbasis :math:`\mathbf U_{\rm in}\otimes\mathbf U_{\rm out}`
(column-major ``vec``; the code's row-major order uses ``torch.kron(U_out, U_in)``), hence the
Frobenius-optimal diagonal in that basis; it equals K-FAC's products when :math:`\mathbf a` and
:math:`\mathbf g` are independent. The energy rule and the projection are those of
:class:`~crispedit_lite.projector.KroneckerProjector`, applied to :math:`s_{ij}` instead of the
products.

Derived in notebook ``03_low_curvature_subspace``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from crispedit_lite.energy import Rule, _check_gamma, _eigh, energy_mask
from crispedit_lite.kfac.backward import LabelMode, LossName
from crispedit_lite.kfac.capture import LayerCapture
from crispedit_lite.kfac.factors import KFACFactors
from crispedit_lite.kfac.hooks import collect_kfac
from crispedit_lite.kfac.modules import resolve_modules
from crispedit_lite.projector import DENSE_LIMIT, KroneckerProjector

__all__ = ["EKFACFactors", "collect_ekfac", "ekfac_from_kfac", "ekfac_projector"]


@dataclass
class EKFACFactors:
    r"""K-FAC eigenbasis of one linear layer with corrected eigenvalues.

    Attributes:
        U_in: ``(d_in, d_in)`` eigenvectors of ``A``; ``eig_in`` its eigenvalues (float64).
        U_out: ``(d_out, d_out)`` eigenvectors of ``S``; ``eig_out`` its eigenvalues.
        eig: ``(d_out, d_in)`` corrected eigenvalues :math:`s_{ij}` (float64), entry ``(i, j)``
            belonging to :math:`\mathbf u^{\rm out}_i(\mathbf u^{\rm in}_j)^\top`.
        n_tokens: number of averaged terms. meta: the K-FAC metadata plus ``"ekfac": True``.

    Listed on the book page ``api``.
    """

    U_in: Tensor
    U_out: Tensor
    eig_in: Tensor
    eig_out: Tensor
    eig: Tensor
    n_tokens: int
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def kfac_eigenvalues(self) -> Tensor:
        r"""K-FAC's eigenvalues :math:`\lambda^{\rm out}_i\lambda^{\rm in}_j`, shape ``(d_out, d_in)``."""
        return torch.outer(self.eig_out, self.eig_in)

    def dense(self, limit: int = DENSE_LIMIT) -> Tensor:
        r"""The explicit EK-FAC matrix: the eigenvalues :math:`s_{ij}` in the Kronecker eigenbasis.

        Row-major ``vec``, like ``torch.kron(S, A)``: ``B @ diag(s) @ B.T`` with
        ``B = torch.kron(U_out, U_in)``; refused above ``limit`` rows.
        Derived in notebook ``03_low_curvature_subspace``.
        """
        n = self.eig.numel()
        if n > limit:
            raise ValueError(f"dense EK-FAC would be {n}x{n}; refused above {limit}")
        q = torch.kron(self.U_out.to(torch.float64), self.U_in.to(torch.float64))
        return (q * self.eig.reshape(-1)) @ q.T


def _basis(factors: KFACFactors) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    eig_in, U_in = _eigh(factors.A, "A (input factor)", torch.float64)
    eig_out, U_out = _eigh(factors.S, "S (output-gradient factor)", torch.float64)
    return eig_in, U_in, eig_out, U_out


def ekfac_from_kfac(factors: KFACFactors, eig: Tensor | None = None) -> EKFACFactors:
    r"""Wrap K-FAC factors as :class:`EKFACFactors`; ``eig=None`` keeps the uncorrected products.

    Listed on the book page ``api``.
    """
    eig_in, U_in, eig_out, U_out = _basis(factors)
    if eig is None:
        eig = torch.outer(eig_out, eig_in)
    if tuple(eig.shape) != (factors.d_out, factors.d_in):
        raise ValueError(f"eig has shape {tuple(eig.shape)}, expected {(factors.d_out, factors.d_in)}")
    meta = dict(factors.meta, ekfac=True)
    return EKFACFactors(U_in=U_in, U_out=U_out, eig_in=eig_in, eig_out=eig_out,
                        eig=eig.to(torch.float64), n_tokens=factors.n_tokens, meta=meta)


def collect_ekfac(
    model: nn.Module,
    module_names: Sequence[str],
    batches: Iterable[Any],
    *,
    factors: Mapping[str, KFACFactors] | None = None,
    labels: LabelMode = "true",
    loss: LossName = "cross_entropy",
    ignore_index: int = -100,
    seed: int = 0,
    max_type2_classes: int = 1024,
    progress: bool = False,
) -> dict[str, EKFACFactors]:
    r"""Collect EK-FAC for linear layers: K-FAC eigenbases, then one pass for :math:`s_{ij}`.

    Args:
        model, module_names, labels, loss, ignore_index, seed, max_type2_classes: as
            :func:`~crispedit_lite.kfac.collect_kfac` (``approx="expand"``: one term per example or
            valid token).
        batches: ``(inputs, targets)`` pairs or causal-LM mappings. Without ``factors`` they are
            iterated twice (K-FAC, then the correction), so pass a list, not a generator.
        factors: K-FAC factors already collected on the same data with the same ``labels``.
        progress: show a tqdm bar over batches.

    Returns:
        ``{module_name: EKFACFactors}``. Derived in notebook ``03_low_curvature_subspace``.
    """
    modules = resolve_modules(model, module_names)
    if factors is None:
        if isinstance(batches, Iterator):
            raise ValueError("collect_ekfac iterates batches twice without factors: pass a list")
        factors = collect_kfac(model, list(modules), batches, labels=labels, approx="expand",
                               loss=loss, ignore_index=ignore_index, seed=seed,
                               max_type2_classes=max_type2_classes, progress=progress)
    missing = [n for n in modules if n not in factors]
    if missing:
        raise ValueError(f"factors lack modules {missing}; they have {sorted(factors)}")
    bases = {n: _basis(factors[n]) for n in modules}
    acc = {n: torch.zeros(factors[n].d_out, factors[n].d_in, dtype=torch.float64) for n in modules}
    generator = torch.Generator().manual_seed(seed)
    count = 0
    capture = LayerCapture(model, modules, loss=loss, labels=labels, ignore_index=ignore_index,
                           generator=generator, max_type2_classes=max_type2_classes)
    with capture:
        for batch in tqdm(batches, disable=not progress, desc="EK-FAC"):
            seen, valid = capture.run(batch)
            if not valid.any():
                continue
            for name in modules:
                _, U_in, _, U_out = bases[name]
                a = seen[name].a[valid].to(torch.float64) @ U_in  # (T, d_in) coordinates
                for g in seen[name].g:
                    gc = g[valid].to(torch.float64) @ U_out  # (T, d_out)
                    acc[name] += (gc**2).T @ (a**2)
            count += int(valid.sum())
    if count == 0:
        raise ValueError("collect_ekfac saw no valid tokens: batches are empty or every label is ignored")
    out = {}
    for name in modules:
        eig_in, U_in, eig_out, U_out = bases[name]
        out[name] = EKFACFactors(U_in=U_in, U_out=U_out, eig_in=eig_in, eig_out=eig_out,
                                 eig=acc[name] / count, n_tokens=count,
                                 meta=dict(factors[name].meta, ekfac=True, ekfac_labels=labels))
    return out


def ekfac_projector(
    ekfac: EKFACFactors,
    gamma: float,
    *,
    rule: Rule = "code",
    dtype: torch.dtype = torch.float32,
    rtol: float = 1e-9,
) -> KroneckerProjector:
    r"""A :class:`~crispedit_lite.projector.KroneckerProjector` masking by the energy rule on :math:`s_{ij}`.

    Editable iff :math:`s_{ij}\le\lambda_\gamma` (``"paper"``) or :math:`s_{ij}<\lambda_k` (``"code"``),
    with :math:`\lambda_\gamma` from :func:`~crispedit_lite.energy.energy_threshold` on all
    :math:`s_{ij}`. ``project`` is unchanged: the eigenbasis is K-FAC's. Derived in notebook
    ``03_low_curvature_subspace``.

    Listed on the book page ``api``.
    """
    gamma = _check_gamma(gamma)
    mask, threshold = energy_mask(ekfac.eig, gamma, rule, rtol)
    return KroneckerProjector(U_in=ekfac.U_in.to(dtype), U_out=ekfac.U_out.to(dtype), mask=mask,
                              eig_in=ekfac.eig_in, eig_out=ekfac.eig_out, gamma=gamma,
                              threshold=threshold, rule=rule,
                              transposed=bool(ekfac.meta.get("transposed", False)))
