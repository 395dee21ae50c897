r"""The closed-form layer loop of locate-then-edit editors (MEMIT, AlphaEdit), driven by a solver.

For a batch of edits, the target values :math:`z` at the last edited layer :math:`L` are optimised
once (:func:`~crispedit_lite.editing.loops.keys_values.compute_targets`); then the edited layers are
visited in ascending order and, at layer :math:`l_i` (:math:`i=0..n-1`), on the partially edited
model, the keys :math:`K` are recomputed and the editor's solve gets the residual share
:math:`R = (z - h^L)/(n - i)`, so the residual is spread over the remaining layers. MEMIT's and
AlphaEdit's solves (:mod:`~crispedit_lite.editing.updates.closed_form`) are the only difference.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from crispedit_lite.editing.loops.covariance import input_second_moment
from crispedit_lite.editing.loops.keys_values import (
    ValueSettings,
    compute_keys,
    compute_targets,
    context_templates,
    layer_outputs,
)
from crispedit_lite.editing.loops.sequential import ChunkState, chunk_requests
from crispedit_lite.editing.precision import RoundingLog
from crispedit_lite.editing.registry import EditJob
from crispedit_lite.editing.result import EditResult

__all__ = ["Solver", "SolverFactory", "closed_form_settings", "edit_layers", "run_closed_form"]

# the preset of a model without an entry of its own: the paper's main model (LLaMA-3-8B)
_FALLBACK_PRESET = "meta-llama/Meta-Llama-3-8B-Instruct"


def _pick(value: Any, default: Any) -> Any:
    return default if value is None else value


def closed_form_settings(job: EditJob, method: str) -> dict[str, Any]:
    r"""Resolve the layers, :math:`\lambda`, null-space rule and value settings of a closed-form run.

    ``config.layers`` (or the layers of the editor's preset for the model, ``Editor.presets``, when it
    is ``None``), then the settings ``cf_*`` over the preset's values (LLaMA-3-8B's for a model without
    a preset). ``method`` (``"memit"`` or ``"alphaedit"``) picks the preset's value optimisation.

    Listed on the book page ``api``.
    """
    from crispedit_lite.editing.registry import get_editor
    from crispedit_lite.models.presets import resolve_edit_modules

    cfg, s = job.config, job.config.settings
    editor = get_editor(cfg.method)
    found = editor.preset(job.model)
    preset = None if found is None else found[1]
    if cfg.layers is None and preset is None:
        raise ValueError(f"method {cfg.method!r}: no CLOSED_FORM_PRESETS entry for this model (presets: "
                         f"{sorted(editor.presets)}); pass layers=[...] in the EditConfig")
    layers = sorted(cfg.layers if cfg.layers is not None else preset["layers"])
    if "{i}" not in cfg.module_pattern or ".{i}." not in cfg.module_pattern:
        raise ValueError(f"module_pattern {cfg.module_pattern!r} must look like 'model.layers.{{i}}.mlp."
                         f"down_proj' (the block is the part up to '.{{i}}')")
    block = cfg.module_pattern.split(".{i}.")[0] + ".{i}"
    fallback = editor.presets[_FALLBACK_PRESET]
    base = {**fallback, **(preset or {})}
    z = base.get(method, fallback[method])
    value = ValueSettings(lr=_pick(s.cf_v_lr, z["v_lr"]), steps=int(_pick(s.cf_v_steps, z["v_steps"])),
                          weight_decay=_pick(s.cf_v_weight_decay, z["v_weight_decay"]),
                          clamp_norm=_pick(s.cf_clamp_norm, z["clamp_norm"]),
                          kl_factor=_pick(s.cf_kl_factor, z["kl_factor"]))
    return {
        "layers": layers, "modules": resolve_edit_modules(job.model, cfg.module_pattern, layers),
        "top_block": block.format(i=layers[-1]),
        "lambda": float(_pick(s.cf_lambda, base["lambda"])),
        "l2": float(s.cf_l2), "nullspace_rule": s.cf_nullspace_rule,
        "nullspace_threshold": float(_pick(s.cf_nullspace_threshold, base["nullspace_threshold"])),
        "nullspace_gamma": float(_pick(s.cf_nullspace_gamma, cfg.gamma)),
        "value": value, "preset": "CLOSED_FORM_PRESETS" if cfg.layers is None else "config.layers",
        "templates": s.cf_templates, "covariance": s.cf_covariance,
        "template_seed": int(_pick(s.cf_template_seed, cfg.seed))}


Solver = Callable[[str, Tensor, Tensor, Tensor | None], Tensor]


def _norms(z: Tensor, h: Tensor) -> dict[str, float]:
    r = (z - h).norm(dim=1)
    return {"mean": round(float(r.mean()), 4), "max": round(float(r.max()), 4),
            "relative_mean": round(float((r / h.norm(dim=1)).mean()), 4)}


def edit_layers(model: nn.Module, tokenizer: Any, requests: Sequence[Any], modules: Sequence[str],
                top: str, templates: Sequence[Sequence[str]], z: Tensor, solve: Solver, *,
                cache: dict[str, Tensor] | None = None, cache_keys: str = "solve",
                timings: dict[str, float] | None = None, bar: Any = None,
                rounding: RoundingLog | None = None) -> None:
    r"""One batch through the layer loop: ascending layers, :math:`W_{l_i} \mathrel{+}= \Delta_i` in place.

    At layer :math:`i` the keys and :math:`h^L` are recomputed on the partially edited model and
    ``solve(module, R, K, cache)`` gets :math:`R=(z-h^L)/(n-i)`. ``cache`` (sequential editing) is
    updated with :math:`KK^\top` of the keys each solve used (``cache_keys="solve"``, MEMIT-Seq) or of
    keys recomputed after the whole batch (``"after"``, AlphaEdit-Seq). ``rounding`` measures what
    each update loses to the weights' precision before it is added.

    Listed on the book page ``api``.
    """
    timings = {} if timings is None else timings
    for i, m in enumerate(modules):
        t = time.perf_counter()
        K = compute_keys(model, tokenizer, requests, m, templates).T  # (d_in, u)
        cur = layer_outputs(model, tokenizer, requests, top)  # h^L on the partially edited model
        timings["keys_s"] = timings.get("keys_s", 0.0) + time.perf_counter() - t
        t = time.perf_counter()
        weight = model.get_submodule(m).weight
        delta = solve(m, ((z - cur).T / (len(modules) - i)).to(K.device), K,
                      None if cache is None else cache[m])
        if rounding is not None:
            rounding.measure(m, weight, delta)
        with torch.no_grad():
            weight.add_(delta.to(weight.device, weight.dtype))
        if cache is not None and cache_keys == "solve":
            cache[m] += K @ K.T  # the keys this solve used
        timings["solve_s"] = timings.get("solve_s", 0.0) + time.perf_counter() - t
        if bar is not None:
            bar.update(1)
    if cache is not None and cache_keys == "after":
        t = time.perf_counter()
        for m in modules:  # AlphaEdit: keys recomputed on the updated model
            K = compute_keys(model, tokenizer, requests, m, templates).T
            cache[m] += K @ K.T
        timings["keys_s"] = timings.get("keys_s", 0.0) + time.perf_counter() - t


SolverFactory = Callable[[dict[str, Tensor], dict[str, Any]], tuple[Solver, dict[str, Any]]]


def run_closed_form(job: EditJob, method: str, sequential: bool, make_solver: SolverFactory, *,
                    cache_keys: str, describe: Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]],
                    accumulate: bool | None = None) -> EditResult:
    r"""The closed-form layer loop of MEMIT and AlphaEdit, batch or chunk by chunk.

    ``make_solver(C, settings)`` builds the editor's per-layer solve from the covariances ``C`` and
    returns ``(solve, projector_stats)``; ``cache_keys`` is :func:`edit_layers`'s; ``describe(settings,
    projector_stats)`` gives the editor's own entries of ``details``. ``method`` (``"memit"`` or
    ``"alphaedit"``) picks the preset's value optimisation (:func:`closed_form_settings`).
    ``sequential`` walks the chunks of ``chunk_requests``; ``accumulate`` (default: ``sequential``)
    carries the cache :math:`\sum_p K_pK_p^\top` of earlier chunks into every later solve. Without it
    each chunk is a fresh batch edit of the model the earlier chunks left (MEMIT as EasyEdit's batch
    editing applies it chunk after chunk). ``job.after_chunk`` (editors with ``chunk_hook``) is called
    after every chunk with a :class:`~crispedit_lite.editing.loops.sequential.ChunkState` whose ``log``
    is the chunk's entry of ``details["chunks"]``. A sequential run with ``job.carry`` starts from the
    key cache and the context templates (drawn from the unedited model) of earlier calls and hands its
    own on.

    Listed on the book page ``api``.
    """
    cfg, model, tok = job.config, job.model, job.tokenizer
    start = time.perf_counter()
    s = closed_form_settings(job, method)
    modules, top = s["modules"], s["top_block"]
    for p in model.parameters():
        p.requires_grad_(False)
    weights = {m: model.get_submodule(m).weight for m in modules}
    original = {f"{m}.weight": w.detach().to("cpu", copy=True) for m, w in weights.items()}
    # a stream continued over calls (job.carry) keeps the statistics of the model it started from
    carried = job.carry.get("covariance") if sequential and job.carry is not None else None
    if carried is not None:
        C, info, source = ({m: c.to(weights[m].device) for m, c in carried["C"].items()}, carried["info"],
                           carried["source"])
    else:
        if s["covariance"] == "every_token":  # MEMIT's layer_stats: every position of the same texts
            if not job.capability_texts:
                raise ValueError(f"method {cfg.method!r} needs capability_texts for its covariance")
            moments, info = input_second_moment(model, tok, modules, job.capability_texts,
                                                max_length=cfg.capability_max_length, progress=job.progress)
            source = "every non-padding position of the capability texts (MEMIT's layer_stats)"
        else:
            factors, info = job.capability_factors(modules)
            moments = {m: factors[m].A for m in modules}
            source = ("K-FAC input factor A (count-normalised E[k k^T] over the positions with a next-token "
                      "label: each text's last token is not counted)")
        # C at the cache's float32 precision, so that a first run and a cache hit give the same edit
        C = {m: moments[m].to(weights[m].device, torch.float32).double() for m in modules}
    timings = {"kfac_s": 0.0 if carried is not None else float(info["seconds"]), "targets_s": 0.0,
               "keys_s": 0.0, "solve_s": 0.0}
    d_in = next(iter(C.values())).shape[0]
    if int(info["n_tokens"]) < d_in:
        warnings.warn(f"{cfg.method}: the covariance has {info['n_tokens']} tokens for d_in = {d_in}; it is "
                      f"rank deficient and the solve ill posed (use more capability text)", stacklevel=2)
    t = time.perf_counter()
    solve, projector_stats = make_solver(C, s)
    timings["projector_s"] = time.perf_counter() - t
    sampled = s["templates"] == "sampled"
    templates = context_templates(model, tok, sampling="top_k" if sampled else "greedy",
                                  seed=s["template_seed"])
    chunks = chunk_requests(list(job.requests), cfg.chunk_size, cfg.seed) if sequential \
        else [list(job.requests)]
    accumulate = sequential if accumulate is None else accumulate
    cache = {m: torch.zeros_like(C[m]) for m in modules} if sequential and accumulate else None
    carry, done = job.carry, 0
    if sequential and carry is not None:  # the keys of earlier calls, the templates of the first
        done = int(carry.get("chunks_done", 0))
        cache = carry.get("cache", cache)
        templates = carry.get("templates", templates)
    per_chunk, rounding = [], RoundingLog(cfg.method)
    bar = tqdm(total=len(chunks) * len(modules), desc=cfg.method, disable=not job.progress)
    for k, chunk in enumerate(chunks):
        t = time.perf_counter()
        z, zinfo = compute_targets(model, tok, chunk, top, templates, s["value"])
        timings["targets_s"] += time.perf_counter() - t
        before = _norms(z, layer_outputs(model, tok, chunk, top))
        edit_layers(model, tok, chunk, modules, top, templates, z, solve, cache=cache,
                    cache_keys=cache_keys, timings=timings, bar=bar, rounding=rounding)
        after = _norms(z, layer_outputs(model, tok, chunk, top))
        per_chunk.append({"chunk": done + k, "n_edits": len(chunk), "residual_before": before,
                          "residual_after": after, "value_optimisation": zinfo})
        if job.after_chunk is not None:  # observe only: the model as this chunk left it
            t = time.perf_counter()
            job.after_chunk(k, chunk, ChunkState(index=k, n_chunks=len(chunks), model=model,
                                                 log=per_chunk[-1]))
            timings["after_chunk_s"] = timings.get("after_chunk_s", 0.0) + time.perf_counter() - t
    bar.close()
    if sequential and carry is not None:
        carry.update(chunks_done=done + len(chunks), cache=cache, templates=templates,
                     covariance={"C": C, "info": info, "source": source})
    timings["total_s"] = time.perf_counter() - start
    details = {
        "method": method, "layers": s["layers"], "top_block": top, "preset": s["preset"],
        **describe(s, projector_stats),
        "value": asdict(s["value"]), "context_templates": templates,
        "template_decoding": f"top-5 sampling, seed {s['template_seed']}" if sampled else "greedy",
        "covariance": {"source": source, "tokens": s["covariance"], "n_tokens": int(info["n_tokens"]),
                       "n_texts": len(job.capability_texts or ()),
                       "max_length": cfg.capability_max_length, "cache_hit": bool(info["hit"])},
        "chunks": per_chunk, "precision": rounding.summary(),
        "schedule": {"batch_size": cfg.chunk_size if sequential else len(job.requests),
                     "n_chunks": len(chunks), "order_seed": cfg.seed if sequential else None,
                     "chunks_before": done,
                     "sequential": sequential, "evaluated": "once, after the last chunk",
                     **({"cache": "sum of earlier chunks' K K^T" if cache is not None else None}
                        if sequential else {})},
    }
    return EditResult(config=cfg, modules=list(modules), logs=[], timings=timings,
                      projector_stats=projector_stats, capability=info,
                      statistics=["input_covariance"], details=details, original=original)
