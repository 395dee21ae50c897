r"""K-FAC over several processes: a deterministic split of the data, and an all-reduce of the sums.

Each of :math:`W` ranks collects the unnormalised sums of its shard :math:`\mathcal D_r`
(:class:`~crispedit_lite.kfac.checkpoint.KFACSums`); because K-FAC factors are averages, the factors
of the whole data set follow from summing sums and counts over ranks,

.. math::

    \mathbf A = \frac{\sum_r \Sigma^{(r)}_{\mathbf A}}{\sum_r T_r}, \qquad
    \mathbf S = \frac{\sum_r \Sigma^{(r)}_{\mathbf S}}{\sum_r T_r},

which equals the single-process result up to floating-point summation order. The reduction runs on
``torch.distributed`` (gloo on CPU tensors, nccl on the rank's GPU), so every rank ends with the same
factors.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

import torch

from crispedit_lite.kfac.checkpoint import KFACSums

__all__ = ["use_distributed", "rank_and_world", "shard", "all_reduce_sums", "broadcast_object",
           "barrier"]

T = TypeVar("T")


def _initialised() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def use_distributed(flag: bool | None) -> bool:
    """Resolve ``distributed=``: ``None`` means yes iff a process group of more than one rank is up.

    ``True`` without an initialised process group raises ``ValueError``.

    Listed on the book page ``api``.
    """
    if flag is None:
        return _initialised() and torch.distributed.get_world_size() > 1
    if flag and not _initialised():
        raise ValueError("distributed=True needs torch.distributed initialised (run under torchrun, "
                         "or call torch.distributed.init_process_group first)")
    return bool(flag)


def rank_and_world() -> tuple[int, int]:
    """``(rank, world_size)`` of the default process group, ``(0, 1)`` without one.

    Listed on the book page ``api``.
    """
    if not _initialised():
        return 0, 1
    return torch.distributed.get_rank(), torch.distributed.get_world_size()


def shard(items: Sequence[T], rank: int, world: int) -> list[T]:
    r"""The contiguous block of ``items`` that ``rank`` of ``world`` processes (sizes differ by <= 1).

    Rank :math:`r` gets items :math:`[\lfloor rn/W\rfloor, \lfloor (r+1)n/W\rfloor)`; the blocks
    partition the items in order, and depend only on ``(n, rank, world)``.

    Listed on the book page ``api``.
    """
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"shard: need 0 <= rank < world, got rank={rank}, world={world}")
    n = len(items)
    return list(items[rank * n // world:(rank + 1) * n // world])


def _comm_device() -> torch.device:
    if torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sums(sums: KFACSums) -> KFACSums:
    """Sum the ``A`` and ``S`` sums and the term counts over all ranks; every rank gets the total.

    Modules are reduced in sorted order (every rank runs the same collectives); each result goes
    back to the device its sums were on.

    Listed on the book page ``api``.
    """
    dev = _comm_device()
    out = KFACSums(A={}, S={}, batches=sums.batches, rng=sums.rng, meta=sums.meta)
    for name in sorted(sums.A):
        for part, dst in ((sums.A, out.A), (sums.S, out.S)):
            t = part[name].to(dev).clone()
            torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)
            dst[name] = t.to(part[name].device)
    count = torch.tensor([sums.count], dtype=torch.int64, device=dev)
    torch.distributed.all_reduce(count, op=torch.distributed.ReduceOp.SUM)
    out.count = int(count.item())
    out.A = {n: out.A[n] for n in sums.A}  # keep the caller's module order
    out.S = {n: out.S[n] for n in sums.S}
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` of rank ``src`` on every rank (a picklable object).

    Listed on the book page ``api``.
    """
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=src)
    return box[0]


def barrier() -> None:
    """Wait for every rank (no-op without a process group).

    Listed on the book page ``api``.
    """
    if _initialised():
        torch.distributed.barrier()
