"""Projected optimisers: the step stays in the editable subspace (SGD exactly; Adam's raw gradient)."""

import pytest
import torch
from torch import nn

from crispedit_lite.optim import ProjectedAdam, ProjectedSGD
from crispedit_lite.projector import KroneckerProjector

f64 = torch.float64


def setup(dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    lin = nn.Linear(6, 4, bias=False).to(dtype)
    x = torch.randn(3, 6, dtype=f64)  # capability inputs: rank 3 of 6
    A = x.T @ x / 3
    S = torch.eye(4, dtype=f64) + 0.1
    proj = KroneckerProjector.from_factors(A, S, 1.0)  # exact null space of the inputs
    return lin, x, proj


def loss_fn(lin):
    torch.manual_seed(1)
    xe = torch.randn(8, 6).to(lin.weight.dtype)
    return (lin(xe) ** 2).sum()


@pytest.mark.parametrize("momentum,wd", [(0.0, 0.0), (0.9, 0.01)])
def test_projected_sgd_steps_stay_in_subspace(momentum, wd):
    lin, x, proj = setup()
    w0 = lin.weight.detach().clone()
    opt = ProjectedSGD([lin.weight], {lin.weight: proj}, lr=0.05, momentum=momentum, weight_decay=wd)
    for _ in range(5):
        opt.zero_grad()
        loss_fn(lin).backward()
        opt.step()
    delta = (lin.weight - w0).double()
    assert delta.norm() > 1e-3
    # Delta W x = 0 for every capability input: outputs on D_cap are unchanged
    assert (delta @ x.T).abs().max() < 1e-5
    torch.testing.assert_close(proj.project(delta.float()).double(), delta, atol=1e-6, rtol=0)


def test_projected_adam_projects_the_raw_gradient_like_the_paper():
    lin, x, proj = setup()
    ref = nn.Linear(6, 4, bias=False)
    ref.load_state_dict(lin.state_dict())
    opt = ProjectedAdam([lin.weight], {lin.weight: proj}, lr=1e-2)
    ref_opt = torch.optim.Adam([ref.weight], lr=1e-2)
    for _ in range(3):
        opt.zero_grad(), ref_opt.zero_grad()
        loss_fn(lin).backward()
        loss_fn(ref).backward()
        ref.weight.grad = proj.project(ref.weight.grad)  # what the official code does
        opt.step(), ref_opt.step()
    torch.testing.assert_close(lin.weight, ref.weight)


def test_projected_adam_update_leaks_but_project_update_does_not():
    lin, x, proj = setup()
    w0 = lin.weight.detach().clone()
    leaky = ProjectedAdam([lin.weight], {lin.weight: proj}, lr=1e-2)
    for _ in range(3):
        leaky.zero_grad()
        loss_fn(lin).backward()
        leaky.step()
    leak = ((lin.weight - w0).double() @ x.T).abs().max()
    lin2, _, _ = setup()
    exact = ProjectedAdam([lin2.weight], {lin2.weight: proj}, lr=1e-2, project_update=True)
    for _ in range(3):
        exact.zero_grad()
        loss_fn(lin2).backward()
        exact.step()
    kept = ((lin2.weight - w0).double() @ x.T).abs().max()
    assert kept < 1e-5 < leak  # Adam's element-wise scaling moves the step out of the subspace


def test_bf16_parameters_are_projected_in_fp32():
    lin, x, proj = setup(torch.bfloat16)
    w0 = lin.weight.detach().double().clone()
    opt = ProjectedSGD([lin.weight], {lin.weight: proj}, lr=0.05)
    opt.zero_grad()
    loss_fn(lin).backward()
    opt.step()
    assert lin.weight.dtype == torch.bfloat16
    delta = lin.weight.double() - w0
    # only bf16 rounding of the stored weights leaves the subspace (relative leak ~ 2^-8)
    assert (delta @ x.T).norm() / (delta.norm() * x.norm()) < 0.02


def test_unprojected_parameters_and_bad_arguments():
    lin, _, proj = setup()
    other = nn.Parameter(torch.ones(3))
    with pytest.raises(ValueError, match="not among the optimised"):
        ProjectedAdam([lin.weight], {other: proj})
    with pytest.raises(ValueError, match="project"):
        ProjectedSGD([lin.weight], {lin.weight: object()})
    with pytest.raises(ValueError, match="momentum"):
        ProjectedSGD([lin.weight], {}, momentum=1.5)
    # a parameter without a projector is updated by plain SGD
    opt = ProjectedSGD([lin.weight, other], {lin.weight: proj}, lr=0.1)
    other.grad = torch.ones(3)
    opt.step()
    torch.testing.assert_close(other.detach(), torch.full((3,), 0.9))


def test_user_step_hooks_fire_once_per_step():
    lin, _, proj = setup()
    torch.optim.Adam([nn.Parameter(torch.ones(1))])  # torch patches Adam.step once one exists
    opt = ProjectedAdam([lin.weight], {lin.weight: proj}, lr=1e-2)
    calls = []
    opt.register_step_post_hook(lambda *a: calls.append(1))
    for _ in range(3):
        opt.zero_grad()
        loss_fn(lin).backward()
        opt.step()
    assert len(calls) == 3
