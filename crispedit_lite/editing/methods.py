r"""The editing methods: CrispEdit, CrispEdit-Seq, and the baselines FT, LocBF-FT, LoRA, Adam-NSCL.

All share one FT-M loop (:func:`~crispedit_lite.editing.trainer.train_edits`) and differ only in
which matrices they train and how gradients are projected:

=============== ======================================= ==========================================
method          trained matrices                        gradient
=============== ======================================= ==========================================
``crispedit``   ``down_proj`` of the edited layers      :math:`\mathbf P_\gamma` of K-FAC (A, S)
``crispedit_seq`` same, in chunks (Alg. 2)              same; edit factors merged after each chunk
``ft``          ``down_proj`` of the edited layers      unprojected
``locbf_ft``    one ``down_proj``                       unprojected, per-sample loss
``lora``        AdaLoRA adapters on ``q_proj``/``v_proj`` unprojected (merged after training)
``adam_nscl``   ``down_proj`` of the edited layers      null space of the inputs (S = I)
=============== ======================================= ==========================================

Methods edit the model **in memory**; :class:`EditResult` keeps the original weights so that
:meth:`EditResult.restore` undoes an edit, and nothing is ever written over a model on disk.

Derived in notebooks ``06_crispedit_on_a_small_lm``, ``07_sequential_editing`` and ``08_one_framework``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from crispedit_lite.editing.config import EditConfig
from crispedit_lite.editing.kfac_cache import build_projectors, capability_factors
from crispedit_lite.editing.trainer import TrainLog, train_edits
from crispedit_lite.kfac import collect_kfac, merge_kfac
from crispedit_lite.optim import ProjectedAdam, ProjectedSGD

__all__ = ["EditResult", "edit"]


@dataclass
class EditResult:
    """What an edit did: settings, trained modules, training logs, projector stats, timings."""

    config: EditConfig
    modules: list[str]
    logs: list[TrainLog]
    timings: dict[str, float]
    projector_stats: dict[str, Any] = field(default_factory=dict)
    capability: dict[str, Any] = field(default_factory=dict)
    original: dict[str, Tensor] = field(default_factory=dict, repr=False)

    def restore(self, model: nn.Module) -> None:
        """Put the pre-edit weights back (undo the edit in memory)."""
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, w in self.original.items():
                params[name].copy_(w.to(params[name].device, params[name].dtype))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no tensors)."""
        return {"config": self.config.to_dict(), "modules": self.modules,
                "train": [log.to_dict() for log in self.logs],
                "timings": {k: round(v, 3) for k, v in self.timings.items()},
                "projectors": self.projector_stats, "capability": self.capability}


def _select(model: nn.Module, modules: Sequence[str]) -> tuple[list[nn.Parameter], dict[str, Tensor]]:
    """Freeze everything except the weights of ``modules``; remember their original values."""
    for p in model.parameters():
        p.requires_grad_(False)
    params, original = [], {}
    for name in modules:
        w = model.get_submodule(name).weight
        w.requires_grad_(True)
        params.append(w)
        original[f"{name}.weight"] = w.detach().to("cpu", copy=True)
    return params, original


def _eigh_dtype(config: EditConfig) -> torch.dtype:
    return torch.float64 if config.eigh_dtype == "float64" else torch.float32


def _optimizer(config: EditConfig, params: list[nn.Parameter], projectors: dict) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return ProjectedSGD(params, projectors, lr=config.lr)
    return ProjectedAdam(params, projectors, lr=config.lr, project_update=config.project_update)


def edit(
    model: nn.Module,
    tokenizer: Any,
    requests: Sequence[Any],
    config: EditConfig,
    *,
    capability_texts: Sequence[str] | None = None,
    cache_dir: str | None = None,
    progress: bool = True,
) -> EditResult:
    """Apply ``config.method`` to ``model`` (in memory) on the edit ``requests``.

    Args:
        model, tokenizer: from :func:`crispedit_lite.models.load_model` (right padding).
        requests: :class:`crispedit_lite.data.EditRequest` records.
        config: the method and its settings (:func:`paper_config`, :func:`cpu_config`).
        capability_texts: the capability corpus for K-FAC (``crispedit``, ``crispedit_seq``,
            ``adam_nscl``); its factors are cached under ``cache_dir``.
        progress: tqdm bars.

    Derived in notebook ``06_crispedit_on_a_small_lm``.
    """
    from crispedit_lite.batches import tokenize_edits
    from crispedit_lite.models import resolve_edit_modules

    if len(requests) == 0:
        raise ValueError("no edit requests")
    layers = list(config.layers) if config.layers is not None else None
    modules = resolve_edit_modules(model, config.module_pattern, layers)
    if config.method == "locbf_ft":
        modules = [modules[-2] if len(modules) > 1 else modules[0]] if config.locbf_layer is None \
            else resolve_edit_modules(model, config.module_pattern, [config.locbf_layer])

    def collate(batch: Sequence[Any]) -> dict[str, Tensor]:
        return tokenize_edits(batch, tokenizer)

    timings: dict[str, float] = {}
    start = time.perf_counter()
    if config.method == "lora":
        result = _lora(model, requests, collate, config, layers, progress)
        result.timings["total_s"] = time.perf_counter() - start
        return result
    params, original = _select(model, modules)
    stats: dict[str, Any] = {}
    cap_info: dict[str, Any] = {}
    projectors: dict = {}
    factors = None
    if config.method in ("crispedit", "crispedit_seq", "adam_nscl"):
        if not capability_texts:
            raise ValueError(f"method {config.method!r} needs capability_texts for K-FAC")
        factors, cap_info = capability_factors(
            model, tokenizer, modules, capability_texts, max_length=config.capability_max_length,
            labels=config.kfac_labels, seed=config.seed, cache_dir=cache_dir, progress=progress)
        timings["kfac_s"] = cap_info["seconds"]
        t = time.perf_counter()
        kind = "input" if config.method == "adam_nscl" else "kronecker"
        gamma = config.nscl_gamma if config.method == "adam_nscl" else config.gamma
        projectors, stats = build_projectors(model, factors, gamma, kind=kind, rule=config.rule,
                                             eigh_dtype=_eigh_dtype(config))
        timings["eigh_s"] = time.perf_counter() - t
    early = config.nscl_early_stop if config.method == "adam_nscl" else config.early_stop
    opt = _optimizer(config, params, projectors)
    if config.method == "crispedit_seq":
        logs, stats, seq_timings = _sequential(model, tokenizer, requests, collate, config, modules,
                                               opt, factors, progress)
        timings.update(seq_timings)
    else:
        logs = [train_edits(model, requests, collate, opt, epochs=config.epochs,
                            batch_size=config.batch_size, early_stop=early, seed=config.seed,
                            per_sample=config.method == "locbf_ft", progress=progress,
                            desc=config.method)]
        timings["train_s"] = logs[0].seconds
    for p in model.parameters():
        p.requires_grad_(False)
    timings["total_s"] = time.perf_counter() - start
    return EditResult(config=config, modules=modules, logs=logs, timings=timings,
                      projector_stats=stats, capability=cap_info, original=original)


def _sequential(model, tokenizer, requests, collate, config, modules, opt, cap_factors, progress):
    """CrispEdit-Seq (Alg. 2): chunks; after each, merge the chunk's K-FAC and rebuild projectors."""
    from crispedit_lite.batches import edit_kfac_batches

    gen = torch.Generator().manual_seed(config.seed)
    order = torch.randperm(len(requests), generator=gen).tolist()
    chunks = [[requests[i] for i in order[c:c + config.chunk_size]]
              for c in range(0, len(order), config.chunk_size)]
    running, logs, per_chunk = cap_factors, [], []
    timings = {"train_s": 0.0, "edit_kfac_s": 0.0, "eigh_s": 0.0}
    stats: dict[str, Any] = {}
    for k, chunk in enumerate(chunks):
        t = time.perf_counter()
        projectors, stats = build_projectors(model, running, config.gamma, rule=config.rule,
                                             eigh_dtype=_eigh_dtype(config))
        opt.projectors = projectors
        for p, proj in projectors.items():  # keep Adam's momentum inside the new subspace
            state = opt.state.get(p, {})
            if "exp_avg" in state:
                state["exp_avg"].copy_(proj.project(state["exp_avg"]))
        timings["eigh_s"] += time.perf_counter() - t
        log = train_edits(model, chunk, collate, opt, epochs=config.epochs,
                          batch_size=config.batch_size, early_stop=config.early_stop,
                          seed=config.seed + k, reshuffle=config.seq_reshuffle, progress=progress,
                          desc=f"chunk {k + 1}/{len(chunks)}")
        logs.append(log)
        timings["train_s"] += log.seconds
        t = time.perf_counter()
        # the chunk's K-FAC on full prompt + target text (no prompt masking: paper Table 6)
        batches = edit_kfac_batches(chunk, tokenizer, batch_size=8,
                                    max_length=config.capability_max_length)
        for p in model.parameters():
            p.requires_grad_(False)
        edit_f = collect_kfac(model, modules, batches, labels=config.kfac_labels, seed=config.seed,
                              progress=False)
        for name in modules:
            model.get_submodule(name).weight.requires_grad_(True)
        running = merge_kfac([running, edit_f])  # token-weighted streaming average
        timings["edit_kfac_s"] += time.perf_counter() - t
        per_chunk.append({name: s["editable_fraction"] for name, s in stats.items()})
    return logs, {"final": stats, "editable_fraction_per_chunk": per_chunk}, timings


class _AdaLoraOptimizer(torch.optim.Adam):
    """Adam that also runs AdaLoRA's rank allocation after every step."""

    def __init__(self, params, peft_model, lr):
        super().__init__(params, lr=lr)
        self.peft_model, self.global_step = peft_model, 0

    def step(self, closure=None):  # noqa: D102
        loss = super().step(closure)
        self.global_step += 1
        self.peft_model.base_model.update_and_allocate(self.global_step)
        return loss


def _lora(model, requests, collate, config, layers, progress) -> EditResult:
    """AdaLoRA on q/v projections of the edited layers (the paper's LoRA baseline), then merged."""
    from peft import AdaLoraConfig, get_peft_model

    from crispedit_lite.models import default_layers

    layers = layers if layers is not None else default_layers(model)
    targets = [f"model.layers.{i}.self_attn.{t}" for i in layers for t in config.lora_targets]
    original = {f"{n}.weight": model.get_submodule(n).weight.detach().to("cpu", copy=True)
                for n in targets}
    for p in model.parameters():
        p.requires_grad_(False)
    steps = config.epochs * math.ceil(len(requests) / config.batch_size)
    # AdaLoRA starts at peft's default init_r = 12 and prunes to target_r = 8 (EasyEdit's setup)
    lcfg = AdaLoraConfig(init_r=max(12, config.lora_rank + 1), target_r=config.lora_rank,
                         lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                         target_modules=list(config.lora_targets), layers_to_transform=layers,
                         total_step=max(steps, 2), tinit=0, tfinal=0)
    peft_model = get_peft_model(model, lcfg)
    trainable = [p for p in peft_model.parameters() if p.requires_grad]
    opt = _AdaLoraOptimizer(trainable, peft_model, config.lr)
    log = train_edits(peft_model, requests, collate, opt, epochs=config.epochs,
                      batch_size=config.batch_size, early_stop=config.early_stop, seed=config.seed,
                      progress=progress, desc="lora")
    peft_model.merge_and_unload()
    for p in model.parameters():
        p.requires_grad_(False)
    return EditResult(config=config, modules=targets, logs=[log], timings={"train_s": log.seconds},
                      original=original)
