r"""UltraEdit (Gu et al., TMLR 2026, arXiv 2505.14679): lifelong closed-form edits of the MLP input side.

For every chunk of edits (a *turn*, the chunks of
:func:`~crispedit_lite.editing.loops.sequential.chunk_requests`, so UltraEdit walks CrispEdit-Seq's
order), UltraEdit

1. runs the unedited-in-this-turn model on the edits in passes of ``ultra_batch_size`` and records,
   for every edited module and every position that predicts a target token (``ultra_token="ans"``),
   the module input :math:`\mathbf k_t` and the gradient :math:`\mathbf g_t` of the pass's mean
   target cross-entropy with respect to the module output;
2. merges the features :math:`[\mathbf k_t\Vert\mathbf g_t]` into the lifelong normaliser (one per
   weight shape, as the official code shares it);
3. solves :math:`\Delta^\top=(\mathbf K^\top\mathbf K+\lambda\mathbf I)^{-1}\mathbf K^\top\mathbf V`
   with the pseudo-values :math:`\mathbf v_t=-\eta\lVert\hat{\mathbf k}_t\rVert^2\hat{\mathbf g}_t`
   (:mod:`crispedit_lite.editing.updates.ultraedit`), in float64, for every module, and only then adds
   every :math:`\Delta` to its weight.

The edited modules are not CrispEdit's ``down_proj``: the official configurations edit ``gate_proj``
and ``up_proj`` (:data:`ULTRA_PRESETS`). Gradients come from the model's own forward pass, so tied
embeddings (SmolLM2, Qwen-2.5-1.5B) and decoder layers that return a tensor rather than a tuple need
no special case: only the edited ``nn.Linear`` modules are hooked. Derived in notebook
``06_crispedit_on_a_small_lm``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from crispedit_lite.editing.precision import RoundingLog
from crispedit_lite.editing.registry import EditJob, Editor
from crispedit_lite.editing.result import EditResult
from crispedit_lite.editing.settings import EditorSettings, check
from crispedit_lite.editing.updates.ultraedit import LifelongNormalizer, pseudo_values, ridge_solve

__all__ = ["EDITORS", "ULTRA_PRESETS", "UltraEditSettings", "collect_features", "run", "ultra_modules",
           "ultra_preset"]

_GATE, _UP = "model.layers.{i}.mlp.gate_proj", "model.layers.{i}.mlp.up_proj"

# Edited modules per model, keyed by preset name, with the shape that identifies the architecture
# (model_type, num_hidden_layers, hidden_size, intermediate_size), as models.LAYER_PRESETS.
# * LLaMA-3-8B(-Instruct): the official configuration for ZsRE / WikiBigEdit / UltraEditBench,
#   gate_proj of layers 11-15 and up_proj of layers 18-24 (12 matrices of one shape).
# * Qwen-2.5-7B-Instruct: the official configuration, gate_proj and up_proj of layers 18-26.
# * Qwen-2.5-1.5B-Instruct (28 layers, like 7B; no official configuration): the 7B layers, which
#   sit at the same relative depth.
# * SmolLM2-135M (30 layers; this project's choice): LLaMA-3-8B's relative depths scaled from 32
#   to 30 layers, gate_proj 11/32..15/32 -> 10-14 and up_proj 18/32..24/32 -> 17-23.
ULTRA_PRESETS: dict[str, dict[str, Any]] = {
    "meta-llama/Meta-Llama-3-8B-Instruct": {
        "shape": ("llama", 32, 4096, 14336),
        "modules": {_GATE: tuple(range(11, 16)), _UP: tuple(range(18, 25))}},
    "Qwen/Qwen2.5-7B-Instruct": {
        "shape": ("qwen2", 28, 3584, 18944),
        "modules": {_GATE: tuple(range(18, 27)), _UP: tuple(range(18, 27))}},
    "Qwen/Qwen2.5-1.5B-Instruct": {
        "shape": ("qwen2", 28, 1536, 8960),
        "modules": {_GATE: tuple(range(18, 27)), _UP: tuple(range(18, 27))}},
    "smollm2-135m-instruct": {
        "shape": ("llama", 30, 576, 1536),
        "modules": {_GATE: tuple(range(10, 15)), _UP: tuple(range(17, 24))}},
}


@dataclass(frozen=True)
class UltraEditSettings(EditorSettings):
    """UltraEdit's own settings (``ultra_*``; ``paper``: the official code's values).

    Attributes:
        ultra_modules: the edited modules: ``"preset"`` (the official per-model ``gate_proj`` /
            ``up_proj`` layers of :data:`ULTRA_PRESETS`) or ``"pattern"`` (``module_pattern`` over
            ``layers``).
        ultra_lr: the step size eta of the pseudo-values, > 0 (official: 1e-6).
        ultra_lambda: the ridge weight lambda, > 0 (official: 1, the identity).
        ultra_batch_size: edits per forward/backward pass when keys and value gradients are collected
            (official: 10); the loss is the mean over that pass's target tokens.
        ultra_token: the positions: ``"ans"`` (official: those that predict target tokens) or
            ``"all"`` (every real token, EasyEdit's ``token: mask``).
        ultra_normalizer: one lifelong normaliser per weight ``"shape"`` (official: modules of equal
            shape share it) or per ``"module"``.
        ultra_variance: ``"exact"`` (streaming equals one-shot statistics) or ``"official"``.

    Described on the book page ``ultraedit`` and on the book page ``running``.
    """

    ultra_modules: Literal["preset", "pattern"] = "preset"
    ultra_lr: float = 1e-6
    ultra_lambda: float = 1.0
    ultra_batch_size: int = 10
    ultra_token: Literal["ans", "all"] = "ans"
    ultra_normalizer: Literal["shape", "module"] = "shape"
    ultra_variance: Literal["exact", "official"] = "exact"
    paper: ClassVar[dict[str, Any]] = {
        "ultra_modules": "preset", "ultra_lr": 1e-6, "ultra_lambda": 1.0, "ultra_batch_size": 10,
        "ultra_token": "ans", "ultra_normalizer": "shape", "ultra_variance": "official"}

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("ultra_lr", "ultra_lambda", "ultra_batch_size"):
            check(getattr(self, name) > 0, name, "positive", getattr(self, name))


def ultra_preset(model: nn.Module) -> tuple[str, dict[str, tuple[int, ...]]]:
    """The UltraEdit preset of ``model``, recognised by its shape: ``(name, {pattern: layers})``.

    Listed on the book page ``api``.
    """
    found = EDITORS[0].preset(model)
    if found is not None:
        return found[0], dict(found[1]["modules"])
    from crispedit_lite.models.presets import _model_shape

    shape = _model_shape(model)
    raise ValueError(
        f"no UltraEdit module preset for a model of shape {shape} (model_type, layers, hidden, "
        f"intermediate); set ultra_modules='pattern' with module_pattern and layers. Presets: "
        f"{sorted(ULTRA_PRESETS)}")


def ultra_modules(job: EditJob) -> tuple[list[str], str]:
    """The modules UltraEdit edits and where they came from (the preset's name, or ``"pattern"``).

    Listed on the book page ``api``.
    """
    from crispedit_lite.models import resolve_edit_modules

    if job.config.settings.ultra_modules == "pattern":
        return list(job.modules), "pattern"
    name, table = ultra_preset(job.model)
    modules = [m for pattern, layers in table.items()
               for m in resolve_edit_modules(job.model, pattern, list(layers))]
    return modules, name


def _positions(batch: dict[str, Tensor], token: str) -> Tensor:
    """Boolean ``(batch, length)`` mask of the positions whose features UltraEdit records."""
    if token == "all":
        return batch["attention_mask"].bool()
    labels = batch["labels"]
    mask = torch.zeros_like(labels, dtype=torch.bool)
    mask[:, :-1] = labels[:, 1:] != -100  # the positions that predict a target token
    return mask


def collect_features(model: nn.Module, batch: dict[str, Tensor], modules: Sequence[str],
                     token: str = "ans") -> dict[str, tuple[Tensor, Tensor]]:
    r"""Keys :math:`\mathbf K` and value gradients :math:`\mathbf G` of ``modules`` on one edit batch.

    One forward pass with a hook on every module; the loss is the mean cross-entropy of the batch's
    target tokens (:func:`~crispedit_lite.editing.loops.trainer.ft_m_loss`) and
    :math:`\mathbf g_t=\partial\mathcal L/\partial\mathbf s_t` comes from ``torch.autograd.grad``
    (no ``.grad`` is left behind). Returns ``{module: (K, G)}``, float64 on the model's device, one
    row per recorded position.

    Listed on the book page ``api``.
    """
    from crispedit_lite.editing.loops.trainer import ft_m_loss

    if token not in ("ans", "all"):
        raise ValueError(f"token must be 'ans' or 'all', got {token!r}")
    mods = {name: model.get_submodule(name) for name in modules}
    for name, mod in mods.items():
        if not isinstance(mod, nn.Linear):
            raise ValueError(f"module {name!r} is a {type(mod).__name__}, UltraEdit edits nn.Linear")
    keys: dict[str, Tensor] = {}
    outs: dict[str, Tensor] = {}

    def hook(name: str):
        def fn(_mod: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
            keys[name], outs[name] = inputs[0].detach(), output
        return fn

    flags = {name: mod.weight.requires_grad for name, mod in mods.items()}
    handles = [mod.register_forward_hook(hook(name)) for name, mod in mods.items()]
    try:
        for mod in mods.values():  # puts the modules' outputs on the autograd graph
            mod.weight.requires_grad_(True)
        with torch.enable_grad():
            loss = ft_m_loss(model, batch)
            grads = torch.autograd.grad(loss, [outs[name] for name in modules])
    finally:
        for h in handles:
            h.remove()
        for name, mod in mods.items():
            mod.weight.requires_grad_(flags[name])
    mask = _positions(batch, token).to(grads[0].device)
    return {name: (keys[name][mask].to(torch.float64), g[mask].to(torch.float64))
            for name, g in zip(modules, grads, strict=True)}


def run(job: EditJob) -> EditResult:
    """UltraEdit on ``job``, turn by turn over the chunks of ``chunk_requests`` (see module docstring).

    With ``job.carry`` the lifelong normalisers of earlier calls are continued and handed on.

    Described on the book page ``ultraedit``.
    """
    from tqdm.auto import tqdm

    from crispedit_lite.editing.loops.sequential import chunk_requests

    cfg, s, model = job.config, job.config.settings, job.model
    start = time.perf_counter()
    modules, source = ultra_modules(job)
    weights = {name: model.get_submodule(name).weight for name in modules}
    original = {f"{name}.weight": w.detach().to("cpu", copy=True) for name, w in weights.items()}
    chunks = chunk_requests(list(job.requests), cfg.chunk_size, cfg.seed)
    carry = job.carry
    done = 0 if carry is None else int(carry.get("chunks_done", 0))
    # the lifelong statistics of earlier calls (a stream edited one chunk per call)
    normalizers: dict[str, LifelongNormalizer] = {} if carry is None else carry.get("normalizers", {})

    def normalizer(name: str) -> LifelongNormalizer:
        d_out, d_in = weights[name].shape
        key = f"{d_in}x{d_out}" if s.ultra_normalizer == "shape" else name
        if key not in normalizers:
            normalizers[key] = LifelongNormalizer(d_in + d_out, variance=s.ultra_variance)
        return normalizers[key]

    timings = {"collect_s": 0.0, "solve_s": 0.0}
    per_chunk: list[dict[str, Any]] = []
    rounding = RoundingLog(cfg.method)  # what the weights' precision loses of each turn's shift
    for k, chunk in enumerate(tqdm(chunks, desc="ultraedit turns", disable=not job.progress)):
        t = time.perf_counter()
        feats: dict[str, tuple[list[Tensor], list[Tensor]]] = {name: ([], []) for name in modules}
        for i in range(0, len(chunk), s.ultra_batch_size):
            got = collect_features(model, job.collate(chunk[i:i + s.ultra_batch_size]), modules,
                                   s.ultra_token)
            for name in modules:  # the official order: every pass, every module in turn
                K, G = got[name]
                normalizer(name).update(torch.cat([K, G], dim=1))
                feats[name][0].append(K)
                feats[name][1].append(G)
        timings["collect_s"] += time.perf_counter() - t
        t = time.perf_counter()
        deltas, fit, norms = {}, {}, {}
        for name in modules:  # every shift from the same model state, then all applied
            K, G = torch.cat(feats[name][0]), torch.cat(feats[name][1])
            V = pseudo_values(K, G, normalizer(name), s.ultra_lr)
            delta_t = ridge_solve(K, V, s.ultra_lambda)
            deltas[name] = delta_t.T
            fit[name] = float((K @ delta_t - V).norm() / V.norm().clamp_min(1e-300))
            norms[name] = float(delta_t.norm())
        for name, delta in deltas.items():
            w = weights[name]
            rounding.measure(name, w, delta)
            with torch.no_grad():
                w.add_(delta.to(w.device, w.dtype))
        timings["solve_s"] += time.perf_counter() - t
        per_chunk.append({"chunk": done + k, "n_edits": len(chunk), "n_rows": int(K.shape[0]),
                          "delta_norm": norms, "relative_fit_residual": fit})
    if carry is not None:
        carry.update(chunks_done=done + len(chunks), normalizers=normalizers)
    timings["total_s"] = time.perf_counter() - start
    details = {
        "modules_source": source, "lr": s.ultra_lr, "lambda": s.ultra_lambda,
        "pass_batch_size": s.ultra_batch_size, "token": s.ultra_token,
        "normalizer": s.ultra_normalizer, "variance": s.ultra_variance, "solve_dtype": "float64",
        "normalizer_rows": {key: norm.n for key, norm in normalizers.items()},
        "schedule": {"chunk_size": cfg.chunk_size, "n_chunks": len(chunks), "order_seed": cfg.seed,
                     "evaluated": "once, after the last chunk"},
        "per_chunk": per_chunk, "precision": rounding.summary(),
    }
    return EditResult(config=cfg, modules=modules, logs=[], timings=timings, statistics=[],
                      details=details, original=original)


EDITORS = (Editor(
    name="ultraedit", changes="gate_proj / up_proj of the preset layers (official UltraEdit)",
    statistics=(), update="closed_form", run=run, label="UltraEdit", color="#d55e00",
    settings=UltraEditSettings, presets=ULTRA_PRESETS, paper_row="UltraEdit",
    # the official row: EasyEdit edit.py --num_edits 32, hparams half: true (the model in float16)
    paper_run={"chunk_size": 32, "dtype": "float16", "differs": (
        "the update of UltraEdit's own repository (answer tokens, every edit of each chunk); the paper's "
        "run used EasyEdit's port, which takes every token position and three passes of 10 edits per "
        "chunk of 32, so 2 of every 32 edits are never applied (book page ultraedit)")},
    sequential=True,
    summary="lifelong-normalised gradient pseudo-values, ridge solve per turn (no statistics)"),)
