r"""Graders for the exercises of notebook ``02_bregman_to_gauss_newton``.

Each grader is a probe (calls the student's function on fixed random inputs) and a judge (compares
with an independent computation of a different form: the library's Bregman divergence written from
its definition, a dense Gauss-Newton matrix from autograd Jacobians) that raises ``AssertionError``
saying what is wrong. Derived in notebook ``02_bregman_to_gauss_newton``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from crispedit_lite.exercises.core import exercise

__all__ = ["check_bregman_mse", "check_gn_vector_product"]


def _sq_loss(out: Tensor, y: Tensor) -> Tensor:
    return ((out - y) ** 2).sum(-1).mean()


def _outputs() -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(2)
    return (
        torch.randn(9, 4, generator=g, dtype=torch.float64),
        torch.randn(9, 4, generator=g, dtype=torch.float64),
    )


def _probe_bregman_mse(fn) -> dict[str, Any]:
    out, base = _outputs()
    return {
        "value": float(fn(out.clone(), base.clone())),
        "shifted": float(fn(out.clone() + 1.0, base.clone() + 1.0)),
        "self": float(fn(base.clone(), base.clone())),
    }


@exercise("ex-02-1", probe=_probe_bregman_mse)
def check_bregman_mse(obs: dict[str, Any]) -> None:
    r"""Exercise 2.1: ``bregman_mse(out, base_out)``, the Bregman divergence of the squared error.

    Compared with :func:`crispedit_lite.curvature.bregman_divergence` of
    :math:`\ell(f,y)=\|f-y\|^2` (mean over rows) for several random labels: the value must be the
    same whatever the label. Derived in notebook ``02_bregman_to_gauss_newton``.
    """
    from crispedit_lite.curvature import bregman_divergence

    out, base = _outputs()
    got = obs["value"]
    g = torch.Generator().manual_seed(3)
    for _ in range(3):
        y = torch.randn(9, 4, generator=g, dtype=torch.float64) * 3
        want = float(bregman_divergence(_sq_loss, out, base, y))
        if abs(got - 2 * want) < 1e-9 * max(1.0, abs(want)) or abs(2 * got - want) < 1e-9 * max(1.0, want):
            raise AssertionError("off by a factor of 2 (the loss is ||f - y||^2, without a 1/2)")
        assert abs(got - want) < 1e-9 * max(1.0, abs(want)), (
            f"the value differs from the Bregman divergence of the squared error by {got - want:+.3g}; "
            "is it averaged over rows and summed over outputs?"
        )
    assert abs(obs["self"]) < 1e-12, "the divergence of a model from itself must be 0"
    assert abs(obs["shifted"] - got) < 1e-9 * max(1.0, abs(got)), (
        "shifting both outputs by the same constant must not change the divergence"
    )


def _gn_setup():
    from crispedit_lite.curvature import flat_model_function
    from crispedit_lite.teaching.toy import MLP

    with torch.random.fork_rng():
        torch.manual_seed(21)
        model = MLP((5, 4, 3)).double()
        x = torch.randn(11, 5, dtype=torch.float64)
    f, theta0 = flat_model_function(model, x)
    g = torch.Generator().manual_seed(22)
    vs = [torch.randn(theta0.numel(), generator=g, dtype=torch.float64) for _ in range(3)]
    return model, x, f, theta0, vs


def _probe_gn_vector_product(fn) -> dict[str, Any]:
    _, _, f, theta0, vs = _gn_setup()
    return {
        "products": [torch.as_tensor(fn(f, theta0.clone(), v.clone())).detach().to(torch.float64) for v in vs]
    }


@exercise(
    "ex-02-2",
    probe=_probe_gn_vector_product,
    forbidden=["gauss_newton_matrix", "hessian_matrix", "jacrev", "jacfwd", "jacobian", "hessian"],
    piece="the product from one forward-mode and one reverse-mode product, without forming a matrix",
)
def check_gn_vector_product(obs: dict[str, Any]) -> None:
    r"""Exercise 2.2: ``gn_vector_product(f, theta, v)``: the Gauss-Newton matrix times ``v``, matrix-free.

    The matrix is that of the mean cross-entropy of the logits ``f(theta)``.

    ``f`` maps a flat parameter vector to logits ``(N, C)``. Compared, on a random float64 MLP that
    is not at a minimum, with the dense Gauss-Newton matrix of
    :func:`crispedit_lite.curvature.gauss_newton_matrix` (explicit Jacobians) times ``v``; the
    student's code may not form Jacobians or the matrix. Derived in notebook
    ``02_bregman_to_gauss_newton``.
    """
    from crispedit_lite.curvature import gauss_newton_matrix, hessian_matrix

    model, x, f, theta0, vs = _gn_setup()
    y = torch.zeros(len(x), dtype=torch.long)  # the Gauss-Newton matrix of the cross-entropy is label-free
    G = gauss_newton_matrix(model, F.cross_entropy, x, y).detach()
    H = hessian_matrix(model, F.cross_entropy, x, y).detach()
    for v, got in zip(vs, obs["products"]):
        want = G @ v
        assert got.shape == want.shape, (
            f"return a vector of shape {tuple(want.shape)}, got {tuple(got.shape)}"
        )
        scale = float(want.norm())
        if float((got - H @ v).norm()) < 1e-8 * scale and float((H @ v - want).norm()) > 1e-6 * scale:
            raise AssertionError(
                "that is the loss Hessian times v; the Gauss-Newton matrix keeps only the "
                "curvature of the loss in the outputs (the network's own second derivatives "
                "are dropped)"
            )
        if float((got - len(x) * want).norm()) < 1e-8 * scale * len(x):
            raise AssertionError("off by a factor of N: the loss is the mean over the rows")
        assert float((got - want).norm()) < 1e-8 * max(1.0, scale), (
            f"the product is off by a relative {float((got - want).norm()) / scale:.2g}: between the forward "
            "and the backward product, multiply by the cross-entropy's Hessian in the logits, row by row"
        )
