r"""MEMIT and MEMIT-Seq (Meng et al., ICLR 2023): least-squares updates spread over the layers.

For a batch of edits, the target values :math:`z` at the last edited layer :math:`L` are optimised
once (:func:`~crispedit_lite.editing.loops.keys_values.compute_targets`); then the edited layers are
visited in ascending order and, at layer :math:`l_i` (:math:`i=0..n-1`), on the partially edited
model,

.. math::

    K = \text{keys at } l_i,\qquad R = \frac{z - h^L}{n - i},\qquad
    W_{l_i} \mathrel{+}= R\,K^\top\big(\lambda C_{l_i} + C^{\rm cache}_{l_i} + KK^\top\big)^{-1}

(:func:`~crispedit_lite.editing.updates.closed_form.memit_delta`, float64), so the residual is spread over the
remaining layers. :math:`C` is the count-normalised input second moment: the K-FAC factor
:math:`A` of the same cache file that CrispEdit and Adam-NSCL read. MEMIT-Seq walks the chunks of
:func:`~crispedit_lite.editing.loops.sequential.chunk_requests` and accumulates
:math:`C^{\rm cache} \mathrel{+}= KK^\top` with the keys each solve used.

Derived in notebook ``08_one_framework``.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from crispedit_lite.editing.loops.layerwise import Solver, run_closed_form
from crispedit_lite.editing.registry import EditJob, Editor
from crispedit_lite.editing.result import EditResult
from crispedit_lite.editing.updates.closed_form import memit_delta

__all__ = ["EDITORS", "memit_solver"]


def memit_solver(C: dict[str, Tensor], settings: dict[str, Any]) -> tuple[Solver, dict[str, Any]]:
    r"""MEMIT's solve :math:`R K^\top(\lambda C + C^{\rm cache} + KK^\top)^{-1}` per module; ``(solve, {})``.

    Derived in notebook ``08_one_framework``.
    """
    def solve(m: str, R: Tensor, K: Tensor, cache: Tensor | None) -> Tensor:
        return memit_delta(R, K, C[m], settings["lambda"], cache)

    return solve, {}


def _describe(settings: dict[str, Any], stats: dict[str, Any]) -> dict[str, Any]:
    return {"lambda": settings["lambda"], "l2": None, "nullspace": None}


def _run(job: EditJob, sequential: bool) -> EditResult:
    return run_closed_form(job, "memit", sequential, memit_solver, cache_keys="solve", describe=_describe)


def run(job: EditJob) -> EditResult:
    """MEMIT on ``job`` (all edits in one batch)."""
    return _run(job, sequential=False)


def run_seq(job: EditJob) -> EditResult:
    """MEMIT-Seq on ``job`` (the chunks of ``chunk_requests``, covariance cache accumulated)."""
    return _run(job, sequential=True)


EDITORS = (
    Editor(name="memit", changes="down_proj of the closed-form layers (CLOSED_FORM_PRESETS)",
           statistics=("input_covariance",), update="closed_form", run=run, paper_row="MEMIT",
           summary="least-squares update R K^T (lambda C + K K^T)^-1 spread over the layers"),
    Editor(name="memit_seq", changes="down_proj of the closed-form layers (CLOSED_FORM_PRESETS)",
           statistics=("input_covariance",), update="closed_form", run=run_seq,
           sequential=True,
           summary="MEMIT chunk by chunk with the accumulated cache sum K_p K_p^T (the official "
                   "Table 1 run used chunks of 32)"),
)
