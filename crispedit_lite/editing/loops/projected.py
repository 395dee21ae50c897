r"""What the projected-gradient editors share: select the matrices, build projectors, run FT-M.

CrispEdit, Adam-NSCL, FT and LocBF-FT differ only in which ``down_proj`` matrices they train and how
their gradients are projected before Adam (CrispEdit eq. 3 with the K-FAC projector of Alg. 1; the
input null space for Adam-NSCL; none for FT):

.. math::

    W \leftarrow W - \eta\,\mathrm{Adam}\big(\mathbf P\,\nabla_W \mathcal L_{\rm edit}\big).

Derived in notebooks ``06_crispedit_on_a_small_lm`` and ``08_one_framework``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from crispedit_lite.editing.kfac_cache import build_projectors
from crispedit_lite.editing.loops.trainer import train_edits
from crispedit_lite.editing.result import EditResult
from crispedit_lite.optim import ProjectedAdam, ProjectedSGD

__all__ = ["eigh_dtype", "make_optimizer", "projectors_for", "run_gradient_editor", "select_weights"]


def select_weights(model: nn.Module, modules: Sequence[str]) -> tuple[list[nn.Parameter], dict[str, Tensor]]:
    """Freeze everything except the weights of ``modules``; return them and CPU copies of their values.

    Listed on the book page ``api``.
    """
    for p in model.parameters():
        p.requires_grad_(False)
    params, original = [], {}
    for name in modules:
        w = model.get_submodule(name).weight
        w.requires_grad_(True)
        params.append(w)
        original[f"{name}.weight"] = w.detach().to("cpu", copy=True)
    return params, original


def eigh_dtype(config: Any) -> torch.dtype:
    """The eigendecomposition dtype a config asks for.

    Derived in notebook ``06_crispedit_on_a_small_lm``.
    """
    return torch.float64 if config.eigh_dtype == "float64" else torch.float32


def make_optimizer(config: Any, params: list[nn.Parameter], projectors: dict) -> torch.optim.Optimizer:
    """Projected Adam (paper) or projected SGD (``optimizer="sgd"``); no projectors is plain Adam/SGD.

    Listed on the book page ``api``.
    """
    if config.optimizer == "sgd":
        return ProjectedSGD(params, projectors, lr=config.lr)
    return ProjectedAdam(params, projectors, lr=config.lr, project_update=config.project_update)


def projectors_for(job: Any, kind: str, gamma: float) -> tuple[dict, dict, dict, float, float]:
    """Capability factors (cached) and one projector per module.

    Returns ``(projectors, stats, info, kfac_seconds, eigh_seconds)``.

    Listed on the book page ``api``.
    """
    factors, info = job.capability_factors()
    t = time.perf_counter()
    projectors, stats = build_projectors(job.model, factors, gamma, kind=kind, rule=job.config.rule,
                                         eigh_dtype=eigh_dtype(job.config),
                                         projection=job.config.projection)
    return projectors, stats, info, info["seconds"], time.perf_counter() - t


def run_gradient_editor(
    job: Any,
    modules: Sequence[str],
    *,
    projector_kind: str | None,
    gamma: float | None = None,
    early_stop: float | None = None,
    per_sample: bool = False,
    statistics: Sequence[str] = (),
) -> EditResult:
    """Train ``modules`` with the FT-M loop, gradients projected by ``projector_kind`` (or not).

    ``projector_kind`` is ``"kronecker"`` (CrispEdit), ``"input"`` (Adam-NSCL) or ``None`` (FT).

    Listed on the book page ``api``.
    """
    cfg = job.config
    start = time.perf_counter()
    params, original = select_weights(job.model, modules)
    projectors, stats, info, timings = {}, {}, {}, {}
    if projector_kind is not None:
        projectors, stats, info, timings["kfac_s"], timings["eigh_s"] = projectors_for(
            job, projector_kind, cfg.gamma if gamma is None else gamma)
    opt = make_optimizer(cfg, params, projectors)
    log = train_edits(job.model, job.requests, job.collate, opt, epochs=cfg.epochs,
                      batch_size=cfg.batch_size,
                      early_stop=cfg.early_stop if early_stop is None else early_stop,
                      seed=cfg.seed, per_sample=per_sample, progress=job.progress, desc=cfg.method)
    timings["train_s"] = log.seconds
    for p in job.model.parameters():
        p.requires_grad_(False)
    timings["total_s"] = time.perf_counter() - start
    return EditResult(config=cfg, modules=list(modules), logs=[log], timings=timings,
                      projector_stats=stats, capability=info, statistics=list(statistics),
                      original=original)
