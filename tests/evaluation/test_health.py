"""crispedit_lite.evaluation.health: every weight-health signal against a dense or closed-form reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch

from crispedit_lite.evaluation.health import (
    base_spectrum,
    condition_number,
    layer_health,
    pooled_health,
    protected_share,
    subspace_overlap,
    top_singular_vectors,
)
from tests.helpers import random_projector

F64 = torch.float64


def _rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def test_condition_number_matches_numpy_and_is_infinite_when_singular():
    W = _rand(5, 8)
    assert condition_number(W) == pytest.approx(np.linalg.cond(W.numpy(), 2), rel=1e-12)
    assert condition_number(W.T) == pytest.approx(np.linalg.cond(W.numpy(), 2), rel=1e-12)
    assert condition_number(torch.diag(torch.tensor([3.0, 2.0, 0.5]))) == pytest.approx(6.0)
    assert condition_number(torch.diag(torch.tensor([3.0, 1.0, 0.0]))) == math.inf


def test_subspace_overlap_is_the_mean_squared_cosine_of_the_principal_angles():
    U = torch.linalg.qr(_rand(9, 3, seed=1))[0]
    V = torch.linalg.qr(_rand(9, 3, seed=2))[0]
    angles = scipy.linalg.subspace_angles(U.numpy(), V.numpy())
    assert subspace_overlap(U, V) == pytest.approx(float(np.mean(np.cos(angles) ** 2)), rel=1e-12)
    assert subspace_overlap(U, U) == pytest.approx(1.0)
    Q = torch.linalg.qr(_rand(9, 9, seed=3))[0]  # a basis and its complement: orthogonal subspaces
    assert subspace_overlap(Q[:, :3], Q[:, 3:6]) == pytest.approx(0.0, abs=1e-14)
    with pytest.raises(ValueError, match="shapes"):
        subspace_overlap(U, V[:, :2])


def test_top_singular_vectors_are_the_svds():
    W = _rand(6, 4)
    U, s, V = top_singular_vectors(W, 2)
    torch.testing.assert_close(s, torch.linalg.svdvals(W)[:2])
    torch.testing.assert_close(W @ V, U * s)  # W v_i = s_i u_i
    with pytest.raises(ValueError, match="k must lie"):
        top_singular_vectors(W, 5)


def test_protected_share_equals_the_dense_projector():
    proj = random_projector(4, 6, gamma=0.8, seed=0)
    P = proj.dense()  # (24, 24), row-major vec
    delta = _rand(4, 6, seed=5)
    v = delta.reshape(-1)
    want = float(((torch.eye(24, dtype=F64) - P) @ v).pow(2).sum() / v.pow(2).sum())
    assert 0.05 < want < 0.95
    assert protected_share(delta, proj) == pytest.approx(want, rel=1e-10)
    editable = proj.project(delta)
    assert protected_share(editable, proj) == pytest.approx(0.0, abs=1e-12)
    assert protected_share(delta - editable, proj) == pytest.approx(1.0, abs=1e-12)
    assert protected_share(torch.zeros(4, 6, dtype=F64), proj) is None


def test_layer_health_of_a_scaled_and_of_an_unchanged_matrix():
    W0 = _rand(6, 10, seed=7)
    h = layer_health(3 * W0, W0, k=3)
    assert h["norm_ratio"] == pytest.approx(3.0)
    assert h["delta_norm"] == pytest.approx(2 * float(W0.norm()))
    assert h["delta_ratio"] == pytest.approx(2.0)
    assert h["cond"] == pytest.approx(h["cond_base"])  # scaling keeps the condition number
    assert h["sigma_max"] == pytest.approx(3 * float(torch.linalg.svdvals(W0)[0]))
    assert h["overlap_out"] == pytest.approx(1.0) and h["overlap_in"] == pytest.approx(1.0)
    assert h["protected_share"] is None  # no projector
    same = layer_health(W0, W0, k=3, base=base_spectrum(W0, 3))
    assert same["delta_norm"] == 0.0 and same["overlap_out"] == pytest.approx(1.0)


def test_layer_health_sees_a_rotated_top_subspace():
    U = torch.linalg.qr(_rand(6, 6, seed=8))[0]
    V = torch.linalg.qr(_rand(4, 4, seed=9))[0]
    W0 = U[:, :4] @ torch.diag(torch.tensor([8.0, 4.0, 2.0, 1.0], dtype=F64)) @ V.T
    W = U[:, :4] @ torch.diag(torch.tensor([1.0, 4.0, 2.0, 8.0], dtype=F64)) @ V.T  # swap top and bottom
    h = layer_health(W, W0, k=1)
    assert h["overlap_out"] == pytest.approx(0.0, abs=1e-12)
    assert h["overlap_in"] == pytest.approx(0.0, abs=1e-12)
    assert layer_health(W, W0, k=2)["overlap_out"] == pytest.approx(0.5)  # {u4, u2} vs {u1, u2}
    with pytest.raises(ValueError, match="differ in shape"):
        layer_health(W, W0.T)


def test_pooled_health_weighs_the_protected_share_by_update_norm():
    proj_a, proj_b = random_projector(4, 6, 0.8, seed=0), random_projector(4, 6, 0.6, seed=1)
    W0a, W0b = _rand(4, 6, seed=10), _rand(4, 6, seed=11)
    da, db = _rand(4, 6, seed=12), 0.1 * _rand(4, 6, seed=13)
    ha = layer_health(W0a + da, W0a, k=2, projector=proj_a)
    hb = layer_health(W0b + db, W0b, k=2, projector=proj_b)
    pooled = pooled_health({"a": ha, "b": hb})
    leak = protected_share(da, proj_a) * float(da.pow(2).sum()) + protected_share(db, proj_b) * float(
        db.pow(2).sum())
    assert pooled["protected_share"] == pytest.approx(leak / float(da.pow(2).sum() + db.pow(2).sum()))
    assert pooled["cond_max"] == max(ha["cond"], hb["cond"])
    assert pooled["norm_ratio"] == pytest.approx((ha["norm_ratio"] + hb["norm_ratio"]) / 2)
    assert pooled_health({"a": layer_health(W0a, W0a, k=2)})["protected_share"] is None
    with pytest.raises(ValueError, match="no matrices"):
        pooled_health({})
