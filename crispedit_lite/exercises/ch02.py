r"""Graders for the exercises of notebook ``02_bregman_to_gauss_newton``.

Each grader raises ``AssertionError`` with a hint when the answer is wrong and prints ``"correct"``
when it is right. Derived in notebook ``02_bregman_to_gauss_newton``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from crispedit_lite.curvature import bregman_divergence

__all__ = ["check_bregman_mse", "check_softmax_hessian"]


def _sq_loss(out: Tensor, y: Tensor) -> Tensor:
    return ((out - y) ** 2).sum(-1).mean()


def check_bregman_mse(bregman_mse: Callable[[Tensor, Tensor], Tensor]) -> None:
    r"""Exercise 2.1: for :math:`\ell(f,y)=\|f-y\|^2` (mean over rows), :math:`D(f,f_0)` is label-free.

    ``bregman_mse(out, base_out)`` must equal :func:`crispedit_lite.curvature.bregman_divergence` of
    that loss for every label. Derived in notebook ``02_bregman_to_gauss_newton``.
    """
    g = torch.Generator().manual_seed(2)
    out = torch.randn(9, 4, generator=g, dtype=torch.float64)
    base = torch.randn(9, 4, generator=g, dtype=torch.float64)
    got = float(bregman_mse(out, base))
    for _ in range(3):
        y = torch.randn(9, 4, generator=g, dtype=torch.float64) * 3
        want = float(bregman_divergence(_sq_loss, out, base, y))
        if abs(got - 2 * want) < 1e-9 * max(1.0, abs(want)) or abs(2 * got - want) < 1e-9 * max(1.0, want):
            raise AssertionError(f"off by a factor of 2 (got {got:.5f}, expected {want:.5f}): "
                                 "the loss is ||f - y||^2 without a 1/2")
        assert abs(got - want) < 1e-9 * max(1.0, abs(want)), (
            f"expected {want:.6f}, got {got:.6f}: expand ||f - y||^2 - ||f0 - y||^2 - "
            "<2 (f0 - y), f - f0> and watch the y terms cancel; average over rows"
        )
    print("correct")


def check_softmax_hessian(softmax_hessian: Callable[[Tensor], Tensor]) -> None:
    r"""Exercise 2.2: ``softmax_hessian(z)`` is :math:`\nabla_z^2\,\ell(z,y)=\mathrm{diag}(p)-pp^\top`.

    Compared with autograd's Hessian of the cross-entropy of one logit vector for every label, and
    checked to be positive semi-definite with :math:`\mathbf 1` in its null space. Derived in notebook
    ``02_bregman_to_gauss_newton``.

    Derived in notebook ``02_bregman_to_gauss_newton``.
    """
    g = torch.Generator().manual_seed(3)
    z = torch.randn(5, generator=g, dtype=torch.float64) * 2
    H = torch.as_tensor(softmax_hessian(z), dtype=torch.float64)
    assert H.shape == (5, 5), f"expected a (5, 5) matrix for 5 logits, got {tuple(H.shape)}"
    for y in range(5):
        ref = torch.func.hessian(lambda v, y=y: F.cross_entropy(v[None], torch.tensor([y])))(z)
        assert torch.allclose(H, ref, atol=1e-10), (
            "does not match autograd's Hessian of the cross-entropy; recall d/dz CE = p - e_y and "
            "d p / d z = diag(p) - p p^T"
        )
    assert torch.allclose(H @ torch.ones(5, dtype=H.dtype), torch.zeros(5, dtype=H.dtype), atol=1e-12)
    assert torch.linalg.eigvalsh(H).min() > -1e-12
    print("correct")
