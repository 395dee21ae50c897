r"""AlphaEdit and AlphaEdit-Seq (Fang et al., ICLR 2025): MEMIT's layer loop, projected on a null space.

The update of each layer is confined to the (near-)null space of the preserved keys,
:math:`\Delta = \Delta P` with :math:`P = U_0U_0^\top` over the eigenvectors of the input covariance
:math:`C` below ``cf_nullspace_threshold`` (the official absolute rule) or outside the top
``cf_nullspace_gamma`` of its energy (the rule of CrispEdit's :math:`\gamma`), and

.. math::

    \Delta = R\,K^\top P\,\big((K_pK_p^\top + KK^\top)P + \alpha I\big)^{-1}

(:func:`~crispedit_lite.editing.updates.closed_form.alphaedit_delta`, :math:`\alpha=` ``cf_l2``). The layers,
the :math:`1/(n-i)` residual split and the target values are MEMIT's
(:func:`~crispedit_lite.editing.loops.layerwise.run_closed_form`). AlphaEdit-Seq walks the chunks of
:func:`~crispedit_lite.editing.loops.sequential.chunk_requests`; after each chunk the keys are recomputed
on the updated model and :math:`K_pK_p^\top \mathrel{+}= KK^\top`. :math:`P` is built once from
:math:`C` (the K-FAC input factor :math:`A`, the same cache as CrispEdit's). Its settings are MEMIT's
:class:`~crispedit_lite.editing.editors.memit.ClosedFormSettings` (``cf_*``).

Derived in notebook ``08_one_framework``.
"""

from __future__ import annotations

import warnings
from typing import Any

from torch import Tensor

from crispedit_lite.editing.editors.memit import CLOSED_FORM_PRESETS, ClosedFormSettings
from crispedit_lite.editing.loops.layerwise import run_closed_form
from crispedit_lite.editing.registry import EditJob, Editor
from crispedit_lite.editing.result import EditResult
from crispedit_lite.editing.updates.closed_form import alphaedit_delta, alphaedit_projector

__all__ = ["EDITORS", "alphaedit_solver"]


def alphaedit_solver(C: dict[str, Tensor], settings: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """One null-space projector per module and the solve that uses it; ``(solve, projector_stats)``.

    Listed on the book page ``api``.
    """
    projectors, stats = {}, {}
    for m, c in C.items():
        ns = alphaedit_projector(c, threshold=settings["nullspace_threshold"],
                                 rule=settings["nullspace_rule"], gamma=settings["nullspace_gamma"])
        if ns.rank == 0:
            warnings.warn(f"alphaedit: no eigenvalue of {m}'s covariance is below the null-space cut "
                          f"{ns.cut:g} ({ns.rule}); the update is zero. The absolute threshold is "
                          f"model-specific: try cf_nullspace_rule='energy'", stacklevel=2)
        projectors[m] = ns.P
        stats[m] = {"rank": ns.rank, "editable_fraction": round(ns.rank / c.shape[0], 6),
                    "cut": ns.cut, "rule": ns.rule}

    def solve(m: str, R: Tensor, K: Tensor, cache: Tensor | None) -> Tensor:
        return alphaedit_delta(R, K, projectors[m], settings["l2"], cache)

    return solve, stats


def _describe(s: dict[str, Any], stats: dict[str, Any]) -> dict[str, Any]:
    return {"lambda": None, "l2": s["l2"],
            "nullspace": {"rule": s["nullspace_rule"],
                          "threshold": s["nullspace_threshold"] if s["nullspace_rule"] == "absolute" else
                          None,
                          "gamma": s["nullspace_gamma"] if s["nullspace_rule"] == "energy" else None,
                          "rank": {m: v["rank"] for m, v in stats.items()}}}


def _run(job: EditJob, sequential: bool) -> EditResult:
    return run_closed_form(job, "alphaedit", sequential, alphaedit_solver, cache_keys="after",
                           describe=_describe)


def run(job: EditJob) -> EditResult:
    """AlphaEdit on ``job`` (all edits in one batch)."""
    return _run(job, sequential=False)


def run_seq(job: EditJob) -> EditResult:
    """AlphaEdit-Seq on ``job`` (chunks of ``chunk_requests``, keys of earlier chunks in the cache)."""
    return _run(job, sequential=True)


# The official AlphaEdit row ran in sequential batches of 100 edits (EasyEdit edit.py --num_edits 100), the
# model loaded in float32 (EasyEdit's hparams set no fp16).
EDITORS = (
    Editor(name="alphaedit", changes="down_proj of the closed-form layers (CLOSED_FORM_PRESETS)",
           statistics=("input_covariance",), update="closed_form", run=run, label="AlphaEdit",
           color="#ece133", settings=ClosedFormSettings, presets=CLOSED_FORM_PRESETS,
           paper_row="AlphaEdit",
           paper_run={"chunk_size": 100, "dtype": "float32", "config": {"cf_templates": "sampled"}},
           sequential_form="alphaedit_seq",
           summary="MEMIT's update projected onto the input covariance's null space"),
    Editor(name="alphaedit_seq", changes="down_proj of the closed-form layers (CLOSED_FORM_PRESETS)",
           statistics=("input_covariance",), update="closed_form", run=run_seq, label="AlphaEdit-Seq",
           color="#8e871f", settings=ClosedFormSettings, presets=CLOSED_FORM_PRESETS, sequential=True,
           summary="AlphaEdit chunk by chunk, keys of earlier chunks accumulated (the official "
                   "Table 1 run used chunks of 100)"),
)
