r"""The eigenbasis variant (not the paper's method): Adam in rotated, masked coordinates.

Adam runs on :math:`\mathbf C=(\mathbf U_{\rm out}^\top\mathbf G\mathbf U_{\rm in})\odot\mathbf M`, so
the update :math:`\mathbf U_{\rm out}(\hat{\mathbf m}/(\sqrt{\hat{\mathbf v}}+\epsilon)\odot\mathbf M)
\mathbf U_{\rm in}^\top` lies *exactly* in the editable subspace (the paper's Adam-after-projection,
:class:`crispedit_lite.optim.ProjectedAdam`, leaks out of it). :class:`EigenbasisLinear` reparameterises
a layer as :math:`\mathbf W_0+\mathbf U_{\rm out}(\mathbf X\odot\mathbf M)\mathbf U_{\rm in}^\top` and
trains :math:`\mathbf X` with a stock optimiser: the rotations then act on the :math:`T` activations
(:math:`O(T(d_{\rm in}^2+d_{\rm out}^2))`) and no per-step projection is left. With SGD this is exactly
projected gradient descent; with Adam it equals :class:`EigenbasisProjectedAdam`. The projection is
derived in notebook ``05_matrix_free_projector``; the step times on an H200 are in
``book/performance.md``, and ``tests/fastproject/test_edits.py`` shows it edits a toy LM about as well
as the paper's optimiser.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from crispedit_lite.fastproject.lowrank import TokenFactorCapture, lowrank_core
from crispedit_lite.optim import _check_projectors

__all__ = ["EigenbasisProjectedAdam", "EigenbasisLinear", "attach_eigenbasis", "merge_eigenbasis"]


class EigenbasisProjectedAdam(torch.optim.Optimizer):
    r"""Adam in each layer's Kronecker eigenbasis with masked coordinates (a variant, not the paper's).

    For a parameter with a :class:`~crispedit_lite.projector.KroneckerProjector` (or
    :class:`FastProjector`), each step rotates the gradient,
    :math:`\mathbf C=(\mathbf U_{\rm out}^\top(\mathbf G+\lambda\mathbf W)\mathbf U_{\rm in})\odot\mathbf M`,
    keeps Adam's moments of :math:`\mathbf C` (at least fp32, rotated coordinates), and applies
    :math:`\mathbf W\leftarrow\mathbf W-\eta\,\mathbf U_{\rm out}\big(\frac{\hat{\mathbf m}}
    {\sqrt{\hat{\mathbf v}}+\epsilon}\odot\mathbf M\big)\mathbf U_{\rm in}^\top`, so every update lies
    exactly in the editable subspace, whereas :class:`~crispedit_lite.optim.ProjectedAdam` (the paper's
    optimiser) rescales the projected gradient element-wise in the original coordinates and leaves it.
    The two agree for SGD-like settings (``betas=(0, 0)`` and large ``eps`` give projected SGD, up to
    scale) but not in general: Adam's per-coordinate scaling is basis dependent. Parameters without a
    projector get plain Adam. Token factors from a ``capture`` (name -> parameter via ``names``) make the
    rotation :math:`O(T(d_{\rm out}^2+d_{\rm in}^2))`; :class:`EigenbasisLinear` with stock Adam computes the
    same iterates with no per-step projection at all.

    Described on the book page ``performance``.
    """

    def __init__(
        self,
        params: Iterable[nn.Parameter],
        projectors: Mapping[Tensor, Any],
        lr: float = 5e-4,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        capture: TokenFactorCapture | None = None,
        names: Mapping[Tensor, str] | None = None,
    ) -> None:
        params = list(params)
        _check_projectors(params, projectors)
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))
        self.projectors = dict(projectors)
        self.capture = capture
        self.names = dict(names or {})

    @staticmethod
    def _bases(proj: Any) -> tuple[Tensor, Tensor, Tensor, bool]:
        return proj.U_out, proj.U_in, proj.mask, bool(getattr(proj, "transposed", False))

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D102
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                st["step"] = st.get("step", 0) + 1
                t = st["step"]
                proj = self.projectors.get(p)
                factors = None
                if proj is not None and self.capture is not None and p in self.names:
                    factors = self.capture.pop(self.names[p])
                if proj is None:
                    sd = torch.promote_types(p.dtype, torch.float32)
                    g = p.grad.to(sd) + (wd * p.to(sd) if wd else 0.0)
                else:
                    U_out, U_in, mask, tr = self._bases(proj)
                    dt = U_in.dtype
                    if factors is not None and not wd:
                        c = lowrank_core(factors[0], factors[1], U_out, U_in)
                    else:
                        gg = p.grad.to(dt) + (wd * p.to(dt) if wd else 0.0)
                        gg = gg.T if tr else gg
                        c = U_out.T @ gg @ U_in
                    g = (c * mask).to(torch.promote_types(c.dtype, torch.float32))
                if "exp_avg" not in st:
                    st["exp_avg"] = torch.zeros_like(g)
                    st["exp_avg_sq"] = torch.zeros_like(g)
                m, v = st["exp_avg"], st["exp_avg_sq"]
                m.mul_(b1).add_(g, alpha=1 - b1)
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
                u = (m / (1 - b1**t)) / ((v / (1 - b2**t)).sqrt() + eps)
                if proj is not None:
                    u = (u * mask).to(dt)
                    u = U_out @ u @ U_in.T
                    u = u.T if tr else u
                p.add_(u.to(p.dtype), alpha=-lr)
        return loss


class EigenbasisLinear(nn.Module):
    r"""A frozen linear layer plus a trainable update kept in its Kronecker eigenbasis.

    :math:`\mathbf y=\mathbf W_0\mathbf x+\mathbf b+\mathbf U_{\rm out}\big((\mathbf X\odot\mathbf M)
    (\mathbf U_{\rm in}^\top\mathbf x)\big)`, i.e. the weight is
    :math:`\mathbf W_0+\mathbf U_{\rm out}(\mathbf X\odot\mathbf M)\mathbf U_{\rm in}^\top`. The gradient of
    :math:`\mathbf X` is the masked rotated gradient, so stock Adam on :math:`\mathbf X` reproduces
    :class:`EigenbasisProjectedAdam` and stock SGD reproduces projected gradient descent, with every
    update exactly inside the editable subspace. Per step the rotations cost
    :math:`O(T(d_{\rm in}^2+d_{\rm out}^2+d_{\rm in}d_{\rm out}))` on the :math:`T` token activations
    instead of a dense projection of the gradient. :meth:`merged_weight` folds the update back in.

    Listed on the book page ``api``.
    """

    def __init__(self, base: nn.Linear, proj: Any, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise ValueError(f"EigenbasisLinear wraps nn.Linear, got {type(base).__name__}")
        if bool(getattr(proj, "transposed", False)):
            raise ValueError("EigenbasisLinear needs a non-transposed projector")
        d_out, d_in = base.weight.shape
        if tuple(proj.U_out.shape) != (d_out, d_out) or tuple(proj.U_in.shape) != (d_in, d_in):
            raise ValueError(
                f"projector of shape {(proj.U_out.shape[0], proj.U_in.shape[0])} for a "
                f"layer of shape {(d_out, d_in)}"
            )
        dtype = dtype or base.weight.dtype
        dev = base.weight.device
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        self.register_buffer("U_in", proj.U_in.to(device=dev, dtype=dtype))
        self.register_buffer("U_out", proj.U_out.to(device=dev, dtype=dtype))
        self.register_buffer("mask", proj.mask.to(device=dev, dtype=dtype))
        self.delta = nn.Parameter(torch.zeros(d_out, d_in, device=dev, dtype=dtype))

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        y = self.base(x)
        z = x.to(self.U_in.dtype) @ self.U_in
        z = z @ (self.delta * self.mask).T
        return y + (z @ self.U_out.T).to(y.dtype)

    @torch.no_grad()
    def weight_update(self) -> Tensor:
        r""":math:`\mathbf U_{\rm out}(\mathbf X\odot\mathbf M)\mathbf U_{\rm in}^\top` in (at least) fp32."""
        dt = torch.promote_types(self.delta.dtype, torch.float32)
        return self.U_out.to(dt) @ (self.delta.to(dt) * self.mask.to(dt)) @ self.U_in.to(dt).T

    @torch.no_grad()
    def merged_weight(self) -> Tensor:
        """The edited weight, in the base weight's dtype."""
        upd = self.weight_update()
        return (self.base.weight.to(upd.dtype) + upd).to(self.base.weight.dtype)


def _parent(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    parts = name.split(".")
    mod = model
    for p in parts[:-1]:
        mod = getattr(mod, p)
    return mod, parts[-1]


def attach_eigenbasis(
    model: nn.Module, projectors: Mapping[str, Any], dtype: torch.dtype | None = None
) -> dict[str, EigenbasisLinear]:
    """Replace each named ``nn.Linear`` by an :class:`EigenbasisLinear`; return the new modules.

    Train their ``delta`` parameters with any optimiser, then call :func:`merge_eigenbasis`.

    Described on the book page ``performance``.
    """
    named = dict(model.named_modules())
    out = {}
    for name, proj in projectors.items():
        if name not in named:
            raise ValueError(f"unknown module {name!r}")
        parent, attr = _parent(model, name)
        new = EigenbasisLinear(named[name], proj, dtype=dtype)
        setattr(parent, attr, new)
        out[name] = new
    return out


@torch.no_grad()
def merge_eigenbasis(model: nn.Module) -> list[str]:
    """Fold every :class:`EigenbasisLinear` back into a plain ``nn.Linear`` with the edited weight.

    Listed on the book page ``api``.
    """
    names = [n for n, m in model.named_modules() if isinstance(m, EigenbasisLinear)]
    for name in names:
        parent, attr = _parent(model, name)
        mod = getattr(parent, attr)
        base = mod.base
        base.weight.copy_(mod.merged_weight())
        setattr(parent, attr, base)
    return names
