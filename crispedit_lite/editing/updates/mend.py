r"""MEND's editor network (Mitchell et al., "Fast Model Editing at Scale", ICLR 2022): pure tensor math.

For a linear layer :math:`\mathbf s=W\mathbf u` the gradient of a loss over the tokens :math:`t` of a
batch is a sum of rank-one terms, :math:`\nabla_W\mathcal L=\sum_t\boldsymbol\delta_t\mathbf u_t^\top`,
with :math:`\mathbf u_t` the layer input and :math:`\boldsymbol\delta_t=\partial\mathcal L/\partial\mathbf
s_t`. MEND never forms the gradient: an editor network :math:`g` maps each token's pair to
:math:`(\tilde{\mathbf u}_t,\tilde{\boldsymbol\delta}_t)` and the edit is

.. math::

    \Delta W_\ell = \alpha_\ell\sum_t\tilde{\boldsymbol\delta}_t\tilde{\mathbf u}_t^\top,

a matrix of rank at most the number of tokens, with a learned step :math:`\alpha_\ell` per edited
matrix. The choices below follow the official code (``eric-mitchell/mend``, ``algs/mend.py``,
``nn.py``, ``config/alg/mend.yaml``; EasyEdit's ``trainer/algs/MEND.py`` is the same code):

* **normalisation** (``norm: true``): :math:`\mathbf u` and :math:`\boldsymbol\delta` are standardised
  with a running mean and standard deviation, :math:`(\mathbf x-\mu)/(\sigma+10^{-7})`, updated with
  Welford's rule on every non-zero token row seen in training mode and frozen at edit time
  (``GradientTransform.forward``; :class:`RunningNorm` merges a batch at once, which equals the
  official one-row-at-a-time update up to rounding). Rows whose input or output gradient is all zero
  (padding) are dropped first (``nz_mask``).
* **combine** (``combine: true``): one network on the concatenation :math:`[\hat{\mathbf u};
  \hat{\boldsymbol\delta}]`, its output split back. ``x_only``, ``delta_only`` and ``one_sided``
  (a network on one side, the identity on the other) are the official alternatives, off by default.
* **network** (``mlp_class: IDMLP``, ``n_hidden: 1``, ``rank: 1920``, ``init: id``, ``act: relu``):
  ``n_hidden + 1`` residual layers :math:`\mathbf h\mapsto\mathbf h+\mathrm{relu}(\mathbf
  a_\ell\odot(U V\mathbf h+\mathbf b)+\mathbf c_\ell)` with :math:`U\in\mathbb R^{d\times r}` zero and
  :math:`V\in\mathbb R^{r\times d}` standard normal at initialisation (``LRLinear``), so :math:`g` is
  the identity at initialisation. The official layer receives ``relu=idx < n_hidden`` but ignores it:
  every layer, the last included, applies the clamp; so does this one.
* **sharing** (``shared: true``): one network per weight shape ``(d_in, d_out)``; every edited matrix
  of that shape has its own scale :math:`\mathbf a_\ell` (ones) and shift :math:`\mathbf c_\ell`
  (zeros) in every layer of the network (``mode_scale`` / ``mode_shift``). The normalisation
  statistics belong to the shared network, so they are shared by the matrices of one shape.
* **sign and step** (``edit_lr: 1e-4``): the official edit *adds* :math:`\alpha_\ell\,\tilde{\mathbf
  g}` (``new_params.append(p + updates[n])``) with :math:`\alpha_\ell` initialised at ``+1e-4`` and
  learned; the sign of the step is therefore learned too. An untrained network with identity
  statistics thus takes a gradient *ascent* step of size ``edit_lr``
  (``tests/editing/updates/test_mend.py`` checks exactly this).

Deviations: the statistics are merged a batch at a time (equal up to rounding), and a network can
run in float64 (the official code casts the factors to float32); nothing else.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["GradientTransform", "IdentityMLP", "LowRankResidual", "MendNetwork", "RunningNorm",
           "pseudo_gradient", "shape_key"]

NETWORK_FIELDS = ("n_hidden", "rank", "init", "norm", "combine", "x_only", "delta_only", "one_sided")


def shape_key(d_in: int, d_out: int) -> str:
    """The key of the network shared by every ``d_out x d_in`` weight (``"576x1536"``: in x out).

    Listed on the book page ``api``.
    """
    return f"{d_in}x{d_out}"


def pseudo_gradient(u: Tensor, delta: Tensor) -> Tensor:
    r""":math:`\sum_t\boldsymbol\delta_t\mathbf u_t^\top` (``d_out x d_in``) from rows ``u`` and ``delta``.

    ``u`` has shape ``(T, d_in)``, ``delta`` ``(T, d_out)``.

    With the raw factors this is :math:`\nabla_W\mathcal L` of ``nn.Linear`` (the official
    ``einsum("bi,bj->ji", x, delta)``).

    Listed on the book page ``api``.
    """
    return delta.transpose(0, 1) @ u


class RunningNorm(nn.Module):
    r"""Running mean and standard deviation of rows (Welford), as the official ``update_counter``.

    ``count`` rows seen, ``mean`` and ``m2`` :math:`=\sum_i(\mathbf x_i-\bar{\mathbf x})^2`;
    :math:`\sigma=\sqrt{m_2/(k-1)}`. A batch is merged at once (Chan et al.'s pairwise rule), which
    equals the one-row-at-a-time update.

    Listed on the book page ``api``.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("m2", torch.zeros(dim))
        self.register_buffer("count", torch.zeros(()))

    @torch.no_grad()
    def update(self, x: Tensor) -> None:
        """Merge the rows of ``x`` ``(n, dim)`` into the statistics."""
        n = x.shape[0]
        if n == 0:
            return
        x = x.to(self.mean.dtype)
        k = float(self.count)
        mean_b = x.mean(0)
        m2_b = ((x - mean_b) ** 2).sum(0)
        d = mean_b - self.mean
        total = k + n
        self.mean += d * (n / total)
        self.m2 += m2_b + d * d * (k * n / total)
        self.count.fill_(total)

    def forward(self, x: Tensor) -> Tensor:
        r""":math:`(\mathbf x-\mu)/(\sigma+10^{-7})`; at least two rows must have been seen."""
        if float(self.count) < 2:
            raise ValueError(f"MEND normalisation has seen {int(self.count)} rows; it needs at least 2 "
                             "(train the editor network, or build it with norm=False)")
        std = (self.m2 / (self.count - 1)).sqrt()
        return (x - self.mean) / (std + 1e-7)


class LowRankResidual(nn.Module):
    r"""A residual layer :math:`\mathbf h+\mathrm{relu}(\mathbf a_m\odot(UV\mathbf h+\mathbf b)+\mathbf c_m)`.

    ``U`` ``(dim, r)``, ``V`` ``(r, dim)`` with :math:`r=\min(\text{rank},\text{dim})`; ``init="id"``:
    :math:`U=0`, :math:`V\sim\mathcal N(0,1)` (the identity map); ``"xavier"`` as the official
    alternative (then no residual). ``scale``/``shift`` ``(n_modes, dim)`` are the per-matrix
    :math:`\mathbf a_m,\mathbf c_m`.

    Listed on the book page ``api``.
    """

    def __init__(self, dim: int, rank: int, n_modes: int, init: str = "id") -> None:
        super().__init__()
        mid = min(rank, dim)
        if init == "id":
            self.u = nn.Parameter(torch.zeros(dim, mid))
            self.v = nn.Parameter(torch.randn(mid, dim))
        elif init == "xavier":
            self.u = nn.Parameter(nn.init.xavier_uniform_(torch.empty(dim, mid), gain=2 ** 0.5))
            self.v = nn.Parameter(nn.init.xavier_uniform_(torch.empty(mid, dim)))
        else:
            raise ValueError(f"init must be 'id' or 'xavier', got {init!r}")
        self.init = init
        self.bias = nn.Parameter(torch.zeros(dim))
        self.scale = nn.Parameter(torch.ones(n_modes, dim))
        self.shift = nn.Parameter(torch.zeros(n_modes, dim))

    def forward(self, h: Tensor, mode: int) -> Tensor:
        """Apply the layer to rows ``h`` ``(T, dim)`` for edited matrix number ``mode``."""
        pre = (h @ self.v.T) @ self.u.T + self.bias
        act = (pre * self.scale[mode] + self.shift[mode]).clamp(min=0)
        return h + act if self.init == "id" else act


class IdentityMLP(nn.Module):
    """``n_hidden + 1`` :class:`LowRankResidual` layers (the official ``IDMLP``).

    Listed on the book page ``api``.
    """

    def __init__(self, dim: int, n_hidden: int, rank: int, n_modes: int, init: str = "id") -> None:
        super().__init__()
        self.layers = nn.ModuleList(LowRankResidual(dim, rank, n_modes, init) for _ in range(n_hidden + 1))

    def forward(self, h: Tensor, mode: int) -> Tensor:
        """The network on rows ``h`` for matrix ``mode``."""
        for layer in self.layers:
            h = layer(h, mode)
        return h


class GradientTransform(nn.Module):
    r"""The editor network :math:`g` of one weight shape: ``(u, delta) -> (u~, delta~)``.

    ``forward(u, delta, mode)`` takes the factors of any leading shape, keeps the token rows where
    both are non-zero, updates the normalisation in training mode, and returns the transformed rows
    ``(T', d_in)``, ``(T', d_out)``.

    Listed on the book page ``api``.
    """

    def __init__(self, d_in: int, d_out: int, n_modes: int, *, n_hidden: int = 1, rank: int = 1920,
                 init: str = "id", norm: bool = True, combine: bool = True, x_only: bool = False,
                 delta_only: bool = False, one_sided: bool = False) -> None:
        super().__init__()
        if combine and (one_sided or x_only or delta_only):
            raise ValueError("MEND: combine cannot be used with one_sided, x_only or delta_only")
        self.d_in, self.d_out, self.norm, self.combine = d_in, d_out, norm, combine
        self.u_norm, self.delta_norm = RunningNorm(d_in), RunningNorm(d_out)

        def net(dim: int) -> IdentityMLP:
            return IdentityMLP(dim, n_hidden, rank, n_modes, init)

        self.nets = nn.ModuleDict()
        if combine:
            self.nets["both"] = net(d_in + d_out)
        else:
            u_side = x_only or (one_sided and d_in <= d_out) or not (delta_only or one_sided)
            delta_side = delta_only or (one_sided and d_in > d_out) or not (x_only or one_sided)
            if u_side:
                self.nets["u"] = net(d_in)
            if delta_side:
                self.nets["delta"] = net(d_out)

    def forward(self, u: Tensor, delta: Tensor, mode: int) -> tuple[Tensor, Tensor]:
        """Transformed factor rows of one edited matrix (see the class docstring)."""
        dtype = self.u_norm.mean.dtype
        u, delta = u.reshape(-1, self.d_in).to(dtype), delta.reshape(-1, self.d_out).to(dtype)
        keep = (u != 0).any(-1) & (delta != 0).any(-1)
        u, delta = u[keep], delta[keep]
        if self.training:
            self.u_norm.update(u)
            self.delta_norm.update(delta)
        if self.norm:
            u, delta = self.u_norm(u), self.delta_norm(delta)
        if self.combine:
            out = self.nets["both"](torch.cat([u, delta], -1), mode)
            return out[:, :self.d_in], out[:, self.d_in:]
        u = self.nets["u"](u, mode) if "u" in self.nets else u
        delta = self.nets["delta"](delta, mode) if "delta" in self.nets else delta
        return u, delta


class MendNetwork(nn.Module):
    r"""MEND for a list of edited ``nn.Linear`` matrices: shared transforms and per-matrix step sizes.

    Args:
        shapes: ``{module name: (d_out, d_in)}`` in edit order (the weight shapes).
        edit_lr: the initial :math:`\alpha_\ell` of every matrix (official ``edit_lr``: 1e-4).
        network: the :data:`NETWORK_FIELDS` of :class:`GradientTransform`.

    :meth:`deltas` maps the factors of every matrix to its :math:`\Delta W`.

    Listed on the book page ``api``.
    """

    def __init__(self, shapes: Mapping[str, Sequence[int]], edit_lr: float = 1e-4, **network: Any) -> None:
        super().__init__()
        unknown = sorted(set(network) - set(NETWORK_FIELDS))
        if unknown:
            raise ValueError(f"MendNetwork: unknown network settings {unknown}; known: {NETWORK_FIELDS}")
        self.shapes = {name: (int(s[0]), int(s[1])) for name, s in shapes.items()}
        self.network = dict(network)
        groups: dict[str, list[str]] = {}
        for name, (d_out, d_in) in self.shapes.items():
            groups.setdefault(shape_key(d_in, d_out), []).append(name)
        self.mode = {name: names.index(name) for names in groups.values() for name in names}
        self.key = {name: shape_key(d_in, d_out) for name, (d_out, d_in) in self.shapes.items()}
        self.transforms = nn.ModuleDict({
            key: GradientTransform(int(key.split("x")[0]), int(key.split("x")[1]), len(names), **network)
            for key, names in groups.items()})
        self.edit_lrs = nn.Parameter(torch.full((len(self.shapes),), float(edit_lr)))

    def factors(self, name: str, u: Tensor, delta: Tensor) -> tuple[Tensor, Tensor]:
        r""":math:`(\tilde{\mathbf u},\tilde{\boldsymbol\delta})` rows of matrix ``name``."""
        return self.transforms[self.key[name]](u, delta, self.mode[name])

    def deltas(self, factors: Mapping[str, tuple[Tensor, Tensor]]) -> dict[str, Tensor]:
        r"""The weight change of every matrix (see the module docstring).

        :math:`\Delta W_\ell=\alpha_\ell\sum_t\tilde{\boldsymbol\delta}_t\tilde{\mathbf u}_t^\top`.

        ``factors``: ``{name: (u, delta)}`` of the raw layer inputs and output gradients.
        """
        names = list(self.shapes)
        out = {}
        for name, (u, delta) in factors.items():
            ut, dt = self.factors(name, u, delta)
            out[name] = self.edit_lrs[names.index(name)] * pseudo_gradient(ut, dt)
        return out

    def describe(self) -> dict[str, Any]:
        """JSON-ready architecture: matrices and their shapes, network settings, parameter count."""
        return {"shapes": {k: list(v) for k, v in self.shapes.items()}, "network": self.network,
                "n_parameters": sum(p.numel() for p in self.parameters())}

    def metadata(self) -> dict[str, str]:
        """The safetensors header metadata that rebuilds this network (:meth:`from_metadata`)."""
        return {"mend": json.dumps({"shapes": self.describe()["shapes"], "network": self.network})}

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, str]) -> MendNetwork:
        """An untrained network of the architecture in ``metadata`` (load the weights after)."""
        if "mend" not in metadata:
            raise ValueError("not a MEND editor file: its safetensors metadata has no 'mend' entry")
        spec = json.loads(metadata["mend"])
        return cls(spec["shapes"], **spec["network"])
