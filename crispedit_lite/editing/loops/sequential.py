r"""Sequential editing (CrispEdit Alg. 2): edits arrive in chunks; each chunk is trained in turn.

CrispEdit-Seq rebuilds its projector before every chunk from the running K-FAC factors: the
capability factors merged (token-weighted) with the edit-data factors of every earlier chunk,

.. math::

    A_k = \frac{N_0A_0+\sum_{j<k}N_jA_j}{N_0+\sum_{j<k}N_j},\qquad
    S_k = \frac{N_0S_0+\sum_{j<k}N_jS_j}{N_0+\sum_{j<k}N_j},

so that later chunks are kept away from the directions that earlier edits rely on. FT-Seq (Table 1)
walks the same chunks in the same order with no projection. With ``job.carry`` a stream of chunks can
be edited over many calls, one chunk at a time, as one call would (the running factors and Adam's
state are handed on). ``seq_mask_prompt`` collects the
edit-data factors on target positions only (the Table 6 ablation).

Derived in notebook ``07_sequential_editing``.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from crispedit_lite.editing.kfac_cache import build_projectors
from crispedit_lite.editing.loops.projected import eigh_dtype, make_optimizer, select_weights
from crispedit_lite.editing.loops.trainer import train_edits
from crispedit_lite.editing.result import EditResult

__all__ = ["chunk_requests", "run_chunks"]


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

    Derived in notebook ``07_sequential_editing``.
    """
    from crispedit_lite.data.batches import edit_kfac_batches
    from crispedit_lite.kfac import collect_kfac, merge_kfac

    cfg, model, carry = job.config, job.model, job.carry
    start = time.perf_counter()
    params, original = select_weights(model, job.modules)
    chunks = chunk_requests(list(job.requests), cfg.chunk_size, cfg.seed)
    done = 0 if carry is None else int(carry.get("chunks_done", 0))  # chunks of earlier calls
    timings = {"train_s": 0.0}
    running, info, stats, per_chunk = None, {}, {}, []
    if project:
        running, info = job.capability_factors()
        timings.update(kfac_s=info["seconds"], edit_kfac_s=0.0, eigh_s=0.0)
        if carry is not None and "running" in carry:  # the factors merged by earlier calls
            running = carry["running"]
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
            running = merge_kfac([running, edit_f])  # token-weighted streaming average
            timings["edit_kfac_s"] += time.perf_counter() - t
            per_chunk.append({name: s["editable_fraction"] for name, s in stats.items()})
    for p in model.parameters():
        p.requires_grad_(False)
    if carry is not None:
        carry.update(chunks_done=done + len(chunks), optimizer=opt.state_dict(),
                     **({"running": running} if project else {}))
    timings["total_s"] = time.perf_counter() - start
    schedule = {"chunk_size": cfg.chunk_size, "n_chunks": len(chunks), "order_seed": cfg.seed,
                "chunks_before": done,
                "evaluated": "once, after the last chunk"}
    projector_stats = {"final": stats, "editable_fraction_per_chunk": per_chunk} if project else {}
    return EditResult(config=cfg, modules=list(job.modules), logs=logs, timings=timings,
                      projector_stats=projector_stats, capability=info,
                      statistics=["capability_kfac", "edit_kfac"] if project else [],
                      details={"schedule": schedule}, original=original)
