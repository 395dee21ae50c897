r"""UltraEdit's algebra: lifelong normalisation, pseudo-values and the ridge solve (pure tensors).

UltraEdit (Gu et al., "UltraEdit: Training-, Subject-, and Memory-Free Lifelong Editing in Large
Language Models", TMLR 2026, arXiv 2505.14679) edits a linear module :math:`\mathbf W` (shape
``(d_out, d_in)``) from two signals per edit token :math:`t`: the module input (the *key*)
:math:`\mathbf k_t\in\mathbb R^{d_{\rm in}}` and the gradient of the edit loss with respect to the
module output, :math:`\mathbf g_t=\partial\mathcal L_{\rm edit}/\partial\mathbf s_t\in\mathbb
R^{d_{\rm out}}`. Stacked as rows, :math:`\mathbf K` is ``(T, d_in)`` and :math:`\mathbf G` is
``(T, d_out)``.

1. **Lifelong normalisation.** The features :math:`\mathbf z_t=[\mathbf k_t\,\Vert\,\mathbf g_t]`
   of every edit seen so far (all turns) feed running per-coordinate statistics
   :math:`(N,\boldsymbol\mu,\mathbf M_2)`; a batch of :math:`m` rows with mean
   :math:`\bar{\mathbf z}` and centred sum of squares :math:`\mathbf M_2^{\rm b}` is merged as
   (Chan et al. 1979)

   .. math::

       \boldsymbol\delta=\bar{\mathbf z}-\boldsymbol\mu,\quad
       \boldsymbol\mu\leftarrow\boldsymbol\mu+\tfrac{m}{N+m}\boldsymbol\delta,\quad
       \mathbf M_2\leftarrow\mathbf M_2+\mathbf M_2^{\rm b}+\tfrac{Nm}{N+m}\boldsymbol\delta^{2},\quad
       N\leftarrow N+m,

   :math:`\boldsymbol\sigma=\sqrt{\mathbf M_2/(N-1)}` and :math:`\hat{\mathbf z}=(\mathbf z-
   \boldsymbol\mu)/(\boldsymbol\sigma+\epsilon)=[\hat{\mathbf k}\,\Vert\,\hat{\mathbf g}]`.
2. **Pseudo-values.** One gradient step :math:`\Delta\mathbf W=-\eta\,\mathbf g\mathbf k^\top` moves
   the output at :math:`\mathbf k` by :math:`-\eta\lVert\mathbf k\rVert^2\mathbf g`; UltraEdit asks
   for that move in normalised coordinates, :math:`\mathbf v_t=-\eta\,\lVert\hat{\mathbf k}_t
   \rVert^2\,\hat{\mathbf g}_t` (rows of :math:`\mathbf V`).
3. **Ridge solve.** :math:`\min_{\Delta}\lVert\mathbf K\Delta^\top-\mathbf V\rVert_F^2+\lambda
   \lVert\Delta\rVert_F^2` with the *raw* keys gives

   .. math::

       \Delta^\top=(\mathbf K^\top\mathbf K+\lambda\mathbf I)^{-1}\mathbf K^\top\mathbf V,

   MEMIT's update with the preserved-key covariance replaced by :math:`\mathbf I` (official code:
   :math:`\lambda=1`, :math:`\eta=10^{-6}`).

Everything here runs in float64, on the device of its inputs. Derived in notebook
``06_crispedit_on_a_small_lm``.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

__all__ = ["EPS", "LifelongNormalizer", "pseudo_values", "ridge_solve", "ultraedit_delta"]

_F64 = torch.float64
EPS = float(torch.finfo(torch.float32).eps)  # the official code's epsilon (float32 features)


def _rows(x: Tensor, name: str, cols: int | None = None) -> Tensor:
    x = torch.as_tensor(x)
    if x.ndim != 2 or (cols is not None and x.shape[1] != cols):
        raise ValueError(f"{name} must be a (rows, {cols if cols is not None else 'd'}) matrix, "
                         f"got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or Inf")
    return x.to(_F64)


class LifelongNormalizer:
    r"""Running mean and standard deviation of UltraEdit's features :math:`[\mathbf k\Vert\mathbf g]`.

    ``variance="exact"`` merges each batch's exact centred sum of squares, so after any sequence of
    updates :attr:`mean` and :attr:`std` equal the one-shot mean and sample standard deviation
    (``torch.std``, :math:`N-1`) of all rows seen. ``variance="official"`` reproduces the official
    code, which adds :math:`m\,\widehat{\mathrm{Var}}_{m-1}` (the batch's *unbiased* variance times
    :math:`m`, i.e. :math:`\tfrac{m}{m-1}\mathbf M_2^{\rm b}`) and divides by :math:`N-1+\epsilon`;
    the two differ by a factor that tends to 1 as batches grow.

    Listed on the book page ``api``.
    """

    def __init__(self, size: int, variance: Literal["exact", "official"] = "exact",
                 eps: float = EPS) -> None:
        if size < 1:
            raise ValueError(f"size must be positive, got {size}")
        if variance not in ("exact", "official"):
            raise ValueError(f"variance must be 'exact' or 'official', got {variance!r}")
        self.size, self.variance, self.eps = int(size), variance, float(eps)
        self.n = 0
        self.mean = torch.zeros(size, dtype=_F64)
        self.m2 = torch.zeros(size, dtype=_F64)

    def update(self, z: Tensor) -> None:
        """Merge the rows of ``z`` (shape ``(m, size)``) into the running statistics."""
        z = _rows(z, "features z", self.size)
        m = z.shape[0]
        if m == 0:
            return
        if self.variance == "official" and m < 2:
            raise ValueError("variance='official' needs at least 2 rows per update (the batch's "
                             "unbiased variance is undefined for one row)")
        if self.mean.device != z.device:  # the statistics live where the features do
            self.mean, self.m2 = self.mean.to(z.device), self.m2.to(z.device)
        bmean = z.mean(0)
        bm2 = ((z - bmean) ** 2).sum(0)
        if self.variance == "official":
            bm2 = bm2 * m / (m - 1)
        n_new = self.n + m
        delta = bmean - self.mean
        self.mean = self.mean + delta * (m / n_new)
        self.m2 = self.m2 + bm2 + delta.pow(2) * (self.n * m / n_new)
        self.n = n_new

    @property
    def std(self) -> Tensor:
        """Per-coordinate standard deviation (sample, :math:`N-1`; zeros before two rows are seen)."""
        if self.variance == "official":
            return (self.m2 / (self.n - 1 + self.eps)).clamp_min(0).sqrt()
        if self.n < 2:
            return torch.zeros(self.size, dtype=_F64, device=self.mean.device)
        return (self.m2 / (self.n - 1)).sqrt()

    def normalize(self, z: Tensor) -> Tensor:
        r""":math:`(\mathbf z-\boldsymbol\mu)/(\boldsymbol\sigma+\epsilon)`, row by row (float64)."""
        z = _rows(z, "features z", self.size)
        return (z - self.mean.to(z.device)) / (self.std.to(z.device) + self.eps)


def pseudo_values(keys: Tensor, grads: Tensor, normalizer: LifelongNormalizer, lr: float) -> Tensor:
    r"""UltraEdit's targets, rows :math:`\mathbf v_t=-\eta\lVert\hat{\mathbf k}_t\rVert^2\hat{\mathbf g}_t`.

    Returns shape ``(T, d_out)``.

    ``normalizer`` must have size ``d_in + d_out`` and should already contain the rows (the official
    code updates it with the turn's features before it solves).

    Listed on the book page ``api``.
    """
    keys = _rows(keys, "keys K")
    grads = _rows(grads, "value gradients G")
    if keys.shape[0] != grads.shape[0]:
        raise ValueError(f"keys and value gradients need one row per token: {keys.shape[0]} vs "
                         f"{grads.shape[0]}")
    d_in = keys.shape[1]
    if normalizer.size != d_in + grads.shape[1]:
        raise ValueError(f"normalizer has size {normalizer.size}, expected d_in + d_out = "
                         f"{d_in + grads.shape[1]}")
    z_hat = normalizer.normalize(torch.cat([keys, grads], dim=1))
    k_hat, g_hat = z_hat[:, :d_in], z_hat[:, d_in:]
    return -lr * k_hat.pow(2).sum(1, keepdim=True) * g_hat


def ridge_solve(keys: Tensor, values: Tensor, lam: float) -> Tensor:
    r"""Ridge: :math:`\mathbf X=(\mathbf K^\top\mathbf K+\lambda\mathbf I)^{-1}\mathbf K^\top\mathbf V`.

    Returns shape ``(d_in, d_out)``.

    Solved by Cholesky in float64 (the matrix is symmetric positive definite for :math:`\lambda>0`).
    With fewer rows than columns (:math:`T<d_{\rm in}`, the usual case) the identical dual form
    :math:`\mathbf X=\mathbf K^\top(\mathbf K\mathbf K^\top+\lambda\mathbf I)^{-1}\mathbf V`
    solves a :math:`T\times T` system instead.

    Listed on the book page ``api``.
    """
    if not lam > 0:
        raise ValueError(f"lam (ridge weight) must be positive, got {lam}")
    keys = _rows(keys, "keys K")
    values = _rows(values, "values V")
    if keys.shape[0] != values.shape[0]:
        raise ValueError(f"keys and values need one row per token: {keys.shape[0]} vs "
                         f"{values.shape[0]}")
    rows, cols = keys.shape
    if rows < cols:  # (K^T K + lam I)^{-1} K^T = K^T (K K^T + lam I)^{-1}
        gram = keys @ keys.T + lam * torch.eye(rows, dtype=_F64, device=keys.device)
        return keys.T @ torch.cholesky_solve(values, torch.linalg.cholesky(gram))
    gram = keys.T @ keys + lam * torch.eye(cols, dtype=_F64, device=keys.device)
    return torch.cholesky_solve(keys.T @ values, torch.linalg.cholesky(gram))


def ultraedit_delta(keys: Tensor, grads: Tensor, normalizer: LifelongNormalizer, lr: float,
                    lam: float) -> Tensor:
    r"""UltraEdit's weight change :math:`\Delta=\mathbf X^\top`, in the weight's ``(d_out, d_in)`` layout.

    Listed on the book page ``api``.
    """
    return ridge_solve(keys, pseudo_values(keys, grads, normalizer, lr), lam).T
