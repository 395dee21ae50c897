"""The container of one layer's Kronecker factors, and the token-weighted merge of CrispEdit-Seq.

Derived in notebooks ``04_kfac_step_by_step`` (factors) and ``07_sequential_editing`` (merge).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

__all__ = ["KFACFactors", "merge_kfac"]


@dataclass
class KFACFactors:
    """Kronecker factors of one linear layer.

    Attributes:
        A: ``(d_in, d_in)`` uncentred second moment of the layer inputs (fp32).
        S: ``(d_out, d_out)`` second moment of the gradients w.r.t. the layer outputs (fp32).
        n_tokens: number of averaged terms (valid tokens for ``expand``, sequences for ``reduce``);
            the weight used by :func:`merge_kfac` (so expand and reduce factors must not be merged).
        meta: provenance (model id, module, label mode, approx, dtype, seed, ...); JSON-serialisable.

    Listed on the book page ``api``.
    """

    A: Tensor
    S: Tensor
    n_tokens: int
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, m in (("A", self.A), ("S", self.S)):
            if m.ndim != 2 or m.shape[0] != m.shape[1]:
                raise ValueError(f"KFACFactors.{name} must be square, got shape {tuple(m.shape)}")
            if not torch.isfinite(m).all():
                raise ValueError(f"KFACFactors.{name} contains NaN or Inf ({self.meta.get('module')})")
        if self.n_tokens <= 0:
            raise ValueError(f"KFACFactors.n_tokens must be positive, got {self.n_tokens}")

    @property
    def d_in(self) -> int:
        """Input dimension of the layer."""
        return self.A.shape[0]

    @property
    def d_out(self) -> int:
        """Output dimension of the layer."""
        return self.S.shape[0]


def merge_kfac(parts: Sequence[KFACFactors] | Sequence[Mapping[str, KFACFactors]]):
    r"""Token-weighted average of factors, as CrispEdit-Seq merges edit factors into capability ones.

    .. math::

        \bar{\mathbf A} = \frac{\sum_c N_c \mathbf A_c}{\sum_c N_c}, \qquad
        \bar{\mathbf S} = \frac{\sum_c N_c \mathbf S_c}{\sum_c N_c}

    (CrispEdit Alg. 2; an approximation: the K-FAC of a union of data sets is not
    :math:`\bar{\mathbf A}\otimes\bar{\mathbf S}`). Accepts a sequence of :class:`KFACFactors` or
    of ``{module: KFACFactors}`` dicts with the same keys. Parts whose metadata name different
    ``approx`` (expand factors are about :math:`R` times smaller than reduce ones) or ``labels``
    modes raise ``ValueError``. Derived in notebook ``07_sequential_editing``.
    """
    if len(parts) == 0:
        raise ValueError("merge_kfac needs at least one set of factors")
    if isinstance(parts[0], Mapping):
        keys = list(parts[0])
        for i, p in enumerate(parts):
            if list(p) != keys:
                raise ValueError(f"merge_kfac: part {i} has modules {list(p)}, expected {keys}")
        return {k: merge_kfac([p[k] for p in parts]) for k in keys}
    for key in ("approx", "labels"):  # expand/reduce differ in scale; label modes in meaning
        tagged = [(i, p.meta[key]) for i, p in enumerate(parts) if p.meta.get(key) is not None]
        clash = [(i, v) for i, v in tagged if v != tagged[0][1]]
        if clash:
            raise ValueError(
                f"merge_kfac: part {tagged[0][0]} has {key}={tagged[0][1]!r} but part {clash[0][0]} "
                f"has {key}={clash[0][1]!r}; factors of different {key} cannot be averaged")
    for i, p in enumerate(parts):
        if p.A.shape != parts[0].A.shape or p.S.shape != parts[0].S.shape:
            raise ValueError(f"merge_kfac: part {i} has factor shapes {tuple(p.A.shape)}, "
                             f"{tuple(p.S.shape)}; expected those of part 0")
    n = sum(p.n_tokens for p in parts)
    A = sum(p.A * (p.n_tokens / n) for p in parts)
    S = sum(p.S * (p.n_tokens / n) for p in parts)
    meta = dict(parts[0].meta)
    meta["merged_from"] = [p.n_tokens for p in parts]
    return KFACFactors(A=A, S=S, n_tokens=n, meta=meta)
