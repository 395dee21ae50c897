"""EK-FAC against K-FAC and the exact Gauss-Newton matrix of small models."""

import pytest
import torch
from torch import nn

from crispedit_lite.curvature import gauss_newton_matrix
from crispedit_lite.ekfac import collect_ekfac, ekfac_from_kfac, ekfac_projector
from crispedit_lite.kfac import collect_kfac
from crispedit_lite.projector import KroneckerProjector, energy_rank
from crispedit_lite.teaching.toy import MLP

f64 = torch.float64


def ce_mean(out, y):
    return nn.functional.cross_entropy(out, y)


def mse_mean(out, y):
    return ((out - y) ** 2).sum(-1).mean()


@pytest.fixture(scope="module")
def tanh_mlp():
    torch.manual_seed(0)
    model = MLP((6, 5, 4, 3)).to(f64)
    x = torch.randn(40, 6, dtype=f64)
    y = torch.randint(0, 3, (40,))
    return model, x, y


def test_type2_ekfac_is_the_diagonal_of_the_exact_gnh(tanh_mlp):
    model, x, y = tanh_mlp
    ek = collect_ekfac(model, ["fc2"], [(x, y)], labels="type2")["fc2"]
    G = gauss_newton_matrix(model, ce_mean, x, y, ["fc2.weight"])
    Q = torch.kron(ek.U_out, ek.U_in)
    diag = torch.diagonal(Q.T @ G @ Q)
    torch.testing.assert_close(ek.eig.reshape(-1), diag, rtol=1e-4, atol=1e-7)


def test_ekfac_is_frobenius_optimal_in_the_kfac_eigenbasis(tanh_mlp):
    model, x, y = tanh_mlp
    ek = collect_ekfac(model, ["fc2"], [(x, y)], labels="type2")["fc2"]
    G = gauss_newton_matrix(model, ce_mean, x, y, ["fc2.weight"])
    err_ekfac = torch.linalg.norm(G - ek.dense())
    kfac_dense = ekfac_from_kfac_dense(ek)
    err_kfac = torch.linalg.norm(G - kfac_dense)
    assert err_ekfac < err_kfac
    gen = torch.Generator().manual_seed(1)
    for _ in range(5):  # any other eigenvalues in the same basis do worse
        other = ek.eig * (1 + 0.1 * torch.randn(ek.eig.shape, generator=gen, dtype=f64))
        q = torch.kron(ek.U_out, ek.U_in)
        assert err_ekfac <= torch.linalg.norm(G - (q * other.reshape(-1)) @ q.T)


def ekfac_from_kfac_dense(ek):
    q = torch.kron(ek.U_out, ek.U_in)
    return (q * ek.kfac_eigenvalues.reshape(-1)) @ q.T


def test_ekfac_equals_kfac_when_gradients_are_exactly_kronecker():
    # last layer + MSE + type-2 columns: the output gradients sqrt(2) e_c do not depend on the input,
    # so G = A (x) S exactly and the corrected eigenvalues are K-FAC's products.
    torch.manual_seed(2)
    model = MLP((5, 4, 3)).to(f64)
    x = torch.randn(30, 5, dtype=f64)
    y = torch.randn(30, 3, dtype=f64)
    kf = collect_kfac(model, ["fc2"], [(x, y)], labels="type2", loss="mse", progress=False)
    ek = collect_ekfac(model, ["fc2"], [(x, y)], factors=kf, labels="type2", loss="mse")["fc2"]
    torch.testing.assert_close(ek.eig, ek.kfac_eigenvalues, rtol=1e-5, atol=1e-8)
    G = gauss_newton_matrix(model, mse_mean, x, y, ["fc2.weight"])
    torch.testing.assert_close(ek.dense(), G, rtol=1e-5, atol=1e-8)


def test_ekfac_from_kfac_keeps_products_and_projector_matches():
    g = torch.Generator().manual_seed(3)
    a = torch.randn(50, 6, generator=g, dtype=f64)
    s = torch.randn(50, 4, generator=g, dtype=f64)
    from crispedit_lite.kfac import KFACFactors

    kf = KFACFactors(A=a.T @ a / 50, S=s.T @ s / 50, n_tokens=50)
    ek = ekfac_from_kfac(kf)
    for gamma in (0.5, 0.9, 0.99):
        p1 = ekfac_projector(ek, gamma)
        p2 = KroneckerProjector.from_factors(kf.A, kf.S, gamma)
        assert torch.equal(p1.mask, p2.mask)


def test_ekfac_projector_obeys_energy_rule_and_is_a_projection(tanh_mlp):
    model, x, y = tanh_mlp
    ek = collect_ekfac(model, ["fc2"], [(x, y)], labels="true")["fc2"]
    for gamma in (0.5, 0.9, 0.999):
        proj = ekfac_projector(ek, gamma, dtype=f64)
        assert proj.rank == energy_rank(ek.eig, gamma)
        G = torch.randn(4, 5, dtype=f64)
        once = proj.project(G)
        torch.testing.assert_close(proj.project(once), once)
        # protected directions carry the largest corrected eigenvalues
        if 0 < proj.rank < ek.eig.numel():
            assert ek.eig[~proj.mask].min() >= ek.eig[proj.mask].max()


def test_collect_ekfac_rejects_generators_and_missing_factors(tanh_mlp):
    model, x, y = tanh_mlp
    with pytest.raises(ValueError, match="list"):
        collect_ekfac(model, ["fc2"], iter([(x, y)]))
    kf = collect_kfac(model, ["fc1"], [(x, y)], progress=False)
    with pytest.raises(ValueError, match="lack"):
        collect_ekfac(model, ["fc2"], [(x, y)], factors=kf)
