r"""Exact dense curvature references for small models: Hessian, Gauss-Newton and Bregman divergence.

These are the ground truths that :mod:`crispedit_lite.kfac` and :mod:`crispedit_lite.projector` are
tested against, and the objects that notebook ``02_bregman_to_gauss_newton`` derives.

For a model :math:`f_\theta` and a loss :math:`\mathcal L(\theta) = \ell(f_\theta(X), Y)`,

.. math::

    \mathbf H = \nabla^2_\theta \mathcal L, \qquad
    \mathbf G = \mathbf J^\top \mathbf H_{\ell} \mathbf J, \quad
    \mathbf J = \frac{\partial\, \mathrm{vec} f_\theta(X)}{\partial \theta},\;
    \mathbf H_\ell = \nabla^2_{f}\, \ell(f, Y).

The Bregman divergence of the loss in output space (CrispEdit Def. 1, Ikram et al. 2026) is

.. math::

    D_\ell(f, f_0) = \ell(f, y) - \ell(f_0, y) - \langle \nabla \ell(f_0, y), f - f_0 \rangle ,

whose Hessian in :math:`\theta` at :math:`\theta_0` is exactly :math:`\mathbf G` (Prop. 2), whether or
not :math:`\theta_0` minimises the loss. Parameters are flattened in PyTorch's row-major order, in
the order of ``params``; everything here is :math:`O(p^2)` memory and meant for models with at most a
few thousand parameters.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, hessian, jacrev

LossFunc = Callable[[Tensor, Tensor], Tensor]

__all__ = [
    "flat_model_function",
    "hessian_matrix",
    "gauss_newton_matrix",
    "bregman_divergence",
    "softmax_kl",
]


def _select_params(model: nn.Module, params: Sequence[str] | None) -> dict[str, Tensor]:
    named = dict(model.named_parameters())
    if params is None:
        return {k: v.detach() for k, v in named.items()}
    unknown = [p for p in params if p not in named]
    if unknown:
        raise ValueError(
            f"unknown parameter name(s) {unknown}; the model has {sorted(named)}"
        )
    if len(params) == 0:
        raise ValueError("params is empty: name at least one parameter")
    return {k: named[k].detach() for k in params}


def flat_model_function(
    model: nn.Module, inputs: Tensor, params: Sequence[str] | None = None
) -> tuple[Callable[[Tensor], Tensor], Tensor]:
    r"""Return :math:`\theta \mapsto f_\theta(X)` on a flat vector of the chosen parameters.

    Args:
        model: any ``nn.Module``; parameters not in ``params`` stay fixed at their current values.
        inputs: the batch :math:`X` passed to ``model``.
        params: names from ``model.named_parameters()`` (default: all).

    Returns:
        ``(f, theta0)``: ``f(theta)`` evaluates the model with the selected parameters replaced by
        ``theta`` (row-major flattening, in the order of ``params``); ``theta0`` is their current value.

    Derived in notebook ``02_bregman_to_gauss_newton``.
    """
    chosen = _select_params(model, params)
    names = list(chosen)
    shapes = [chosen[n].shape for n in names]
    sizes = [chosen[n].numel() for n in names]
    theta0 = torch.cat([chosen[n].reshape(-1) for n in names])

    def f(theta: Tensor) -> Tensor:
        pieces = torch.split(theta, sizes)
        replaced = {n: p.reshape(s) for n, p, s in zip(names, pieces, shapes)}
        return functional_call(model, replaced, (inputs,))

    return f, theta0


def hessian_matrix(
    model: nn.Module,
    loss_func: LossFunc,
    inputs: Tensor,
    targets: Tensor,
    params: Sequence[str] | None = None,
) -> Tensor:
    r"""Exact loss Hessian :math:`\nabla^2_\theta\, \ell(f_\theta(X), Y)` as a dense ``(p, p)`` matrix.

    Derived in notebook ``02_bregman_to_gauss_newton``.
    """
    f, theta0 = flat_model_function(model, inputs, params)
    return hessian(lambda th: loss_func(f(th), targets))(theta0)


def gauss_newton_matrix(
    model: nn.Module,
    loss_func: LossFunc,
    inputs: Tensor,
    targets: Tensor,
    params: Sequence[str] | None = None,
) -> Tensor:
    r"""Exact Gauss-Newton matrix :math:`\mathbf J^\top \mathbf H_\ell \mathbf J`, dense ``(p, p)``.

    :math:`\mathbf J` is the Jacobian of the flattened network output w.r.t. the flat parameters and
    :math:`\mathbf H_\ell` the Hessian of ``loss_func`` w.r.t. the flattened output (so any reduction,
    mean or sum, is handled exactly). Derived in notebook ``02_bregman_to_gauss_newton``.
    """
    f, theta0 = flat_model_function(model, inputs, params)
    out0 = f(theta0).detach()
    jac = jacrev(f)(theta0).reshape(out0.numel(), theta0.numel())
    h_out = hessian(lambda o: loss_func(o.reshape(out0.shape), targets))(out0.reshape(-1))
    return jac.T @ h_out @ jac


def bregman_divergence(
    loss: LossFunc, out: Tensor, base_out: Tensor, target: Tensor
) -> Tensor:
    r"""Bregman divergence of ``loss`` in output space (CrispEdit, Def. 1).

    .. math::

        D(\mathrm{out}, \mathrm{base}) = \ell(\mathrm{out}, y) - \ell(\mathrm{base}, y)
        - \langle \nabla_{f}\ell(\mathrm{base}, y),\ \mathrm{out} - \mathrm{base}\rangle .

    ``base_out`` is treated as a constant. For a ``mean``-reduced loss this is the mean of the
    per-sample divergences. For softmax cross-entropy it equals
    :math:`\mathrm{KL}(\mathrm{softmax}(\mathrm{base})\,\|\,\mathrm{softmax}(\mathrm{out}))` for any
    label (see :func:`softmax_kl`). Derived in notebook ``02_bregman_to_gauss_newton``.
    """
    if out.shape != base_out.shape:
        raise ValueError(f"out has shape {tuple(out.shape)} but base_out has {tuple(base_out.shape)}")
    base = base_out.detach()
    grad_base = torch.func.grad(lambda o: loss(o, target))(base)
    return loss(out, target) - loss(base, target) - (grad_base * (out - base)).sum()


def softmax_kl(base_logits: Tensor, logits: Tensor) -> Tensor:
    r"""Mean over rows of :math:`\mathrm{KL}(\mathrm{softmax}(z_0)\,\|\,\mathrm{softmax}(z))`.

    The last dimension holds the classes.

    The label-free capability constraint of softmax-CE models. Derived in notebook
    ``02_bregman_to_gauss_newton``.

    Listed on the book page ``api``.
    """
    logp0 = torch.log_softmax(base_logits, dim=-1)
    logp = torch.log_softmax(logits, dim=-1)
    kl = (logp0.exp() * (logp0 - logp)).sum(-1)
    return kl.mean()
