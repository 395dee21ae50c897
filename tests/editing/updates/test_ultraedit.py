"""crispedit_lite.editing.updates.ultraedit: the ridge solve, the lifelong normaliser, the pseudo-values.

Random float64 matrices, exact against the normal equations, one-shot statistics and hand computation;
the editor end to end is in ``tests/editing/editors/test_ultraedit.py``.
"""

from __future__ import annotations

import pytest
import torch

from crispedit_lite.editing.updates.ultraedit import (
    EPS,
    LifelongNormalizer,
    pseudo_values,
    ridge_solve,
    ultraedit_delta,
)


@pytest.mark.parametrize("rows", [7, 3])  # more rows than columns (primal), fewer (dual form)
def test_ridge_solve_satisfies_its_normal_equations(rows):
    g = torch.Generator().manual_seed(0)
    K, V = torch.randn(rows, 5, generator=g, dtype=torch.float64), torch.randn(rows, 4, generator=g,
                                                                              dtype=torch.float64)
    lam = 0.3
    X = ridge_solve(K, V, lam)
    assert X.shape == (5, 4) and X.dtype == torch.float64
    lhs = (K.T @ K + lam * torch.eye(5, dtype=torch.float64)) @ X
    assert torch.allclose(lhs, K.T @ V, atol=1e-12, rtol=0)
    # the same minimiser as least squares on the augmented system [K; sqrt(lam) I] X = [V; 0]
    aug = torch.linalg.lstsq(torch.cat([K, lam ** 0.5 * torch.eye(5, dtype=torch.float64)]),
                             torch.cat([V, torch.zeros(5, 4, dtype=torch.float64)])).solution
    assert torch.allclose(X, aug, atol=1e-10)
    assert not torch.allclose(ridge_solve(K, V, 3.0), X, atol=1e-3)  # lambda matters
    with pytest.raises(ValueError, match="lam"):
        ridge_solve(K, V, 0.0)
    with pytest.raises(ValueError, match="one row per token"):
        ridge_solve(K, V[:-1], lam)


@pytest.mark.parametrize("sizes", [(3, 1, 5, 2), (11,), (1, 1, 1, 4)])
def test_lifelong_normalizer_streaming_equals_one_shot(sizes):
    g = torch.Generator().manual_seed(1)
    z = torch.randn(sum(sizes), 6, generator=g, dtype=torch.float64) * 3 + 2
    norm = LifelongNormalizer(6)
    start = 0
    for m in sizes:
        norm.update(z[start:start + m])
        start += m
    assert norm.n == z.shape[0]
    assert torch.allclose(norm.mean, z.mean(0), atol=1e-12)
    assert torch.allclose(norm.std, z.std(0), atol=1e-12)  # sample std, N - 1
    assert torch.allclose(norm.normalize(z), (z - z.mean(0)) / (z.std(0) + EPS), atol=1e-12)


def test_official_variance_follows_the_official_update():
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(4, 3, generator=g, dtype=torch.float64), torch.randn(6, 3, generator=g,
                                                                           dtype=torch.float64)
    norm = LifelongNormalizer(3, variance="official")
    norm.update(a)
    norm.update(b)
    # by hand: var += m * unbiased_var(batch) + n_old * m * delta^2 / n_new
    var = 4 * a.var(0)
    delta = b.mean(0) - a.mean(0)
    var = var + 6 * b.var(0) + 4 * 6 * delta ** 2 / 10
    assert torch.allclose(norm.std, (var / (10 - 1 + EPS)).sqrt(), atol=1e-12)
    assert not torch.allclose(norm.std, torch.cat([a, b]).std(0), atol=1e-3)  # it is biased
    with pytest.raises(ValueError, match="at least 2 rows"):
        norm.update(a[:1])


def test_pseudo_values_and_delta_by_hand():
    g = torch.Generator().manual_seed(3)
    K, G = torch.randn(5, 4, generator=g, dtype=torch.float64), torch.randn(5, 3, generator=g,
                                                                           dtype=torch.float64)
    norm = LifelongNormalizer(7)
    norm.update(torch.cat([K, G], 1))
    z = torch.cat([K, G], 1)
    z_hat = (z - z.mean(0)) / (z.std(0) + EPS)
    want = -0.1 * (z_hat[:, :4] ** 2).sum(1, keepdim=True) * z_hat[:, 4:]
    assert torch.allclose(pseudo_values(K, G, norm, 0.1), want, atol=1e-12)
    delta = ultraedit_delta(K, G, norm, 0.1, 1.0)
    assert delta.shape == (3, 4)  # the weight's (d_out, d_in) layout
    assert torch.allclose(delta.T, ridge_solve(K, want, 1.0), atol=1e-12)
    with pytest.raises(ValueError, match="normalizer has size"):
        pseudo_values(K, G, LifelongNormalizer(6), 0.1)
