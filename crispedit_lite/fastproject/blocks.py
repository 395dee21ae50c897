r"""The protected set as a staircase in the sorted Kronecker spectrum, and its cover by rectangles.

With both eigenbases of a :class:`~crispedit_lite.projector.KroneckerProjector` sorted by decreasing
eigenvalue, the protected entries (mask 0) form a staircase in the leading
:math:`r_{\rm out}\times r_{\rm in}` corner (:func:`staircase`, with the proof). Since
:math:`\mathbf U\mathbf U^\top=\mathbf I`, the projection is the gradient minus its protected part,

.. math::

    \mathbf P(\mathbf G)=\mathbf G-\sum_{B}\mathbf U_{\rm out}^{(B)}\big((\mathbf U_{\rm out}^{(B)\top}
    \mathbf G\mathbf U_{\rm in}^{(B)})\odot(1-\mathbf M)_B\big)\mathbf U_{\rm in}^{(B)\top},

over any disjoint rectangles :math:`B` that cover the staircase. One rectangle is the corner;
:func:`plan_blocks` chooses a few by dynamic programming, far cheaper than the bounding corner for
L-shaped staircases (one massive activation direction). :class:`~crispedit_lite.fastproject.FastProjector`
applies the plan. The reference projection is derived in notebook ``05_matrix_free_projector``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from crispedit_lite.fastproject.flops import BLOCK_OVERHEAD_FLOPS, Block, _vec_block_flops, block_flops

__all__ = ["staircase", "plan_blocks"]


def _descending(evals: Tensor) -> Tensor:
    ev = torch.as_tensor(evals).detach().reshape(-1).to(torch.float64).cpu().clamp_min(0.0)
    return torch.sort(ev, descending=True, stable=True).indices


def staircase(protected: Tensor) -> tuple[Tensor, int, int]:
    r"""Row widths of a sorted protected set, checking that it is a staircase in the leading corner.

    ``protected`` is the ``(d_out, d_in)`` boolean set :math:`\neg\mathbf M` with rows and columns
    sorted by decreasing eigenvalue. Returns ``(widths, r_out, r_in)``: row ``i`` is protected exactly
    in its first ``widths[i]`` columns, ``widths`` is non-increasing, ``r_out`` is the number of rows
    with any protected entry and ``r_in = widths[0]``; raises ``ValueError`` if the set is not such a
    staircase.

    **Why the energy rule always gives a staircase.** Let :math:`\lambda^{\rm out}_1\ge\dots\ge0` and
    :math:`\lambda^{\rm in}_1\ge\dots\ge0` be the sorted (clamped) eigenvalues. The mask is
    :math:`M_{ij}=\tau(\lambda^{\rm out}_i\lambda^{\rm in}_j)` for a predicate that is monotone
    (editable iff :math:`\lambda\le\lambda_\gamma(1+\text{rtol})` for rule ``"paper"``, iff
    :math:`\lambda<\lambda_\gamma(1-\text{rtol})` for rule ``"code"``). If :math:`(i,j)` is protected and
    :math:`i'\le i`, :math:`j'\le j`, then :math:`\lambda^{\rm out}_{i'}\ge\lambda^{\rm out}_i\ge0` and
    :math:`\lambda^{\rm in}_{j'}\ge\lambda^{\rm in}_j\ge0`, so
    :math:`\lambda^{\rm out}_{i'}\lambda^{\rm in}_{j'}\ge\lambda^{\rm out}_i\lambda^{\rm in}_j` (also in
    floating point: rounding is monotone and the factors are non-negative), hence :math:`(i',j')` is
    protected too. The protected set is therefore a down-set of the grid: each row is a prefix, the
    prefixes shrink down the rows, and everything lies in the ``r_out x r_in`` corner. Equal eigenvalues
    give equal products, so ties in the sort do not matter.

    Described on the book page ``performance``.
    """
    p = protected.detach().to(torch.bool)  # checked on its own device (fast on a GPU)
    widths = p.sum(1)
    cols = torch.arange(p.shape[1], device=p.device)
    if not torch.equal(p, cols.unsqueeze(0) < widths.unsqueeze(1)):
        raise ValueError(
            "protected set is not a prefix in every row: rows/columns are not sorted by "
            "decreasing eigenvalue, or the mask does not come from a monotone rule"
        )
    widths = widths.cpu()
    if (widths[1:] > widths[:-1]).any():
        raise ValueError("protected row widths increase down the rows: not a staircase")
    r_out = int((widths > 0).sum())
    r_in = int(widths[0]) if widths.numel() else 0
    return widths, r_out, r_in


def _dp_partition(n: int, cost, candidates: np.ndarray) -> list[tuple[int, int]]:
    """Split ``[0, n)`` at candidate positions into consecutive pieces minimising the summed ``cost``."""
    pos = candidates
    k = len(pos)
    best = np.full(k, np.inf)
    arg = np.zeros(k, dtype=np.int64)
    best[0] = 0.0
    for j in range(1, k):
        starts = pos[:j]
        c = best[:j] + cost(starts, np.full(j, pos[j]))
        i = int(np.argmin(c))
        best[j], arg[j] = c[i], i
    pieces = []
    j = k - 1
    while j > 0:
        i = int(arg[j])
        pieces.append((int(pos[i]), int(pos[j])))
        j = i
    return pieces[::-1]


def _candidates(widths: np.ndarray, n: int, max_candidates: int) -> np.ndarray:
    steps = np.flatnonzero(np.diff(widths[:n])) + 1  # where the width changes
    cand = np.unique(np.concatenate([[0, n], steps]))
    if len(cand) > max_candidates:
        keep = np.unique(np.linspace(0, len(cand) - 1, max_candidates).round().astype(np.int64))
        cand = cand[keep]
    return np.unique(np.concatenate([[0, n], np.arange(0, n, max(1, n // max_candidates)), cand]))


def plan_blocks(
    widths: Tensor,
    d_out: int,
    d_in: int,
    T: int | None = None,
    *,
    overhead: float = BLOCK_OVERHEAD_FLOPS,
    max_candidates: int = 512,
) -> list[Block]:
    r"""Cover a staircase with disjoint rectangles of least total :func:`block_flops` (dynamic programming).

    Two families are searched and the cheaper plan returned: groups of consecutive rows
    ``[a, b)`` each covered by ``[a, b) x [0, widths[a])``, and groups of consecutive columns
    ``[a, b)`` each covered by ``[0, heights[a]) x [a, b)``. Every block is charged ``overhead``.
    One block is the :func:`corner_project` corner; an L-shaped staircase (one row wide, one column
    tall) costs two thin blocks instead of a large corner. Split points are restricted to the width
    changes plus a uniform grid when there are more than ``max_candidates``; the plan is always exact,
    only possibly not optimal.

    Described on the book page ``performance``.
    """
    w = np.asarray(widths.cpu().numpy() if isinstance(widths, Tensor) else widths, dtype=np.int64)
    r_out = int((w > 0).sum())
    if r_out == 0:
        return []
    r_in = int(w[0])
    counts = np.bincount(w, minlength=r_in + 1)  # heights[j] = #{i : w[i] > j}
    heights = (counts[::-1].cumsum()[::-1][1:]).astype(np.int64)

    def cost_rows(a, b):
        h, ww = (b - a).astype(np.float64), w[a].astype(np.float64)
        return _vec_block_flops(h, ww, d_out, d_in, T) + overhead

    def cost_cols(a, b):
        ww, h = (b - a).astype(np.float64), heights[a].astype(np.float64)
        return _vec_block_flops(h, ww, d_out, d_in, T) + overhead

    rows = _dp_partition(r_out, cost_rows, _candidates(w, r_out, max_candidates))
    plan_r = [Block(a, b, 0, int(w[a])) for a, b in rows]
    cols = _dp_partition(r_in, cost_cols, _candidates(heights, r_in, max_candidates))
    plan_c = [Block(0, int(heights[a]), a, b) for a, b in cols]

    def total(plan):
        return sum(block_flops(b.h, b.w, d_out, d_in, T) + overhead for b in plan)

    return plan_r if total(plan_r) <= total(plan_c) else plan_c
