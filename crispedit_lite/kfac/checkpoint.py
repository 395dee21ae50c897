r"""Running K-FAC sums, and checkpoints of them that let an interrupted collection resume exactly.

:func:`~crispedit_lite.kfac.hooks.accumulate_kfac` keeps, per layer, the *unnormalised* sums

.. math::

    \Sigma_{\mathbf A} = \sum_t \mathbf a_t\mathbf a_t^\top, \qquad
    \Sigma_{\mathbf S} = \sum_t \sum_c \mathbf g_{t,c}\mathbf g_{t,c}^\top, \qquad T,

and divides only at the end (:meth:`KFACSums.to_factors`: :math:`\mathbf A = \Sigma_{\mathbf A}/T`).
Sums are what can be added: over checkpoints (a resumed run adds the remaining batches to the saved
sums in the same order, so its factors are bit-identical to an uninterrupted run) and over ranks of a
distributed run (an all-reduce, :mod:`crispedit_lite.kfac.distributed`). A checkpoint also stores
the number of batches done and the state of the label sampler of ``labels="sampled"``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor

from crispedit_lite.kfac.factors import KFACFactors
from crispedit_lite.kfac.io import atomic_save_tensors, read_tensors

__all__ = ["KFACSums", "save_checkpoint", "load_checkpoint", "CHECKPOINT_VERSION"]

CHECKPOINT_VERSION = 1
_FIELD = "crispedit_lite_checkpoint"


@dataclass
class KFACSums:
    r"""Token-weighted sums of K-FAC factors, before the division by the term count.

    Attributes:
        A: ``{module: sum_t a_t a_t^T}`` in the accumulation dtype, on each module's device.
        S: ``{module: sum_t sum_c g_tc g_tc^T}``.
        count: number of terms :math:`T` (valid tokens for ``expand``, sequences for ``reduce``).
        batches: number of batches consumed so far (including batches without valid tokens).
        rng: ``torch.Generator.get_state()`` of the label sampler after those batches, or ``None``.
        meta: ``{module: metadata}`` that :meth:`to_factors` attaches (JSON-serialisable).

    Listed on the book page ``api``.
    """

    A: dict[str, Tensor]
    S: dict[str, Tensor]
    count: int = 0
    batches: int = 0
    rng: Tensor | None = None
    meta: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_factors(self) -> dict[str, KFACFactors]:
        r"""Normalise by the term count, on each module's device, then move to the CPU.

        :math:`\mathbf A = \Sigma_{\mathbf A}/T`, :math:`\mathbf S = \Sigma_{\mathbf S}/T`.
        """
        if self.count == 0:
            raise ValueError("collect_kfac saw no valid tokens: batches are empty or every label is ignored")
        return {name: KFACFactors(A=(self.A[name] / self.count).cpu(),
                                  S=(self.S[name] / self.count).cpu(), n_tokens=self.count,
                                  meta=dict(self.meta.get(name, {})))
                for name in self.A}


def save_checkpoint(sums: KFACSums, path: str | os.PathLike, info: dict[str, Any] | None = None
                    ) -> Path:
    """Write ``sums`` (copied to the CPU, dtype kept) atomically to ``path``.

    ``info`` (JSON-serialisable, e.g. the cache key and batch size) is stored for
    :func:`load_checkpoint` to compare.

    Listed on the book page ``api``.
    """
    tensors = {}
    for name in sums.A:
        tensors[f"{name}::A"] = sums.A[name].detach().cpu().contiguous()
        tensors[f"{name}::S"] = sums.S[name].detach().cpu().contiguous()
    if sums.rng is not None:
        tensors["__rng__"] = sums.rng.detach().cpu().contiguous()
    header = {"version": CHECKPOINT_VERSION, "count": int(sums.count), "batches": int(sums.batches),
              "modules": list(sums.A), "meta": sums.meta, "info": info or {}}
    return atomic_save_tensors(tensors, path, {_FIELD: json.dumps(header, sort_keys=True)})


def load_checkpoint(path: str | os.PathLike, info: dict[str, Any] | None = None) -> KFACSums:
    """Read a checkpoint written by :func:`save_checkpoint`; tensors stay on the CPU.

    Raises:
        FileNotFoundError: no checkpoint at ``path``.
        ValueError: unreadable, incomplete, or written for other settings (``info`` differs); the
            message names the file and the field.

    Listed on the book page ``api``.
    """
    tensors, header = read_tensors(path, _FIELD)
    if header.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"{path}: checkpoint version {header.get('version')} != {CHECKPOINT_VERSION}")
    for key, value in (info or {}).items():
        have = header.get("info", {}).get(key)
        if have != value:
            raise ValueError(f"{path}: checkpoint was written with {key}={have!r}, now {value!r}")
    try:
        modules = list(header["modules"])
        A = {m: tensors[f"{m}::A"] for m in modules}
        S = {m: tensors[f"{m}::S"] for m in modules}
        return KFACSums(A=A, S=S, count=int(header["count"]), batches=int(header["batches"]),
                        rng=tensors.get("__rng__"), meta=dict(header.get("meta", {})))
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{path}: incomplete checkpoint (missing {err})") from err

