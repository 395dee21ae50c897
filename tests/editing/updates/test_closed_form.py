"""crispedit_lite.editing.updates.closed_form against the normal equations and exact identities (float64)."""

from __future__ import annotations

import pytest
import torch

from crispedit_lite.editing.updates.closed_form import (
    alphaedit_delta,
    alphaedit_projector,
    memit_delta,
    rome_delta,
)

D_OUT, D_IN, U = 7, 12, 4


def _rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _covariance(d=D_IN, n=50, rank=None, seed=1):
    k0 = _rand(d, n, seed=seed)
    if rank is not None:  # exactly rank-deficient preserved keys
        k0 = _rand(d, rank, seed=seed) @ _rand(rank, n, seed=seed + 1)
    return k0 @ k0.T / n, k0


def test_memit_solves_its_normal_equations():
    R, K1 = _rand(D_OUT, U), _rand(D_IN, U, seed=2)
    C, _ = _covariance()
    cache = _rand(D_IN, 3, seed=5) @ _rand(D_IN, 3, seed=5).T
    for lam, c in ((0.7, None), (15000.0, None), (2.0, cache)):
        delta = memit_delta(R, K1, C, lam, c)
        M = lam * C + K1 @ K1.T + (0 if c is None else c)
        torch.testing.assert_close(delta @ M, R @ K1.T, rtol=1e-9, atol=1e-9)
    # a wrong lambda breaks them
    delta = memit_delta(R, K1, C, 1.0)
    assert not torch.allclose(delta @ (2.0 * C + K1 @ K1.T), R @ K1.T, atol=1e-6)


def test_memit_with_small_lambda_fits_the_keys_exactly():
    R, K1 = _rand(D_OUT, U), _rand(D_IN, U, seed=2)
    C, _ = _covariance()
    torch.testing.assert_close(memit_delta(R, K1, C, 1e-10) @ K1, R, rtol=1e-6, atol=1e-6)


def test_projector_is_symmetric_idempotent_and_spans_the_small_eigenvalues():
    C, _ = _covariance(rank=5)
    ns = alphaedit_projector(C, threshold=1e-8)
    assert ns.rank == D_IN - 5 and ns.rule == "absolute"
    torch.testing.assert_close(ns.P, ns.P.T)
    torch.testing.assert_close(ns.P @ ns.P, ns.P, rtol=1e-10, atol=1e-10)
    assert abs(torch.trace(ns.P).item() - ns.rank) < 1e-9
    torch.testing.assert_close(ns.P @ C, torch.zeros_like(C), rtol=0, atol=1e-10)


def test_energy_rule_protects_gamma_of_the_energy():
    C, _ = _covariance()
    evals = torch.linalg.eigvalsh(C).flip(0)
    for gamma in (0.5, 0.9, 0.99):
        ns = alphaedit_projector(C, rule="energy", gamma=gamma)
        protected = evals[: D_IN - ns.rank].sum() / evals.sum()
        assert protected >= gamma - 1e-12
        # one direction fewer protected would fall short of gamma
        assert evals[: D_IN - ns.rank - 1].sum() / evals.sum() < gamma
        leaked = torch.trace(ns.P @ C) / torch.trace(C)
        assert leaked <= 1 - gamma + 1e-12
    with pytest.raises(ValueError, match="gamma"):
        alphaedit_projector(C, rule="energy")


def test_alphaedit_update_leaves_rank_deficient_preserved_keys_untouched():
    C, k0 = _covariance(rank=5)
    R, K1 = _rand(D_OUT, U), _rand(D_IN, U, seed=2)
    ns = alphaedit_projector(C, threshold=1e-8)
    cache = _rand(D_IN, 3, seed=6) @ _rand(D_IN, 3, seed=6).T
    delta = alphaedit_delta(R, K1, ns.P, 1.0, cache)
    assert (ns.P @ k0).abs().max() < 1e-10
    assert (delta @ k0).abs().max() < 1e-9  # Delta K0 = Delta P K0 = 0
    assert delta.abs().max() > 1e-3  # and it is not the zero update
    # MEMIT's soft penalty (on a regularised, invertible C) does move the preserved outputs
    c_reg = C + 1e-3 * torch.eye(D_IN, dtype=torch.float64)
    assert (memit_delta(R, K1, c_reg, 1.0) @ k0).abs().max() > 1e-3


def test_alphaedit_satisfies_its_stationarity_equation():
    C, _ = _covariance(rank=6)
    R, K1 = _rand(D_OUT, U), _rand(D_IN, U, seed=2)
    P = alphaedit_projector(C, threshold=1e-8).P
    cache = _rand(D_IN, 3, seed=7) @ _rand(D_IN, 3, seed=7).T
    for l2 in (1.0, 10.0):
        delta = alphaedit_delta(R, K1, P, l2, cache)
        lhs = delta @ ((K1 @ K1.T + cache) @ P + l2 * torch.eye(D_IN, dtype=torch.float64))
        torch.testing.assert_close(lhs, R @ K1.T @ P, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(delta @ P, delta, rtol=1e-9, atol=1e-9)


def test_alphaedit_with_identity_projector_is_memit_without_covariance():
    R, K1 = _rand(D_OUT, U), _rand(D_IN, U, seed=2)
    eye = torch.eye(D_IN, dtype=torch.float64)
    # exactly: P = I, alpha = lambda with C = I
    torch.testing.assert_close(alphaedit_delta(R, K1, eye, 0.3), memit_delta(R, K1, eye, 0.3),
                               rtol=1e-10, atol=1e-12)
    # the limit alpha -> 0 with full-rank keys (u > d_in) is MEMIT with lambda = 0
    Kw = _rand(D_IN, 20, seed=3)
    Rw = _rand(D_OUT, 20, seed=4)
    torch.testing.assert_close(alphaedit_delta(Rw, Kw, eye, 1e-9), memit_delta(Rw, Kw, eye, 0.0),
                               rtol=1e-6, atol=1e-8)


def test_rome_maps_the_key_to_the_value_with_a_rank_one_update():
    W, C = _rand(D_OUT, D_IN), _covariance()[0]
    k, v = _rand(D_IN, seed=8), _rand(D_OUT, seed=9)
    delta = rome_delta(k, v, W, C)
    torch.testing.assert_close((W + delta) @ k, v, rtol=1e-10, atol=1e-10)
    assert torch.linalg.matrix_rank(delta).item() == 1
    # minimum C-norm: any other exact solution W + delta + E with E k = 0 costs more
    E = _rand(D_OUT, D_IN, seed=10)
    E = E - (E @ k)[:, None] * k[None, :] / (k @ k)
    cost = lambda d: torch.trace(d @ C @ d.T)  # noqa: E731
    assert cost(delta) < cost(delta + 0.1 * E)


def test_bad_shapes_and_settings_are_clear_errors():
    R, K1, C = _rand(D_OUT, U), _rand(D_IN, U, seed=2), _covariance()[0]
    with pytest.raises(ValueError, match="R"):
        memit_delta(_rand(D_OUT, U + 1), K1, C, 1.0)
    with pytest.raises(ValueError, match="C"):
        memit_delta(R, K1, C[:-1], 1.0)
    with pytest.raises(ValueError, match="lam"):
        memit_delta(R, K1, C, -1.0)
    with pytest.raises(ValueError, match="l2"):
        alphaedit_delta(R, K1, torch.eye(D_IN, dtype=torch.float64), 0.0)
    with pytest.raises(ValueError, match="rule"):
        alphaedit_projector(C, rule="relative")
    with pytest.raises(ValueError, match="NaN"):
        memit_delta(R, K1 * float("nan"), C, 1.0)
