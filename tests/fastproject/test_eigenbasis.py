"""The eigenbasis variant (``fastproject.eigenbasis``): updates inside the subspace, reparam equal."""

import torch
from torch import nn

from crispedit_lite.fastproject import (
    EigenbasisLinear,
    EigenbasisProjectedAdam,
    attach_eigenbasis,
    merge_eigenbasis,
)
from crispedit_lite.optim import ProjectedAdam
from tests.helpers import F64, TinyMLP, random_projector, rel_err, train_tiny_mlp


def test_eigenbasis_adam_update_inside_subspace_and_matches_reparam():
    kp = random_projector(6, 10, 0.7, massive=True)
    w0 = TinyMLP(gen=torch.Generator().manual_seed(3)).down.weight.detach().clone()

    def mk():
        return TinyMLP(gen=torch.Generator().manual_seed(3))

    got = train_tiny_mlp(
        lambda m, c: EigenbasisProjectedAdam([m.down.weight], {m.down.weight: kp}, lr=1e-2),
        mk,
        steps=5,
    )
    delta = got.down.weight.detach() - w0
    assert rel_err(kp.project(delta), delta) < 1e-12  # exactly in the editable subspace
    # the paper's ProjectedAdam leaks out of it
    paper = train_tiny_mlp(
        lambda m, c: ProjectedAdam([m.down.weight], {m.down.weight: kp}, lr=1e-2), mk, steps=5
    )
    dp = paper.down.weight.detach() - w0
    assert rel_err(kp.project(dp), dp) > 1e-6
    # with token factors from a capture: same iterates
    capd = train_tiny_mlp(
        lambda m, c: EigenbasisProjectedAdam(
            [m.down.weight], {m.down.weight: kp}, lr=1e-2, capture=c, names={m.down.weight: "down"}
        ),
        mk,
        steps=5,
        capture=True,
    )
    assert rel_err(capd.down.weight, got.down.weight) < 1e-10
    # the reparameterised layer + stock Adam: same iterates
    gen = torch.Generator().manual_seed(7)
    model = mk()
    for p in model.parameters():
        p.requires_grad_(False)
    mods = attach_eigenbasis(model, {"down": kp})
    assert isinstance(model.down, EigenbasisLinear)
    opt = torch.optim.Adam([mods["down"].delta], lr=1e-2)
    for _ in range(5):
        opt.zero_grad()
        x = torch.randn(3, 5, 6, generator=gen, dtype=F64)
        y = torch.randn(3, 5, 6, generator=gen, dtype=F64)
        ((model(x) - y) ** 2).mean().backward()
        opt.step()
    assert merge_eigenbasis(model) == ["down"]
    assert isinstance(model.down, nn.Linear)
    assert rel_err(model.down.weight, got.down.weight) < 1e-10

def test_eigenbasis_linear_with_sgd_is_projected_gd():
    kp = random_projector(6, 10, 0.7)
    gen = torch.Generator().manual_seed(5)
    base = nn.Linear(10, 6, bias=False, dtype=F64)
    w0 = base.weight.detach().clone()
    lin = EigenbasisLinear(base, kp)
    x, y = torch.randn(8, 10, generator=gen, dtype=F64), torch.randn(8, 6, generator=gen, dtype=F64)
    ((lin(x) - y) ** 2).sum().backward()
    lin.delta.data -= 0.1 * lin.delta.grad
    w = w0.clone().requires_grad_(True)
    ((x @ w.T - y) ** 2).sum().backward()
    assert rel_err(lin.merged_weight(), w0 - 0.1 * kp.project(w.grad)) < 1e-12
