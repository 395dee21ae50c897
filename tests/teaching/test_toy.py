"""crispedit_lite.teaching.toy: toy data, models, training helpers and the dense eigen-projector."""

import pytest
import torch
from torch import nn

from crispedit_lite.curvature import gauss_newton_matrix, hessian_matrix
from crispedit_lite.projector import energy_rank
from crispedit_lite.teaching.toy import (
    MLP,
    EigenProjector,
    accuracy,
    load_digits_tasks,
    mean_loss,
    train_classifier,
)

f64 = torch.float64


def test_digits_tasks_are_disjoint_stratified_and_relabelled():
    t = load_digits_tasks()
    assert t.n_classes == 5
    for x, y in (t.old_train, t.old_test, t.new_train, t.new_test):
        assert x.shape[1] == 64 and x.min() >= 0 and x.max() <= 1
        assert set(y.tolist()) == set(range(5))
    n = sum(len(p[1]) for p in (t.old_train, t.old_test, t.new_train, t.new_test))
    assert n == 1797
    assert len(t.old_test[1]) == pytest.approx(0.3 * (len(t.old_train[1]) + len(t.old_test[1])), abs=1)
    # deterministic in the seed
    t2 = load_digits_tasks()
    assert torch.equal(t.old_train[0], t2.old_train[0])


def test_digits_tasks_reject_bad_splits():
    with pytest.raises(ValueError, match="overlap"):
        load_digits_tasks((0, 1), (1, 2))
    with pytest.raises(ValueError, match="test_fraction"):
        load_digits_tasks(test_fraction=1.5)


def test_mlp_names_and_shapes():
    m = MLP((8, 6, 4, 3))
    assert [n for n, _ in m.named_parameters()][::2] == ["fc1.weight", "fc2.weight", "fc3.weight"]
    assert m(torch.randn(5, 8)).shape == (5, 3)
    with pytest.raises(ValueError, match="activation"):
        MLP((2, 2), activation="swish")


def test_training_learns_the_old_task_and_is_deterministic():
    t = load_digits_tasks()
    torch.manual_seed(0)
    m = MLP((64, 16, 5))
    hist = train_classifier(m, *t.old_train, epochs=5, lr=0.1, seed=0)
    assert hist[-1] < hist[0]
    assert accuracy(m, *t.old_test) > 0.9
    assert mean_loss(m, *t.old_test) < 0.5
    torch.manual_seed(0)
    m2 = MLP((64, 16, 5))
    train_classifier(m2, *t.old_train, epochs=5, lr=0.1, seed=0)
    assert torch.equal(m.fc1.weight, m2.fc1.weight)


def test_tanh_layer_hessian_differs_from_gnh_relu_does_not():
    torch.manual_seed(1)
    x, y = torch.randn(20, 4, dtype=f64), torch.randint(0, 3, (20,))
    ce = nn.functional.cross_entropy
    for act, differs in (("tanh", True), ("relu", False)):
        m = MLP((4, 5, 5, 3), activation=act).to(f64)
        H = hessian_matrix(m, ce, x, y, ["fc2.weight"])
        G = gauss_newton_matrix(m, ce, x, y, ["fc2.weight"])
        rel = float(torch.linalg.norm(H - G) / torch.linalg.norm(G))
        assert (rel > 1e-3) == differs, (act, rel)


def test_eigen_projector_energy_rule_and_projection():
    g = torch.Generator().manual_seed(0)
    B = torch.randn(12, 12, generator=g, dtype=f64)
    M = B @ B.T
    for gamma in (0.5, 0.9, 0.999):
        P = EigenProjector.from_matrix(M, (3, 4), gamma, dtype=f64)
        assert P.rank == energy_rank(torch.linalg.eigvalsh(M), gamma)
        D = P.dense()
        torch.testing.assert_close(D @ D, D)
        G = torch.randn(3, 4, generator=g, dtype=f64)
        v = P.project(G).reshape(-1)
        # curvature along any editable step is at most the cut eigenvalue
        assert v @ M @ v <= P.threshold * (v @ v) * (1 + 1e-9)
    with pytest.raises(ValueError, match="does not match"):
        EigenProjector.from_matrix(M, (3, 3), 0.9)
    with pytest.raises(ValueError, match="gradient of shape"):
        P.project(torch.zeros(4, 3))


def test_eigen_projector_leaves_negative_curvature_editable():
    M = torch.diag(torch.tensor([4.0, 1.0, -2.0, 0.5], dtype=f64))
    P = EigenProjector.from_matrix(M, (4,), 0.7, dtype=f64)  # protects 4 (top 4/5.5 = 0.73)
    assert P.rank == 1
    e3 = torch.tensor([0.0, 0.0, 1.0, 0.0], dtype=f64)
    torch.testing.assert_close(P.project(e3), e3)
