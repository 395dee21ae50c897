r"""Sequential editing (CrispEdit Alg. 2): edits arrive in chunks; each chunk is trained in turn.

CrispEdit-Seq rebuilds its projector before every chunk from the running K-FAC factors: the
capability factors merged (token-weighted) with the edit-data factors of every earlier chunk,

.. math::

    A_k = \frac{N_0A_0+\sum_{j<k}N_jA_j}{N_0+\sum_{j<k}N_j},\qquad
    S_k = \frac{N_0S_0+\sum_{j<k}N_jS_j}{N_0+\sum_{j<k}N_j},

so that later chunks are kept away from the directions that earlier edits rely on. FT-Seq (Table 1)
walks the same chunks in the same order with no projection. ``seq_mask_prompt`` collects the
edit-data factors on target positions only (the Table 6 ablation). An ``after_chunk(chunk_index,
chunk, state)`` callback (``edit(..., after_chunk=...)``) sees the model and a :class:`ChunkState`
after every chunk, e.g. to measure the retention of earlier edits; it only observes, so a run with
a callback gives the same weights as one without. With ``job.carry`` a stream of chunks can be edited
over many calls, one chunk at a time, as one call would (the running factors and Adam's state are
handed on).

Derived in notebook ``07_sequential_editing``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from crispedit_lite.editing.kfac_cache import build_projectors
from crispedit_lite.editing.loops.projected import eigh_dtype, make_optimizer, select_weights
from crispedit_lite.editing.loops.trainer import train_edits
from crispedit_lite.editing.result import EditResult

__all__ = ["AfterChunk", "ChunkState", "chunk_requests", "run_chunks"]


@dataclass
class ChunkState:
    """What the loop holds after chunk ``index``: the model, its training log, the curvature it used.

    Attributes:
        index: the chunk's index (0-based); ``n_chunks``: how many there are.
        model: the model after training on the chunk (edited in place: copy what should be kept).
        log: the chunk's :class:`~crispedit_lite.editing.loops.trainer.TrainLog`.
        projectors: ``{weight: projector}`` that trained the chunk (``None`` for FT-Seq).
        projector_stats: rank and editable fraction per module of those projectors.
        factors_before: the running K-FAC factors the projectors were built from.
        edit_factors: the chunk's own edit-data K-FAC, collected on the model after the chunk.
        factors: the running factors after merging the chunk's (those of the next chunk).

    Derived in notebook ``07_sequential_editing``.
    """

    index: int
    n_chunks: int
    model: nn.Module
    log: Any
    projectors: dict[Any, Any] | None = None
    projector_stats: dict[str, Any] = field(default_factory=dict)
    factors_before: dict[str, Any] | None = None
    edit_factors: dict[str, Any] | None = None
    factors: dict[str, Any] | None = None


#: ``after_chunk(chunk_index, chunk, state)``: called once per chunk, in order, after its merge.
AfterChunk = Callable[[int, list[Any], ChunkState], None]


def chunk_requests(requests: list[Any], chunk_size: int, seed: int) -> list[list[Any]]:
    """The seeded random order of ``requests`` cut into chunks of ``chunk_size`` (the last may be short).

    Every sequential editor uses this one order, so CrispEdit-Seq, FT-Seq, LoRA-Seq, MEMIT-Seq and
    AlphaEdit-Seq see the same chunks. Derived in notebook ``07_sequential_editing``.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(requests), generator=gen).tolist()
    return [[requests[i] for i in order[c:c + chunk_size]] for c in range(0, len(order), chunk_size)]


def run_chunks(job: Any, *, project: bool) -> EditResult:
    """Train ``job.modules`` chunk by chunk; with ``project`` this is CrispEdit-Seq, without FT-Seq.

    After every chunk (and its merge) ``job.after_chunk(k, chunk, state)`` is called, if set, with a
    :class:`ChunkState`. Derived in notebook ``07_sequential_editing``.
    """
    from crispedit_lite.data.batches import edit_kfac_batches
    from crispedit_lite.kfac import collect_kfac, merge_kfac

    cfg, model, carry = job.config, job.model, job.carry
    start = time.perf_counter()
    params, original = select_weights(model, job.modules)
    chunks = chunk_requests(list(job.requests), cfg.chunk_size, cfg.seed)
    done = 0 if carry is None else int(carry.get("chunks_done", 0))  # chunks of earlier calls
    timings = {"train_s": 0.0}
    running, info, stats, per_chunk, projectors = None, {}, {}, [], None
    after_chunk = getattr(job, "after_chunk", None)
    if project:
        if carry is not None and "running" in carry:  # the factors merged by earlier calls
            running, info = carry["running"], dict(carry.get("capability", {}))
        else:
            running, info = job.capability_factors()
        timings.update(kfac_s=float(info.get("seconds", 0.0)), edit_kfac_s=0.0, eigh_s=0.0)
    opt = make_optimizer(cfg, params, {})
    if carry is not None and "optimizer" in carry:
        opt.load_state_dict(carry["optimizer"])
    logs = []
    for k, chunk in enumerate(chunks, start=done):
        if project:
            t = time.perf_counter()
            projectors, stats = build_projectors(model, running, cfg.gamma, rule=cfg.rule,
                                                 eigh_dtype=eigh_dtype(cfg), projection=cfg.projection)
            opt.projectors = projectors
            for p, proj in projectors.items():  # keep Adam's momentum inside the new subspace
                state = opt.state.get(p, {})
                if "exp_avg" in state:
                    state["exp_avg"].copy_(proj.project(state["exp_avg"]))
            timings["eigh_s"] += time.perf_counter() - t
        log = train_edits(model, chunk, job.collate, opt, epochs=cfg.epochs,
                          batch_size=cfg.batch_size, early_stop=cfg.early_stop, seed=cfg.seed + k,
                          reshuffle=cfg.seq_reshuffle, progress=job.progress,
                          desc=f"chunk {k + 1}/{done + len(chunks)}")
        logs.append(log)
        timings["train_s"] += log.seconds
        if project:
            t = time.perf_counter()
            batches = edit_kfac_batches(chunk, job.tokenizer, batch_size=8,
                                        max_length=cfg.capability_max_length,
                                        mask_prompt=cfg.seq_mask_prompt)
            for p in model.parameters():
                p.requires_grad_(False)
            edit_f = collect_kfac(model, job.modules, batches, labels=cfg.kfac_labels, seed=cfg.seed,
                                  progress=False)
            for w in params:
                w.requires_grad_(True)
            before, running = running, merge_kfac([running, edit_f])  # token-weighted streaming average
            timings["edit_kfac_s"] += time.perf_counter() - t
            per_chunk.append({name: s["editable_fraction"] for name, s in stats.items()})
        if after_chunk is not None:
            t = time.perf_counter()
            seen = ChunkState(index=k, n_chunks=len(chunks), model=model, log=log, projectors=projectors,
                              projector_stats=dict(stats))
            if project:
                seen.factors_before, seen.edit_factors, seen.factors = before, edit_f, running
            cuda = sorted({w.device.index or 0 for w in params if w.device.type == "cuda"})
            with torch.random.fork_rng(devices=cuda):  # the callback cannot move the loop's random state
                after_chunk(k, list(chunk), seen)
            for w in params:  # nor leave gradients behind or the weights frozen
                w.grad = None
                w.requires_grad_(True)
            timings["after_chunk_s"] = timings.get("after_chunk_s", 0.0) + time.perf_counter() - t
    for p in model.parameters():
        p.requires_grad_(False)
    if carry is not None:
        carry.update(chunks_done=done + len(chunks), optimizer=opt.state_dict(),
                     **({"running": running, "capability": info} if project else {}))
    timings["total_s"] = time.perf_counter() - start
    schedule = {"chunk_size": cfg.chunk_size, "n_chunks": len(chunks), "order_seed": cfg.seed,
                "chunks_before": done,
                "evaluated": "once, after the last chunk"}
    projector_stats = {"final": stats, "editable_fraction_per_chunk": per_chunk} if project else {}
    return EditResult(config=cfg, modules=list(job.modules), logs=logs, timings=timings,
                      projector_stats=projector_stats, capability=info,
                      statistics=["capability_kfac", "edit_kfac"] if project else [],
                      details={"schedule": schedule}, original=original)
