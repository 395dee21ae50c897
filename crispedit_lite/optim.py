r"""Optimisers that keep edits in the low-curvature subspace.

* :class:`ProjectedAdam`: what the paper runs (Table 2, official code): project the raw gradient,
  :math:`\mathbf g\leftarrow\mathbf P_\gamma(\mathbf g)`, then take a stock Adam step. Adam's
  element-wise scaling means the *update* is not exactly inside the subspace. ``project_update=True``
  additionally projects Adam's update direction (so the step lies exactly in the subspace).
* :class:`ProjectedSGD`: true projected gradient descent (the paper's eq. 3),
  :math:`\theta\leftarrow\theta-\eta\,\mathbf P_\gamma(\mathbf g+\lambda\theta)`, optionally with
  heavy-ball momentum of projected gradients (which stays in the subspace).

Both take a mapping ``{parameter: projector}``; parameters without a projector are updated
unprojected. Projections run in the projector's dtype (fp32 by default) whatever the parameter's
dtype. Derived in notebook ``03_low_curvature_subspace``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

import torch
from torch import Tensor, nn

__all__ = ["Projector", "ProjectedAdam", "ProjectedSGD"]


class Projector(Protocol):
    """Anything with ``project(G) -> G'`` of the same shape (e.g. :class:`KroneckerProjector`).

    Listed on the book page ``api``.
    """

    def project(self, G: Tensor) -> Tensor:  # noqa: D102
        ...


def _check_projectors(params: list[Tensor], projectors: Mapping[Tensor, Projector]) -> None:
    ids = {id(p) for p in params}
    for p, proj in projectors.items():
        if id(p) not in ids:
            raise ValueError(f"a projector was given for a parameter of shape {tuple(p.shape)} "
                             "that is not among the optimised parameters")
        if not hasattr(proj, "project"):
            raise ValueError(f"projector for parameter {tuple(p.shape)} has no project() method")


def _project(proj: Projector, g: Tensor) -> Tensor:
    return proj.project(g).to(g.dtype)


class ProjectedAdam(torch.optim.Adam):
    """Adam on projected gradients (CrispEdit's optimiser). Derived in notebook ``03_low_curvature_subspace``.

    Args:
        params: parameters to optimise (an iterable of tensors; one group).
        projectors: ``{parameter: projector}``.
        lr, betas, eps, weight_decay: as ``torch.optim.Adam`` (paper: lr 5e-4, no weight decay).
        project_update: also project Adam's update so that the step stays in the subspace.
    """

    def __init__(
        self,
        params: Iterable[nn.Parameter],
        projectors: Mapping[Tensor, Projector],
        lr: float = 5e-4,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        project_update: bool = False,
    ) -> None:
        params = list(params)
        _check_projectors(params, projectors)
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
        self.projectors = dict(projectors)
        self.project_update = project_update
        self._before: dict[Tensor, Tensor] = {}
        # the projection runs in step hooks around the stock Adam step (not in an overridden
        # step() calling super().step(), which would make torch fire user step hooks twice)
        self.register_step_pre_hook(ProjectedAdam._project_gradients)
        self.register_step_post_hook(ProjectedAdam._project_updates)

    @staticmethod
    @torch.no_grad()
    def _project_gradients(opt: ProjectedAdam, args, kwargs) -> None:
        opt._before = {}
        for p, proj in opt.projectors.items():
            if p.grad is not None:
                p.grad.copy_(_project(proj, p.grad))
                if opt.project_update:
                    opt._before[p] = p.detach().clone()

    @staticmethod
    @torch.no_grad()
    def _project_updates(opt: ProjectedAdam, args, kwargs) -> None:
        for p, old in opt._before.items():
            p.copy_(old + _project(opt.projectors[p], p - old))
        opt._before = {}


class ProjectedSGD(torch.optim.Optimizer):
    r"""Projected gradient descent :math:`\theta\leftarrow\theta-\eta\,\mathbf P(\mathbf m)`.

    With ``momentum`` :math:`\mu`, :math:`\mathbf m\leftarrow\mu\mathbf m+\mathbf P(\mathbf g+\lambda\theta)`;
    every step is a combination of projected vectors and stays in the subspace. Derived in notebook
    ``03_low_curvature_subspace``.

    Listed on the book page ``api``.
    """

    def __init__(
        self,
        params: Iterable[nn.Parameter],
        projectors: Mapping[Tensor, Projector],
        lr: float = 1e-2,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
    ) -> None:
        params = list(params)
        if lr <= 0:
            raise ValueError(f"lr must be positive, got {lr}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must lie in [0, 1), got {momentum}")
        _check_projectors(params, projectors)
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))
        self.projectors = dict(projectors)

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D102
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                d = p.grad
                if group["weight_decay"]:
                    d = d + group["weight_decay"] * p
                if p in self.projectors:
                    d = _project(self.projectors[p], d)
                if group["momentum"]:
                    buf = self.state[p].get("momentum_buffer")
                    if buf is None:
                        buf = self.state[p]["momentum_buffer"] = d.clone()
                    else:
                        buf.mul_(group["momentum"]).add_(d)
                    d = buf
                p.add_(d, alpha=-group["lr"])
        return loss
