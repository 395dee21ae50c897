"""MEND's editor network: identity at initialisation, Welford statistics, shared shapes, file metadata."""

from __future__ import annotations

import pytest
import torch

from crispedit_lite.editing.updates.mend import (
    GradientTransform,
    IdentityMLP,
    MendNetwork,
    RunningNorm,
    pseudo_gradient,
    shape_key,
)


def _official_welford(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The official one-row-at-a-time update (algs/mend.py: update_counter), as a reference."""
    mean, s, k = rows[0].clone(), torch.zeros_like(rows[0]), 1
    for x in rows[1:]:
        k += 1
        new_mean = mean + (x - mean) / k
        s = s + (x - mean) * (x - new_mean)
        mean = new_mean
    return mean, (s / (k - 1)).sqrt(), k


def test_running_norm_in_batches_equals_the_official_row_by_row_update():
    torch.manual_seed(0)
    rows = torch.randn(37, 5, dtype=torch.float64) * 3 + 1
    norm = RunningNorm(5).double()
    for chunk in (rows[:1], rows[1:4], rows[4:20], rows[20:]):
        norm.update(chunk)
    mean, std, k = _official_welford(rows)
    assert int(norm.count) == k == 37
    torch.testing.assert_close(norm.mean, mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(norm(rows), (rows - mean) / (std + 1e-7), rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError, match="needs at least 2"):
        RunningNorm(5)(rows)


def test_editor_mlp_is_the_identity_at_initialisation_and_not_after_a_change():
    torch.manual_seed(0)
    mlp = IdentityMLP(12, n_hidden=1, rank=4, n_modes=3).double()
    h = torch.randn(9, 12, dtype=torch.float64)
    for mode in range(3):
        assert torch.equal(mlp(h, mode), h)
    with torch.no_grad():
        mlp.layers[0].shift[1] += 0.5  # the matrix of mode 1 now gets a shifted output, the others not
    assert torch.equal(mlp(h, 0), h) and not torch.equal(mlp(h, 1), h)
    assert mlp.layers[0].u.shape == (12, 4) and mlp.layers[0].v.shape == (4, 12)


def test_combined_transform_normalises_drops_zero_rows_and_updates_only_in_training():
    torch.manual_seed(0)
    g = GradientTransform(4, 6, n_modes=2, rank=3).double()
    u, d = torch.randn(2, 5, 4, dtype=torch.float64), torch.randn(2, 5, 6, dtype=torch.float64)
    d[1, 3:] = 0  # two padded positions: zero output gradient
    g.train()
    ut, dt = g(u, d, 0)
    assert ut.shape == (8, 4) and dt.shape == (8, 6) and int(g.u_norm.count) == 8
    keep = torch.ones(2, 5, dtype=torch.bool)
    keep[1, 3:] = False
    ur, dr = u[keep], d[keep]
    torch.testing.assert_close(ut, (ur - ur.mean(0)) / (ur.std(0) + 1e-7))
    torch.testing.assert_close(dt, (dr - dr.mean(0)) / (dr.std(0) + 1e-7))
    g.eval()
    g(u, d, 1)
    assert int(g.u_norm.count) == 8  # frozen at edit time


def test_pseudo_gradient_is_the_sum_of_outer_products():
    torch.manual_seed(0)
    u, d = torch.randn(7, 4, dtype=torch.float64), torch.randn(7, 3, dtype=torch.float64)
    ref = sum(torch.outer(d[t], u[t]) for t in range(7))
    torch.testing.assert_close(pseudo_gradient(u, d), ref)
    assert torch.linalg.matrix_rank(pseudo_gradient(u[:2], d[:2])) <= 2


def test_network_shares_one_transform_per_shape_with_a_mode_and_a_step_per_matrix():
    shapes = {"l0.up": (6, 4), "l0.down": (4, 6), "l1.up": (6, 4), "l1.down": (4, 6)}
    net = MendNetwork(shapes, edit_lr=1e-4, rank=3)
    assert set(net.transforms) == {shape_key(4, 6), shape_key(6, 4)}
    assert net.mode == {"l0.up": 0, "l0.down": 0, "l1.up": 1, "l1.down": 1}
    assert net.edit_lrs.shape == (4,) and torch.allclose(net.edit_lrs, torch.full((4,), 1e-4))
    twin = MendNetwork.from_metadata(net.metadata())
    assert twin.shapes == net.shapes and twin.network == {"rank": 3}
    with pytest.raises(ValueError, match="unknown network settings"):
        MendNetwork(shapes, ranks=3)
    with pytest.raises(ValueError, match="not a MEND editor file"):
        MendNetwork.from_metadata({})
    with pytest.raises(ValueError, match="combine cannot be used"):
        MendNetwork(shapes, combine=True, x_only=True)


def test_one_sided_variants_transform_one_factor():
    torch.manual_seed(0)
    u, d = torch.randn(5, 4, dtype=torch.float64), torch.randn(5, 6, dtype=torch.float64)
    for kw, sides in (({"x_only": True}, {"u"}), ({"delta_only": True}, {"delta"}),
                      ({"one_sided": True}, {"u"}), ({}, {"u", "delta"})):
        g = GradientTransform(4, 6, n_modes=1, rank=2, combine=False, norm=False, **kw).double()
        assert set(g.nets) == sides
        ut, dt = g(u, d, 0)
        assert torch.equal(ut, u) and torch.equal(dt, d)  # identity at initialisation either way
