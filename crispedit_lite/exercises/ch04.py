r"""Graders for the exercises of notebook ``04_kfac_step_by_step``.

Each grader raises ``AssertionError`` with a hint when the answer is wrong and prints ``"correct"``
when it is right. Derived in notebook ``04_kfac_step_by_step``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from crispedit_lite.curvature import gauss_newton_matrix

__all__ = ["check_commutation", "check_single_example", "check_exact_output_block"]


def check_commutation(P: Tensor, d_out: int, d_in: int) -> None:
    r"""Exercise 4.1: ``P`` maps the row-major ``vec`` of a ``(d_out, d_in)`` matrix to col-major.

    Then ``P @ torch.kron(S, A) @ P.T == torch.kron(A, S)``: PyTorch's ``torch.kron(S, A)`` and the
    book's (column-major) :math:`\mathbf A\otimes\mathbf S` are the same matrix in two orderings.
    Derived in notebook ``04_kfac_step_by_step``.
    """
    n = d_out * d_in
    P = torch.as_tensor(P, dtype=torch.float64)
    assert P.shape == (n, n), f"P must be ({n}, {n}) for a ({d_out}, {d_in}) weight"
    ones = torch.ones(n, dtype=P.dtype)
    is_perm = bool(((P == 0) | (P == 1)).all()) and torch.equal(P.sum(0), ones) and torch.equal(
        P.sum(1), ones)
    assert is_perm, "P must be a permutation matrix (exactly one 1 in every row and column)"
    g = torch.Generator().manual_seed(1)
    W = torch.randn(d_out, d_in, generator=g, dtype=torch.float64)
    assert torch.allclose(P @ W.reshape(-1), W.T.reshape(-1)), (
        "P @ W.reshape(-1) should equal the column-major vec W.T.reshape(-1) "
        "(W.reshape(-1) reads W row by row)"
    )
    A = torch.randn(d_in, d_in, generator=g, dtype=torch.float64)
    S = torch.randn(d_out, d_out, generator=g, dtype=torch.float64)
    ok = torch.allclose(P @ torch.kron(S, A) @ P.T, torch.kron(A, S))
    assert ok, "P kron(S, A) P^T should equal kron(A, S)"
    print("correct")


def check_single_example(
    model: nn.Module, x: Tensor, y: Tensor, module: str, A: Tensor, S: Tensor
) -> None:
    r"""Exercise 4.2: on one example, type-2 K-FAC is the exact Gauss-Newton block.

    ``x`` has a batch dimension of one; ``A``, ``S`` are the factors of ``module`` (an ``nn.Linear``
    without bias in ``model``) for the cross-entropy, so that ``torch.kron(S, A)`` should equal
    the block of ``module.weight``. Derived in notebook ``04_kfac_step_by_step``.
    """
    assert x.shape[0] == 1, f"use a single example (batch dimension 1), got {tuple(x.shape)}"
    G = gauss_newton_matrix(model, lambda o, t: F.cross_entropy(o, t), x.detach(), y,
                            [f"{module}.weight"]).detach()
    K = torch.kron(torch.as_tensor(S).float(), torch.as_tensor(A).float())
    assert K.shape == G.shape, (
        f"kron(S, A) has shape {tuple(K.shape)}; the block of {module}.weight is {tuple(G.shape)}"
    )
    err = float(torch.linalg.norm(K - G) / torch.linalg.norm(G))
    assert err < 1e-3, (
        f"relative error {err:.3g}: use labels='type2' (one backward pass per class), a batch of "
        "one example, and the row-major order kron(S, A)"
    )
    print("correct")


def _dense_output_block(a: Tensor, logits: Tensor) -> Tensor:
    """Independent reference: per example, J^T H J with the Jacobian of W -> W a from autograd."""
    a, logits = a.double(), logits.double()
    d_out, d_in = logits.shape[1], a.shape[1]
    G = torch.zeros(d_out * d_in, d_out * d_in, dtype=torch.float64)
    W = torch.zeros(d_out, d_in, dtype=torch.float64)
    for t in range(len(a)):
        J = torch.autograd.functional.jacobian(lambda w, t=t: w @ a[t], W).reshape(d_out, -1)
        p = torch.softmax(logits[t], -1)
        G += J.T @ (torch.diag(p) - torch.outer(p, p)) @ J
    return G / len(a)


def check_exact_output_block(fn: Callable[[Tensor, Tensor], Tensor]) -> None:
    r"""Exercise 4.3: ``fn(a, logits)`` is the exact Gauss-Newton block of the output layer.

    For the output layer :math:`\mathbf s_t=\mathbf W\mathbf a_t` are the logits, so
    :math:`\boldsymbol\Gamma_t=\mathrm{diag}(\mathbf p_t)-\mathbf p_t\mathbf p_t^\top` and

    .. math::

        \frac1N\sum_t\boldsymbol\Gamma_t\otimes\mathbf a_t\mathbf a_t^\top
        =\boldsymbol\Pi\Big(\frac1N\sum_t\mathbf a_t\mathbf a_t^\top\otimes\boldsymbol\Gamma_t\Big)
        \boldsymbol\Pi^\top ,

    the block :math:`\mathbf G_{\mathbf W}` in PyTorch's row-major order (the mean of Kronecker
    products, not K-FAC's Kronecker product of means). Compared with a dense
    :math:`\mathbf J^\top\mathbf H_\ell\mathbf J` built from autograd Jacobians, on random inputs.
    Derived in notebook ``04_kfac_step_by_step``.
    """
    g = torch.Generator().manual_seed(4)
    for T, d_in, C in ((7, 3, 4), (1, 2, 3), (12, 4, 2)):
        a = torch.randn(T, d_in, generator=g, dtype=torch.float64)
        logits = 2 * torch.randn(T, C, generator=g, dtype=torch.float64)
        want = _dense_output_block(a, logits)
        got = torch.as_tensor(fn(a.clone(), logits.clone())).double()
        n = C * d_in
        assert got.shape == (n, n), (
            f"the block of a ({C}, {d_in}) weight is ({n}, {n}), got {tuple(got.shape)}")
        p = torch.softmax(logits, -1)
        S = (torch.diag_embed(p) - p[:, :, None] * p[:, None, :]).mean(0)
        kfac = torch.kron(S, a.T @ a / T)
        if T > 1 and torch.allclose(got, kfac, atol=1e-9) and not torch.allclose(want, kfac, atol=1e-9):
            raise AssertionError("that is K-FAC's kron(S, A), the Kronecker product of the means; the exact "
                                 "block is the mean of the per-example Kronecker products")
        swapped = sum(torch.kron(torch.outer(x, x), torch.diag(q) - torch.outer(q, q))
                      for x, q in zip(a, p)) / T
        if torch.allclose(got, swapped, atol=1e-9) and not torch.allclose(want, swapped, atol=1e-9):
            raise AssertionError("the order is column-major: PyTorch's W.reshape(-1) is row-major, so the "
                                 "output factor comes first, kron(Gamma_t, a_t a_t^T)")
        assert torch.allclose(got, want, atol=1e-9), (
            f"wrong for T={T}, d_in={d_in}, C={C}: average over examples kron(diag(p_t) - p_t p_t^T, "
            "a_t a_t^T) (a mean, not a sum)")
    print("correct")
