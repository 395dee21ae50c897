r"""MEND and MEND-Seq (Mitchell et al., ICLR 2022): one edit step from a trained editor network.

MEND runs the model once on the edit (prompt + target, prompt masked), records for every edited
``nn.Linear`` the token inputs :math:`\mathbf u_t` and output gradients :math:`\boldsymbol\delta_t` of
the mean target NLL, maps them with the trained editor network and adds
:math:`\Delta W_\ell=\alpha_\ell\sum_t\tilde{\boldsymbol\delta}_t\tilde{\mathbf u}_t^\top` to every
matrix at once (:mod:`crispedit_lite.editing.updates.mend`). No optimiser loop, no statistics: the
registry's ``update="learned"``.

* ``mend``: all requests of the job in one MEND step (the official ``data.n_edits`` batched edit);
  with one request this is the single-edit regime of the MEND paper.
* ``mend_seq``: the CrispEdit paper's Table 1 protocol (EasyEdit ``edit.py --num_edits 1
  --batch_edit False``): ``mend_edits_per_step`` requests per step (1, as the paper ran it) in the
  seeded order of :func:`~crispedit_lite.editing.loops.sequential.chunk_requests`, each step on the
  model the previous steps edited, nothing restored. The paper's row is ``mend``'s: its reproduce
  cells run the sequential form in steps of one edit (``paper_run``), as MEMIT's run its
  sequential form in batches of 32.

The edited matrices are ``gate_proj``, ``up_proj`` and ``down_proj`` of the **last three decoder
layers** (EasyEdit's ``hparams/MEND/llama3-8b.yaml``: layers 29-31 of LLaMA-3-8B's 32;
``qwen2.5-7b.yaml``: 25-27 of 28; SmolLM2-135M: 27-29 of 30; :data:`MEND_PRESETS`). Every MEND
setting lives in :class:`MendSettings` (``config.settings``). The editor network must have been
trained for the model (``python -m crispedit_lite.editing.mend_train``); the package ships one for
the embedded SmolLM2, pinned by SHA-256 (:data:`~crispedit_lite.editing.loops.mend.SHIPPED_EDITORS`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from crispedit_lite.editing.loops.mend import (
    SHIPPED_EDITORS,
    collect_factors,
    editor_file,
    editor_shapes,
    file_sha256,
    load_editor,
    target_nll,
)
from crispedit_lite.editing.registry import EditJob, Editor
from crispedit_lite.editing.result import EditResult
from crispedit_lite.editing.settings import EditorSettings, check
from crispedit_lite.editing.updates.mend import MendNetwork
from crispedit_lite.models.presets import ARCHITECTURES, LLAMA3_8B, QWEN2_5_1_5B, QWEN2_5_7B

__all__ = ["EDITORS", "EDIT_TIME", "MEND_PRESETS", "MEND_PROJECTIONS", "SHIPPED_EDITORS", "MendSettings",
           "check_editor", "mend_modules", "run", "run_seq"]

MEND_PROJECTIONS = ("gate_proj", "up_proj", "down_proj")


def _last_three(n_layers: int) -> dict[str, tuple[int, ...]]:
    """``{pattern: layers}``: the three MLP projections of the last three of ``n_layers`` layers."""
    return {f"model.layers.{{i}}.mlp.{p}": tuple(range(n_layers - 3, n_layers)) for p in MEND_PROJECTIONS}


#: The edited matrices per model, keyed by preset name, with the shape that identifies it (as
#: ``ULTRA_PRESETS``): EasyEdit's rule, the last three decoder layers, for the paper's models and the
#: embedded SmolLM2 (LLaMA-3-8B 29-31, Qwen-2.5 25-27, SmolLM2 27-29). Another model gets the same rule.
MEND_PRESETS: dict[str, dict[str, Any]] = {
    name: {"shape": ARCHITECTURES[name], "modules": _last_three(ARCHITECTURES[name][1])}
    for name in (LLAMA3_8B, QWEN2_5_1_5B, QWEN2_5_7B, "smollm2-135m-instruct")}

#: The settings an edit reads; the others configure the network and its training
#: (``python -m crispedit_lite.editing.mend_train``), and an edit takes the network from its file.
EDIT_TIME = ("mend_editor", "mend_editor_sha256", "mend_modules", "mend_edits_per_step", "mend_lr_scale")


@dataclass(frozen=True)
class MendSettings(EditorSettings):
    """MEND's settings (``mend_*``; ``paper``: the official ``config/alg/mend.yaml``, ``config/config.yaml``).

    Editing (:data:`EDIT_TIME`): ``mend_editor`` (a trained editor file, looked up from the working
    directory and then its parents when relative; or ``"shipped"``: the package's editor for the
    model), ``mend_editor_sha256`` (pin a file's digest; checked before it is read), ``mend_modules``
    (``"preset"``: the last three layers' gate/up/down_proj; ``"pattern"``: ``module_pattern`` over
    ``layers``), ``mend_edits_per_step`` (MEND-Seq: requests per step, 1 as the paper ran it),
    ``mend_lr_scale`` (EasyEdit's factor on the learned step sizes at edit time, 1).
    Network: ``mend_n_hidden`` 1, ``mend_rank`` 1920, ``mend_init`` ``"id"``, ``mend_norm`` True,
    ``mend_combine`` True (which excludes ``mend_x_only`` / ``mend_delta_only`` / ``mend_one_sided``,
    checked when a network is built), ``mend_edit_lr`` 1e-4 (initial step sizes). ``shared`` and
    ``act: relu`` are fixed (one network per weight shape, clamp activations).
    Training: ``mend_lr`` 1e-6 (Adam on the network and the step sizes), ``mend_lr_lr`` 1e-4 (a second
    Adam on the step sizes), ``mend_c_edit`` 0.1, ``mend_c_loc`` 1.0, ``mend_accumulate`` 10 edits per
    optimiser step, ``mend_grad_clip`` 100, ``mend_steps`` (edits seen), ``mend_val_every`` /
    ``mend_val_size``, ``mend_loc_max_length`` (tokens of a locality text), ``mend_outer`` (the
    post-edit loss texts: ``"paraphrase"`` as the official ZsRE runs, or ``"prompt+paraphrase"``).

    Described on the book page ``mend``.
    """

    mend_editor: str = "shipped"
    mend_editor_sha256: str | None = None
    mend_modules: Literal["preset", "pattern"] = "preset"
    mend_edits_per_step: int = 1
    mend_lr_scale: float = 1.0
    mend_n_hidden: int = 1
    mend_rank: int = 1920
    mend_init: Literal["id", "xavier"] = "id"
    mend_norm: bool = True
    mend_combine: bool = True
    mend_x_only: bool = False
    mend_delta_only: bool = False
    mend_one_sided: bool = False
    mend_edit_lr: float = 1e-4
    mend_lr: float = 1e-6
    mend_lr_lr: float = 1e-4
    mend_c_edit: float = 0.1
    mend_c_loc: float = 1.0
    mend_accumulate: int = 10
    mend_grad_clip: float = 100.0
    mend_steps: int = 100_000
    mend_val_every: int = 1000
    mend_val_size: int = 50
    mend_loc_max_length: int = 64
    mend_outer: Literal["paraphrase", "prompt+paraphrase"] = "paraphrase"
    paper: ClassVar[dict[str, Any]] = {  # the paper's run: edit.py --num_edits 1, the official network
        "mend_modules": "preset", "mend_edits_per_step": 1, "mend_lr_scale": 1.0, "mend_n_hidden": 1,
        "mend_rank": 1920, "mend_init": "id", "mend_norm": True, "mend_combine": True, "mend_x_only": False,
        "mend_delta_only": False, "mend_one_sided": False, "mend_edit_lr": 1e-4, "mend_lr": 1e-6,
        "mend_lr_lr": 1e-4, "mend_c_edit": 0.1, "mend_c_loc": 1.0, "mend_accumulate": 10,
        "mend_grad_clip": 100.0, "mend_outer": "paraphrase"}

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("mend_edits_per_step", "mend_rank", "mend_accumulate", "mend_steps", "mend_val_every",
                     "mend_val_size", "mend_loc_max_length", "mend_lr_scale", "mend_edit_lr", "mend_lr",
                     "mend_lr_lr", "mend_grad_clip"):
            check(getattr(self, name) > 0, name, "positive", getattr(self, name))
        for name in ("mend_n_hidden", "mend_c_edit", "mend_c_loc"):
            check(getattr(self, name) >= 0, name, ">= 0", getattr(self, name))
        check(bool(self.mend_editor.strip()), "mend_editor", "'shipped' or an editor file", self.mend_editor)

    def network(self) -> dict[str, Any]:
        """The architecture keywords of :class:`~crispedit_lite.editing.updates.mend.MendNetwork`.

        A one-line ``ValueError`` if ``mend_combine`` is set with a one-sided variant.
        """
        one_sided = [n for n in ("mend_x_only", "mend_delta_only", "mend_one_sided") if getattr(self, n)]
        check(not (self.mend_combine and one_sided), "mend_combine", f"false with {', '.join(one_sided)}",
              self.mend_combine)
        return {k: getattr(self, f"mend_{k}") for k in ("n_hidden", "rank", "init", "norm", "combine",
                                                          "x_only", "delta_only", "one_sided")}


def _shape(model: nn.Module) -> tuple[Any, ...]:
    from crispedit_lite.models.presets import _model_shape

    return _model_shape(model)


def mend_modules(model: nn.Module, settings: MendSettings, job: EditJob | None = None) -> list[str]:
    """The matrices MEND edits: its preset (the last three layers' gate/up/down_proj), or the job's modules.

    Described on the book page ``mend``.
    """
    from crispedit_lite.models import resolve_edit_modules

    if settings.mend_modules == "pattern":
        if job is None or not job.modules:
            raise ValueError("mend_modules='pattern' needs module_pattern and layers that match modules "
                             "of the model")
        return list(job.modules)
    found = EDITORS[0].preset(model)
    if found is not None:
        table = found[1]["modules"]
    else:
        n = getattr(getattr(model, "config", None), "num_hidden_layers", None)
        if not isinstance(n, int) or n < 3:
            raise ValueError(f"MEND's preset edits the last three decoder layers; the model has {n!r} layers "
                             "(set mend_modules='pattern')")
        table = _last_three(n)
    layers = sorted({i for ls in table.values() for i in ls})
    return [m for i in layers for pattern in table if i in table[pattern]
            for m in resolve_edit_modules(model, pattern, [i])]


def check_editor(settings: MendSettings, model: nn.Module, modules: Sequence[str]) -> tuple[Path, str | None]:
    """``(path, pinned digest)`` of the run's editor file, checked against the model without loading it.

    The file must exist, carry a pinned digest if one is given, and have been trained for exactly the
    edited ``modules`` of ``model`` (read from its header; ``model`` may live on the meta device, so the
    check runs before any weights load). One-line ``ValueError`` naming ``mend_editor`` otherwise.

    Listed on the book page ``api``.
    """
    path, digest = editor_file(settings.mend_editor, settings.mend_editor_sha256, _shape(model))
    if digest is not None and (got := file_sha256(path)) != digest:
        raise ValueError(f"mend_editor_sha256: MEND editor {str(path)!r}: SHA-256 {got} differs from the "
                         f"pinned {digest}")
    trained = editor_shapes(path)
    shapes = {m: tuple(model.get_submodule(m).weight.shape) for m in modules}
    if trained != shapes:
        raise ValueError(f"mend_editor: {str(path)!r} was trained for {trained}, the model's edited "
                         f"matrices are {shapes}")
    return path, digest


def preflight(config: Any, model: nn.Module, modules: list[str]) -> None:
    """The registry's check before loading: the run's editor file against the model's edited matrices.

    :func:`check_editor` on the matrices MEND will edit; a ``ValueError("<setting>: <message>")`` naming
    ``mend_editor`` or ``mend_editor_sha256``. Listed on the book page ``api``.
    """
    settings = config.settings
    try:
        edited = modules if settings.mend_modules == "pattern" else mend_modules(model, settings)
        check_editor(settings, model, edited)
    except ValueError as err:
        text = str(err)
        setting = "mend_editor_sha256" if text.startswith("mend_editor_sha256") else "mend_editor"
        raise ValueError(f"{setting}: {text.removeprefix(setting + ': ')}") from None


def _prepare(job: EditJob) -> tuple[MendSettings, list[str], MendNetwork, dict[str, Any]]:
    settings: MendSettings = job.config.settings
    modules = mend_modules(job.model, settings, job)
    path, digest = check_editor(settings, job.model, modules)
    weight = job.model.get_submodule(modules[0]).weight
    dtype = torch.float64 if weight.dtype == torch.float64 else torch.float32
    net = load_editor(path, None, weight.device, dtype)  # its digest: checked by check_editor
    shipped = settings.mend_editor == "shipped"
    info = {"editor": f"shipped:{path.name}" if shipped else str(path),
            "editor_sha256": digest or file_sha256(path), "network": net.describe(),
            "learned_edit_lrs": [round(float(x), 8) for x in net.edit_lrs.detach()],
            "lr_scale": settings.mend_lr_scale}
    return settings, modules, net, info


@torch.no_grad()
def _step(job: EditJob, net: MendNetwork, modules: list[str], requests: Sequence[Any],
          lr_scale: float) -> dict[str, Any]:
    """One MEND step on ``requests`` from the model's current weights; returns its record."""
    batch = job.collate(list(requests))
    loss, factors, _ = collect_factors(job.model, batch, modules)
    deltas = net.deltas(factors)
    norms = {}
    for name, delta in deltas.items():
        w = job.model.get_submodule(name).weight
        w.add_((lr_scale * delta).to(w.device, w.dtype))
        norms[name] = float(delta.norm()) * lr_scale
    device = next(job.model.parameters()).device
    after = float(target_nll(job.model(input_ids=batch["input_ids"].to(device),
                                       attention_mask=batch["attention_mask"].to(device)).logits,
                             batch["labels"])[0])
    n_rows = {n: int(((u != 0).any(-1) & (d != 0).any(-1)).sum()) for n, (u, d) in factors.items()}
    return {"n_edits": len(requests), "nll_before": round(float(loss), 5), "nll_after": round(after, 5),
            "delta_norm": {k: round(v, 6) for k, v in norms.items()}, "token_rows": n_rows}


def _run(job: EditJob, sequential: bool) -> EditResult:
    from tqdm.auto import tqdm

    from crispedit_lite.editing.loops.sequential import chunk_requests

    start = time.perf_counter()
    settings, modules, net, info = _prepare(job)
    original = {f"{m}.weight": job.model.get_submodule(m).weight.detach().to("cpu", copy=True)
                for m in modules}
    if sequential:
        steps = chunk_requests(list(job.requests), settings.mend_edits_per_step, job.config.seed)
    else:
        steps = [list(job.requests)]
    carry = job.carry if sequential else None
    done = 0 if carry is None else int(carry.get("chunks_done", 0))  # steps of earlier calls
    per_step = []
    for k, chunk in enumerate(tqdm(steps, desc="mend steps", disable=not job.progress or len(steps) < 2)):
        rec = _step(job, net, modules, chunk, settings.mend_lr_scale)
        rec["step"], rec["case_ids"] = done + k, [getattr(r, "case_id", None) for r in chunk]
        per_step.append(rec)
    if carry is not None:  # a step reads only the current weights: nothing else is handed on
        carry["chunks_done"] = done + len(steps)
    timings = {"edit_s": time.perf_counter() - start, "total_s": time.perf_counter() - start}
    info["schedule"] = ({"edits_per_step": settings.mend_edits_per_step, "n_steps": len(steps),
                         "order_seed": job.config.seed, "restored_between_steps": False}
                        if sequential else {"n_steps": 1, "n_edits": len(job.requests)})
    info["per_step"] = per_step
    return EditResult(config=job.config, modules=modules, logs=[], timings=timings, statistics=[],
                      details=info, original=original)


def run(job: EditJob) -> EditResult:
    """MEND: every request of the job in one step (one request: the single-edit regime).

    Described on the book page ``mend``.
    """
    return _run(job, sequential=False)


def run_seq(job: EditJob) -> EditResult:
    """MEND-Seq: one step per ``mend_edits_per_step`` requests, in sequence, never restored.

    A stream over many calls (``job.carry``) needs no state beyond the edited weights: each step reads
    only the model as the earlier steps left it, so ``carry`` just counts the steps done
    (``chunks_done``), and a call per chunk equals one call over the stream.

    Listed on the book page ``api``.
    """
    return _run(job, sequential=True)


_CHANGES = "gate_proj / up_proj / down_proj of the last three layers (EasyEdit's MEND layers)"
# The paper's row: EasyEdit edit.py --num_edits 1 --batch_edit False, 3,000 single edits in sequence,
# in float32 (EasyEdit runs MEND with half: False), with a network trained on ZsRE's training split
# (tools/train_mend_gpu.py writes it where the cells look for it).
EDITORS = (
    Editor(name="mend", changes=_CHANGES, statistics=(), update="learned", run=run, label="MEND",
           color="#9655f6", settings=MendSettings, presets=MEND_PRESETS, paper_row="MEND",
           preflight=preflight,
           paper_run={"chunk_size": 1, "dtype": "float32",
                      "config": {"mend_editor": "runs/mend-llama3-8b-zsre/best.safetensors",
                                 "mend_edits_per_step": 1},  # MEND-Seq's step, = the chunk size
                      "differs": "the editor network is trained with this library's trainer on ZsRE's "
                                 "training split with EasyEdit's settings (tools/train_mend_gpu.py); the "
                                 "paper's run loaded EasyEdit's own trained archive (book page mend)"},
           sequential_form="mend_seq",
           summary="one step of the gradient's token factors mapped by a trained editor network "
                   "(all requests in one step)"),
    Editor(name="mend_seq", changes=_CHANGES, statistics=(), update="learned", run=run_seq,
           label="MEND-Seq", color="#620ce4", settings=MendSettings, presets=MEND_PRESETS, sequential=True,
           preflight=preflight,
           summary="MEND one request at a time on the model the earlier steps edited (the paper's Table 1 "
                   "run: 3,000 single edits in sequence)"),
)
