r"""The FLOP model of the projection: its forms, the blocks they correct, and the chooser of the cheapest.

The reference projection (:meth:`crispedit_lite.projector.KroneckerProjector.project`, four dense
products) costs :math:`4d_{\rm out}d_{\rm in}(d_{\rm out}+d_{\rm in})` FLOPs; the low-rank gradient
form (:mod:`~crispedit_lite.fastproject.lowrank`) and the staircase blocks
(:mod:`~crispedit_lite.fastproject.blocks`) trade that for costs in the number of tokens :math:`T` and
the protected corner :math:`r_{\rm out}\times r_{\rm in}`. Only matrix products are counted; the
measured times on an H200 are in ``book/performance.md``. The reference projection is derived in
notebook ``05_matrix_free_projector``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["BLOCK_OVERHEAD_FLOPS", "Block", "block_flops", "reference_flops", "projection_flops",
           "choose_projection"]

@dataclass(frozen=True)
class Block:
    """Rectangle ``rows [r0, r1) x cols [c0, c1)`` of the sorted rotated gradient.

    Listed on the book page ``api``.
    """

    r0: int
    r1: int
    c0: int
    c1: int

    @property
    def h(self) -> int:
        """Height (output eigen-directions)."""
        return self.r1 - self.r0

    @property
    def w(self) -> int:
        """Width (input eigen-directions)."""
        return self.c1 - self.c0


def reference_flops(d_out: int, d_in: int) -> int:
    r"""FLOPs of the reference projection's four dense products.

    In all :math:`4d_{\rm out}d_{\rm in}(d_{\rm out}+d_{\rm in})`:
    :math:`\mathbf U_{\rm out}^\top\mathbf G` and :math:`\mathbf U_{\rm out}\,\cdot` cost
    :math:`2d_{\rm out}^2d_{\rm in}` each, :math:`\cdot\,\mathbf U_{\rm in}` and
    :math:`\cdot\,\mathbf U_{\rm in}^\top` :math:`2d_{\rm out}d_{\rm in}^2` each; the mask product is not
    counted.

    Listed on the book page ``api``.
    """
    d_out, d_in = int(d_out), int(d_in)
    return 4 * d_out * d_in * (d_out + d_in)


#: FLOP-equivalent charged per extra block (kernel launches, small-GEMM inefficiency) by the planner.
BLOCK_OVERHEAD_FLOPS = 2e9


def _vec_block_flops(h: np.ndarray, w: np.ndarray, d_out: int, d_in: int, T: int | None) -> np.ndarray:
    """:func:`block_flops` element-wise over arrays of heights ``h`` and widths ``w``."""
    h, w = np.asarray(h, dtype=np.float64), np.asarray(w, dtype=np.float64)
    if T is None:
        fwd = np.minimum(
            2.0 * h * d_out * d_in + 2.0 * h * d_in * w,
            2.0 * w * d_out * d_in + 2.0 * h * d_out * w,
        )
    else:
        fwd = 2.0 * T * (d_out * h + d_in * w + h * w)
    back = np.minimum(
        2.0 * h * w * d_in + 2.0 * d_out * h * d_in, 2.0 * d_out * h * w + 2.0 * d_out * w * d_in
    )
    return np.where((h > 0) & (w > 0), fwd + back, 0.0)


def block_flops(h: int, w: int, d_out: int, d_in: int, T: int | None = None) -> float:
    r"""Matrix-product FLOPs of correcting one ``h x w`` block of the rotated gradient.

    Forward (the core :math:`\mathbf U_{{\rm out},R}^\top\mathbf G\mathbf U_{{\rm in},C}`, best
    association): :math:`\min(2hd_{\rm out}d_{\rm in}+2hd_{\rm in}w,\ 2wd_{\rm out}d_{\rm in}+2hd_{\rm out}w)`
    from ``G``, or :math:`2T(d_{\rm out}h+d_{\rm in}w+hw)` from ``T`` token factors. Back-rotation and
    subtraction: :math:`\min(2hwd_{\rm in}+2d_{\rm out}hd_{\rm in},\ 2d_{\rm out}hw+2d_{\rm out}wd_{\rm in})`.
    An empty block costs 0.

    Listed on the book page ``api``.
    """
    return float(_vec_block_flops(int(h), int(w), d_out, d_in, T))


def projection_flops(
    d_out: int,
    d_in: int,
    T: int | None = None,
    r_out: int | None = None,
    r_in: int | None = None,
    *,
    have_grad: bool = True,
    blocks: Iterable[Block] | None = None,
) -> dict[str, float]:
    r"""Matrix-product FLOPs of each projection form for one ``(d_out, d_in)`` gradient.

    * ``reference``: :math:`4d_{\rm out}d_{\rm in}(d_{\rm out}+d_{\rm in})` (paper, eq. 6).
    * ``lowrank`` (needs ``T``): core from token factors plus the full back-rotation,
      :math:`2T(d_{\rm out}^2+d_{\rm in}^2+d_{\rm out}d_{\rm in})
      +2d_{\rm out}d_{\rm in}(d_{\rm out}+d_{\rm in})`.
    * ``corner`` (needs ``r_out``, ``r_in``): :func:`block_flops` of the ``r_out x r_in`` corner from ``G``.
    * ``lowrank_corner`` (needs all): the corner's core from the token factors.
    * ``blocks`` / ``lowrank_blocks`` (given a block plan): the sum over the blocks.

    With ``have_grad=False`` (``G`` not yet materialised), the ``G``-based forms pay
    :math:`2Td_{\rm out}d_{\rm in}` to build it (``T`` needed). Element-wise work is not counted.

    Described on the book page ``performance``.
    """
    build = 0.0 if have_grad else (2.0 * T * d_out * d_in if T is not None else math.inf)
    out: dict[str, float] = {"reference": float(reference_flops(d_out, d_in)) + build}
    if T is not None:
        out["lowrank"] = 2.0 * T * (d_out**2 + d_in**2 + d_out * d_in) + 2.0 * d_out * d_in * (
            d_out + d_in
        )
    if r_out is not None and r_in is not None:
        out["corner"] = block_flops(r_out, r_in, d_out, d_in) + build
        if T is not None:
            out["lowrank_corner"] = block_flops(r_out, r_in, d_out, d_in, T) + build
    if blocks is not None:
        blocks = list(blocks)
        extra = BLOCK_OVERHEAD_FLOPS * max(len(blocks) - 1, 0)
        out["blocks"] = sum(block_flops(b.h, b.w, d_out, d_in) for b in blocks) + extra + build
        if T is not None:
            out["lowrank_blocks"] = (
                sum(block_flops(b.h, b.w, d_out, d_in, T) for b in blocks) + extra + build
            )
    return out


def choose_projection(
    d_out: int,
    d_in: int,
    T: int | None = None,
    r_out: int | None = None,
    r_in: int | None = None,
    **kwargs: Any,
) -> tuple[str, dict[str, float]]:
    """Return ``(name, flops)``: the form with the fewest FLOPs by :func:`projection_flops`, and all counts.

    Ties go to the earlier of ``reference, lowrank, corner, lowrank_corner, blocks, lowrank_blocks``.

    Described on the book page ``performance``.
    """
    flops = projection_flops(d_out, d_in, T, r_out, r_in, **kwargs)
    return min(flops, key=lambda k: flops[k]), flops
