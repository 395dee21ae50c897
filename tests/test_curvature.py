"""Exact curvature references: Bregman divergence, Gauss-Newton vs Hessian, Proposition 1."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from crispedit_lite.curvature import (
    bregman_divergence,
    flat_model_function,
    gauss_newton_matrix,
    hessian_matrix,
    softmax_kl,
)
from crispedit_lite.projector import InputNullspaceProjector


@pytest.fixture(autouse=True)
def float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def mlp(seed=0, d_in=4, d_h=5, d_out=3):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d_in, d_h), nn.Tanh(), nn.Linear(d_h, d_out))


def data(seed=1, n=12, d_in=4, n_cls=3):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d_in, generator=g), torch.randint(0, n_cls, (n,), generator=g)


def test_bregman_softmax_ce_is_kl_for_any_label():
    g = torch.Generator().manual_seed(0)
    base, out = torch.randn(7, 5, generator=g), torch.randn(7, 5, generator=g)
    kl = softmax_kl(base, out)
    for _ in range(3):
        y = torch.randint(0, 5, (7,), generator=g)
        d = bregman_divergence(F.cross_entropy, out, base, y)
        torch.testing.assert_close(d, kl)
    assert kl > 0


def test_bregman_is_zero_with_zero_gradient_at_base():
    base = torch.randn(4, 3)
    y = torch.randint(0, 3, (4,))
    assert bregman_divergence(F.cross_entropy, base, base, y).abs() < 1e-12
    grad = torch.func.grad(lambda o: bregman_divergence(F.cross_entropy, o, base, y))(base.clone())
    assert grad.abs().max() < 1e-12


def test_bregman_hessian_equals_gnh_off_minimum_but_loss_hessian_does_not():
    model = mlp()
    x, y = data()
    params = ["0.weight", "2.weight"]
    G = gauss_newton_matrix(model, F.cross_entropy, x, y, params)
    H = hessian_matrix(model, F.cross_entropy, x, y, params)
    f, theta0 = flat_model_function(model, x, params)
    base = f(theta0).detach()
    Hb = torch.func.hessian(lambda th: bregman_divergence(F.cross_entropy, f(th), base, y))(theta0)
    torch.testing.assert_close(Hb, G, atol=1e-10, rtol=1e-8)
    # the model is not at a minimum: the loss gradient and the residual term are non-zero
    grad = torch.func.grad(lambda th: F.cross_entropy(f(th), y))(theta0)
    assert grad.norm() > 1e-2
    assert (H - G).norm() / G.norm() > 1e-2


def test_gnh_is_psd_and_hessian_is_not_off_minimum():
    model = mlp(seed=3)
    x, y = data(seed=4)
    G = gauss_newton_matrix(model, F.cross_entropy, x, y)
    H = hessian_matrix(model, F.cross_entropy, x, y)
    assert torch.linalg.eigvalsh(G).min() > -1e-10
    assert torch.linalg.eigvalsh(H).min() < -1e-6


def test_bregman_second_order_finite_difference():
    model = mlp(seed=5)
    x, y = data(seed=6)
    f, theta0 = flat_model_function(model, x)
    G = gauss_newton_matrix(model, F.cross_entropy, x, y)
    base = f(theta0).detach()
    v = torch.randn(theta0.shape, generator=torch.Generator().manual_seed(7))
    quad = 0.5 * v @ G @ v
    errs = []
    for eps in (1e-2, 5e-3, 2.5e-3):
        d = bregman_divergence(F.cross_entropy, f(theta0 + eps * v), base, y)
        errs.append(abs(d - eps**2 * quad).item())
        assert abs(d / (eps**2 * quad) - 1) < 0.1
    # the remainder is third order: halving eps divides it by about 8
    assert 5 < errs[0] / errs[1] < 11 and 5 < errs[1] / errs[2] < 11


def test_gnh_mse_matches_closed_form_on_linear_model():
    torch.manual_seed(0)
    lin = nn.Linear(3, 2, bias=False)
    x = torch.randn(10, 3)
    t = torch.randn(10, 2)
    G = gauss_newton_matrix(lin, lambda o, tt: ((o - tt) ** 2).sum() / 10, x, t)
    # row-major vec(W): J_n = I kron x_n^T, H = 2I  =>  G = 2 I kron (X^T X / n)
    expected = torch.kron(torch.eye(2), 2 * x.T @ x / 10)
    torch.testing.assert_close(G, expected)


def test_proposition_1_input_null_space_inside_gnh_null_space():
    """Delta W a_i = 0 for all capability inputs => Delta W is in the GNH null space (Prop. 1)."""
    torch.manual_seed(0)
    d_in, d_h, d_out, n = 6, 5, 3, 4  # n < d_in: the inputs leave a null space
    model = nn.Sequential(nn.Linear(d_in, d_h, bias=False), nn.Tanh(), nn.Linear(d_h, d_out))
    x = torch.randn(n, d_in)
    y = torch.randint(0, d_out, (n,))
    G = gauss_newton_matrix(model, F.cross_entropy, x, y, ["0.weight"])
    A = x.T @ x / n
    proj = InputNullspaceProjector.from_factor(A, d_out=d_h, gamma=1.0, dtype=torch.float64)
    assert proj.U0.shape[1] == d_in - n
    for seed in range(3):
        dW = proj.project(torch.randn(d_h, d_in, generator=torch.Generator().manual_seed(seed)))
        assert (dW @ x.T).abs().max() < 1e-10
        v = dW.reshape(-1)
        assert (G @ v).norm() < 1e-10 * G.norm()
    # the GNH null space is strictly larger than the input null space here
    gnh_null = (torch.linalg.eigvalsh(G) < 1e-10 * torch.linalg.eigvalsh(G).max()).sum()
    assert gnh_null > d_h * (d_in - n)


def test_unknown_params_rejected():
    with pytest.raises(ValueError, match="unknown parameter"):
        flat_model_function(mlp(), torch.randn(2, 4), ["nope.weight"])
    with pytest.raises(ValueError, match="shape"):
        bregman_divergence(F.cross_entropy, torch.randn(2, 3), torch.randn(3, 3), torch.zeros(2).long())
