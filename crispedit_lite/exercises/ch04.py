r"""Graders for the exercises of notebook ``04_kfac_step_by_step``.

Each grader raises ``AssertionError`` with a hint when the answer is wrong and prints ``"correct"``
when it is right. Derived in notebook ``04_kfac_step_by_step``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from crispedit_lite.curvature import gauss_newton_matrix

__all__ = ["check_commutation", "check_single_example", "check_output_factors"]


def check_commutation(P: Tensor, d_out: int, d_in: int) -> None:
    r"""Exercise 4.1: ``P`` maps the row-major ``vec`` of a ``(d_out, d_in)`` matrix to col-major.

    Then :math:`\mathbf P\,(\mathbf S\otimes\mathbf A)\,\mathbf P^\top = \mathbf A\otimes\mathbf S`:
    PyTorch's ``torch.kron(S, A)`` and the paper's :math:`\mathbf A\otimes\mathbf S` are the same
    matrix in two orderings. Derived in notebook ``04_kfac_step_by_step``.
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


def check_output_factors(S_true: Tensor, S_type2: Tensor, logits: Tensor, y: Tensor) -> None:
    r"""Exercise 4.3: output-layer factors from the logits alone.

    .. math::

        \mathbf S_{\rm true} = \tfrac1N\textstyle\sum_n (\mathbf p_n-\mathbf e_{y_n})
        (\mathbf p_n-\mathbf e_{y_n})^\top, \qquad
        \mathbf S_{\rm type2} = \tfrac1N\textstyle\sum_n
        \mathrm{diag}(\mathbf p_n)-\mathbf p_n\mathbf p_n^\top.

    Derived in notebook ``04_kfac_step_by_step``.
    """
    p = torch.softmax(logits.detach().double(), -1)
    r = p - F.one_hot(y, p.shape[-1]).double()
    want_true = r.T @ r / len(y)
    want_type2 = (torch.diag_embed(p) - p[:, :, None] * p[:, None, :]).mean(0)
    S_true, S_type2 = torch.as_tensor(S_true).double(), torch.as_tensor(S_type2).double()
    assert S_true.shape == want_true.shape, f"S must be {tuple(want_true.shape)}"
    assert torch.allclose(S_true, want_true, atol=1e-5), (
        "S_true: average the outer products of p - onehot(y) (the gradient of the *summed* CE)"
    )
    assert torch.allclose(S_type2, want_type2, atol=1e-5), (
        "S_type2: average the softmax Hessians diag(p) - p p^T; no labels are needed"
    )
    print("correct")
