r"""FastProjector: the CrispEdit projection with sorted eigenbases, a block plan and a FLOP chooser.

:class:`FastProjector` equals :meth:`crispedit_lite.projector.KroneckerProjector.project` up to rounding
and stands in for it in :class:`crispedit_lite.optim.ProjectedAdam`. Per call it applies the cheapest
(by :func:`~crispedit_lite.fastproject.flops.projection_flops`) of the four dense products of the
reference, the low-rank gradient form (:mod:`~crispedit_lite.fastproject.lowrank`) and the staircase
blocks (:mod:`~crispedit_lite.fastproject.blocks`), the latter with their core taken from token factors
when that is cheaper. :func:`corner_project` is the one-off corner form. The reference projection is
derived in notebook ``05_matrix_free_projector``; measured times are in ``book/performance.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from crispedit_lite.fastproject.blocks import _descending, plan_blocks, staircase
from crispedit_lite.fastproject.flops import Block, projection_flops
from crispedit_lite.fastproject.lowrank import TokenFactorCapture, _as_rows, lowrank_core
from crispedit_lite.projector import KroneckerProjector

__all__ = ["FastProjector", "corner_project"]


@dataclass
class FastProjector:
    """The reference projection, with sorted eigenbases, a staircase block plan and a FLOP-based chooser.

    Build with :meth:`from_projector`; ``project(G)`` equals ``KroneckerProjector.project(G)`` up to
    rounding and can stand in for it in :class:`crispedit_lite.optim.ProjectedAdam`. With a
    :class:`TokenFactorCapture` and ``name``, each ``project`` call consumes that layer's token factors
    and may use the low-rank forms.

    Attributes:
        U_out, U_in: eigenbases with columns sorted by decreasing eigenvalue (compute dtype).
        mask: editable mask in the sorted order (bool); ``widths``: protected prefix length per row.
        r_out, r_in: the protected corner; ``blocks``: the rectangles covering the staircase.
        method: ``"auto"`` (cheapest by FLOPs) or one of ``reference, lowrank, corner, blocks``
            (``corner``/``blocks`` take the core from token factors when given them and cheaper).

    Described on the book page ``performance``.
    """

    U_out: Tensor
    U_in: Tensor
    mask: Tensor
    widths: Tensor
    r_out: int
    r_in: int
    blocks: list[Block]
    transposed: bool = False
    method: str = "auto"
    capture: TokenFactorCapture | None = None
    name: str | None = None
    block_masks: list[Tensor] = field(default_factory=list)
    last_method: str | None = None

    @classmethod
    def from_projector(
        cls,
        proj: KroneckerProjector,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        method: str = "auto",
        plan: str = "blocks",
        capture: TokenFactorCapture | None = None,
        name: str | None = None,
    ) -> FastProjector:
        """Sort ``proj``'s eigenbases by decreasing eigenvalue, check the staircase and plan the blocks.

        Args:
            proj: the reference projector. dtype/device: of the stored bases (default: ``proj``'s).
            method: ``"auto"``, ``"reference"``, ``"lowrank"``, ``"corner"`` or ``"blocks"``.
            plan: ``"blocks"`` (:func:`plan_blocks`) or ``"corner"`` (one ``r_out x r_in`` block).
            capture, name: token-factor source for the low-rank forms.
        """
        if method not in ("auto", "reference", "lowrank", "corner", "blocks"):
            raise ValueError(f"unknown method {method!r}")
        if plan not in ("blocks", "corner"):
            raise ValueError(f"plan must be 'blocks' or 'corner', got {plan!r}")
        dtype = dtype or proj.U_in.dtype
        device = device if device is not None else proj.U_in.device
        po, pi = _descending(proj.eig_out), _descending(proj.eig_in)
        mdev = proj.mask.device
        mask = proj.mask.detach()[po.to(mdev)][:, pi.to(mdev)]
        widths, r_out, r_in = staircase(~mask)
        d_out, d_in = mask.shape
        if plan == "corner" or method == "corner":
            blocks = [Block(0, r_out, 0, r_in)] if r_out and r_in else []
        else:
            blocks = plan_blocks(widths, d_out, d_in)
        po_d, pi_d = po.to(proj.U_out.device), pi.to(proj.U_in.device)
        U_out = proj.U_out[:, po_d].to(device=device, dtype=dtype)
        U_in = proj.U_in[:, pi_d].to(device=device, dtype=dtype)
        prot = ~mask
        bmasks = [prot[b.r0 : b.r1, b.c0 : b.c1].to(device=device, dtype=dtype) for b in blocks]
        return cls(
            U_out=U_out,
            U_in=U_in,
            mask=mask.to(device),
            widths=widths,
            r_out=r_out,
            r_in=r_in,
            blocks=blocks,
            transposed=proj.transposed,
            method=method,
            capture=capture,
            name=name,
            block_masks=bmasks,
        )

    @property
    def shape(self) -> tuple[int, int]:
        """``(d_out, d_in)``."""
        return (self.U_out.shape[0], self.U_in.shape[0])

    def flops(self, T: int | None = None) -> dict[str, float]:
        """:func:`projection_flops` for this layer's corner and block plan."""
        return projection_flops(*self.shape, T, self.r_out, self.r_in, blocks=self.blocks)

    def choose(self, T: int | None = None) -> str:
        """The method ``project`` will use given ``T`` token rows (or none)."""
        if self.method == "reference":
            return "reference"
        flops = self.flops(T)
        if self.method == "lowrank":
            return "lowrank" if T is not None else "reference"
        if self.method == "corner":
            return (
                "lowrank_corner"
                if T is not None and flops["lowrank_corner"] < flops["corner"]
                else "corner"
            )
        if self.method == "blocks":
            if T is not None and flops["lowrank_blocks"] < flops["blocks"]:
                return "lowrank_blocks"
            return "blocks"
        flops.pop("corner", None)
        flops.pop("lowrank_corner", None)  # the block plan is never worse than the corner
        return min(flops, key=lambda k: flops[k])

    def project(self, G: Tensor, factors: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """Return the projected gradient in ``G``'s dtype and layout.

        ``factors``: ``(Gout, Ain)`` token rows with ``Gout.T @ Ain == G`` (for a non-transposed
        layer); if omitted and a capture was given, they are popped from it.
        """
        expected = self.shape[::-1] if self.transposed else self.shape
        if tuple(G.shape) != expected:
            raise ValueError(
                f"gradient of shape {tuple(G.shape)} given to a projector for {expected}"
            )
        if factors is None and self.capture is not None and self.name is not None:
            factors = self.capture.pop(self.name)
        T = None
        if factors is not None:
            gout = _as_rows(factors[0], self.shape[0], "Gout")
            ain = _as_rows(factors[1], self.shape[1], "Ain")
            factors, T = (gout, ain), gout.shape[0]
        how = self.choose(T)
        self.last_method = how
        dt = self.U_in.dtype
        g = G.to(dt)
        if self.transposed:
            g = g.T
        if how == "reference":
            out = self.U_out @ ((self.U_out.T @ g @ self.U_in) * self.mask) @ self.U_in.T
        elif how == "lowrank":
            core = lowrank_core(factors[0], factors[1], self.U_out, self.U_in) * self.mask
            out = (self.U_out @ core) @ self.U_in.T
        else:
            out = self._subtract_blocks(g, factors if how.startswith("lowrank") else None)
        out = out.T if self.transposed else out
        return out.to(G.dtype)

    def _subtract_blocks(self, g: Tensor, factors: tuple[Tensor, Tensor] | None) -> Tensor:
        out = g.clone()
        if factors is not None:
            gout, ain = (f.to(g.dtype) for f in factors)
        for b, m in zip(self.blocks, self.block_masks):
            uo, ui = self.U_out[:, b.r0 : b.r1], self.U_in[:, b.c0 : b.c1]
            d_out, d_in = self.shape
            if factors is not None:
                core = (gout @ uo).T @ (ain @ ui)
            elif 2 * b.h * d_in * (d_out + b.w) <= 2 * b.w * d_out * (d_in + b.h):
                core = (uo.T @ g) @ ui
            else:
                core = uo.T @ (g @ ui)
            core = core * m
            if b.h <= b.w:
                out.addmm_(uo, core @ ui.T, alpha=-1.0)
            else:
                out.addmm_(uo @ core, ui.T, alpha=-1.0)
        return out


def corner_project(proj: KroneckerProjector, G: Tensor) -> Tensor:
    r"""Project ``G`` by subtracting its protected part in the leading sorted corner (form (b)).

    :math:`\mathbf G-\mathbf U_{\rm out}^{(r)}((\mathbf U_{\rm out}^{(r)\top}\mathbf G
    \mathbf U_{\rm in}^{(r)})\odot(1-\mathbf M)_{:r_{\rm out},:r_{\rm in}})\mathbf U_{\rm in}^{(r)\top}`
    with eigenbases sorted by decreasing eigenvalue; equals ``proj.project(G)``. A one-off
    convenience: for repeated use build a
    :class:`FastProjector` once (it sorts, checks the staircase and plans the blocks up front).

    Listed on the book page ``api``.
    """
    return FastProjector.from_projector(proj, method="corner", plan="corner").project(G)
