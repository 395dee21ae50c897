r"""MEND and MEND-Seq (Mitchell et al., ICLR 2022): one edit step from a trained editor network.

MEND runs the model once on the edit (prompt + target, prompt masked), records for every edited
``nn.Linear`` the token inputs :math:`\mathbf u_t` and output gradients :math:`\boldsymbol\delta_t` of
the mean target NLL, maps them with the trained editor network and adds
:math:`\Delta W_\ell=\alpha_\ell\sum_t\tilde{\boldsymbol\delta}_t\tilde{\mathbf u}_t^\top` to every
matrix at once (:mod:`crispedit_lite.editing.updates.mend`). No optimiser loop, no statistics.

* ``mend``: all requests of the job in one MEND step (the official ``data.n_edits`` batched edit);
  with one request this is the single-edit regime of the MEND paper.
* ``mend_seq``: the CrispEdit paper's Table 1 protocol (EasyEdit ``edit.py --num_edits 1
  --batch_edit False``): one request per step (``edits_per_step``) in the seeded order of
  :func:`~crispedit_lite.editing.loops.sequential.chunk_requests`, each step on the model the previous
  steps edited, nothing restored.

The edited matrices are ``gate_proj``, ``up_proj`` and ``down_proj`` of the **last three decoder
layers** (EasyEdit's ``hparams/MEND/llama3-8b.yaml``: layers 29-31 of LLaMA-3-8B's 32;
``qwen2.5-7b.yaml``: 25-27 of 28; SmolLM2-135M: 27-29 of 30). Every MEND setting lives in
:class:`MendSettings`, read from ``config.extra["mend"]`` by :func:`mend_settings`. The editor
network must have been trained for the model (``python -m crispedit_lite.editing.mend_train``);
the package ships one for the embedded SmolLM2, pinned by SHA-256.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from crispedit_lite.editing.loops.mend import (
    collect_factors,
    file_sha256,
    load_editor,
    save_editor,
    target_nll,
)
from crispedit_lite.editing.registry import EditJob, Editor
from crispedit_lite.editing.result import EditResult
from crispedit_lite.editing.updates.mend import MendNetwork

__all__ = ["EDITORS", "MEND_PROJECTIONS", "SHIPPED_EDITORS", "MendSettings", "collect_factors", "file_sha256",
           "load_editor", "mend_modules", "mend_settings", "run", "run_seq", "save_editor", "target_nll"]

MEND_PROJECTIONS = ("gate_proj", "up_proj", "down_proj")

# The trained editors shipped in crispedit_lite/resources/, by the model they edit, with the model's
# shape (model_type, num_hidden_layers, hidden_size, intermediate_size) and the file's SHA-256.
SHIPPED_EDITORS: dict[str, dict[str, Any]] = {
    "smollm2-135m-instruct": {"shape": ("llama", 30, 576, 1536), "file": "mend_smollm2_135m.safetensors",
                              "sha256": "ee451318618f4a7ae400bb9de86f37eedbb6589f3dc92871c9d8347e55c79058"},
}


@dataclasses.dataclass(frozen=True)
class MendSettings:
    """Every MEND setting, with the official values (``config/alg/mend.yaml``, ``config/config.yaml``).

    Editing: ``editor`` (a trained editor file, looked up from the working directory and then its
    parents when relative; or ``"shipped"``: the package's editor for the model),
    ``editor_sha256`` (pin a file's digest; checked at load), ``modules`` (``"preset"``: the last three
    layers' gate/up/down_proj; ``"pattern"``: ``module_pattern`` over ``layers``), ``edits_per_step``
    (MEND-Seq: requests per step, 1 as the paper ran it), ``lr_scale`` (EasyEdit's factor on the learned
    step sizes at edit time, 1).
    Network: ``n_hidden`` 1, ``rank`` 1920, ``init`` ``"id"``, ``norm`` True, ``combine`` True,
    ``x_only``/``delta_only``/``one_sided`` False, ``edit_lr`` 1e-4 (initial step sizes). ``shared``
    and ``act: relu`` are fixed (one network per weight shape, clamp activations).
    Training: ``lr`` 1e-6 (Adam on the network and the step sizes), ``lr_lr`` 1e-4 (a second Adam on
    the step sizes), ``c_edit`` 0.1, ``c_loc`` 1.0, ``accumulate`` 10 edits per optimiser step,
    ``grad_clip`` 100, ``steps`` (edits seen), ``val_every`` / ``val_size``, ``loc_max_length`` (tokens
    of a locality text), ``outer`` (the post-edit loss texts: ``"paraphrase"`` as the official ZsRE
    runs, or ``"prompt+paraphrase"``).

    Described on the book page ``mend``.
    """

    editor: str = "shipped"
    editor_sha256: str | None = None
    modules: Literal["preset", "pattern"] = "preset"
    edits_per_step: int = 1
    lr_scale: float = 1.0
    n_hidden: int = 1
    rank: int = 1920
    init: Literal["id", "xavier"] = "id"
    norm: bool = True
    combine: bool = True
    x_only: bool = False
    delta_only: bool = False
    one_sided: bool = False
    edit_lr: float = 1e-4
    lr: float = 1e-6
    lr_lr: float = 1e-4
    c_edit: float = 0.1
    c_loc: float = 1.0
    accumulate: int = 10
    grad_clip: float = 100.0
    steps: int = 100_000
    val_every: int = 1000
    val_size: int = 50
    loc_max_length: int = 64
    outer: Literal["paraphrase", "prompt+paraphrase"] = "paraphrase"

    def __post_init__(self) -> None:
        for name, allowed in (("modules", ("preset", "pattern")), ("init", ("id", "xavier")),
                              ("outer", ("paraphrase", "prompt+paraphrase"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"MEND setting {name} must be one of {allowed}, got {getattr(self, name)!r}")
        for name in ("edits_per_step", "rank", "accumulate", "steps", "val_every", "val_size",
                     "loc_max_length", "lr_scale", "edit_lr", "lr", "lr_lr", "grad_clip"):
            if not getattr(self, name) > 0:
                raise ValueError(f"MEND setting {name} must be positive, got {getattr(self, name)!r}")
        if self.n_hidden < 0 or self.c_edit < 0 or self.c_loc < 0:
            raise ValueError("MEND settings n_hidden, c_edit and c_loc must be >= 0")
        if self.combine and (self.x_only or self.delta_only or self.one_sided):
            raise ValueError("MEND setting combine=True excludes x_only, delta_only and one_sided")

    def network(self) -> dict[str, Any]:
        """The architecture fields of :class:`~crispedit_lite.editing.updates.mend.MendNetwork`."""
        return {k: getattr(self, k) for k in ("n_hidden", "rank", "init", "norm", "combine", "x_only",
                                              "delta_only", "one_sided")}


def mend_settings(config: Any) -> MendSettings:
    """The :class:`MendSettings` of a run: ``config.extra["mend"]`` (a mapping of fields), else defaults.

    Described on the book page ``mend``.
    """
    raw = (getattr(config, "extra", None) or {}).get("mend", {})
    if isinstance(raw, MendSettings):
        return raw
    if not isinstance(raw, Mapping):
        raise ValueError(f"config.extra['mend'] must be a mapping of MEND settings, got {type(raw).__name__}")
    known = {f.name for f in dataclasses.fields(MendSettings)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"config.extra['mend']: unknown MEND settings {unknown}; known: {sorted(known)}")
    return MendSettings(**raw)


def _shape(model: nn.Module) -> tuple[Any, ...]:
    cfg = getattr(model, "config", None)
    return tuple(getattr(cfg, k, None) for k in
                 ("model_type", "num_hidden_layers", "hidden_size", "intermediate_size"))


def mend_modules(model: nn.Module, settings: MendSettings, job: EditJob | None = None) -> list[str]:
    """The matrices MEND edits: gate/up/down_proj of the last three decoder layers, or the job's modules.

    Described on the book page ``mend``.
    """
    from crispedit_lite.models import resolve_edit_modules

    if settings.modules == "pattern":
        if job is None:
            raise ValueError("MEND setting modules='pattern' needs the job's module_pattern and layers")
        return list(job.modules)
    n = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    if not isinstance(n, int) or n < 3:
        raise ValueError(f"MEND's preset edits the last three decoder layers; the model has {n!r} layers "
                         "(set modules='pattern')")
    layers = list(range(n - 3, n))
    return [m for i in layers for p in MEND_PROJECTIONS
            for m in resolve_edit_modules(model, f"model.layers.{{i}}.mlp.{p}", [i])]


def _editor_file(settings: MendSettings, model: nn.Module) -> tuple[Path, str | None]:
    if settings.editor != "shipped":
        path = Path(settings.editor).expanduser()
        # a relative path is looked up from the working directory and then its parents, so that a path
        # relative to a checkout's root also works from notebooks/
        found = [d / path for d in (Path.cwd(), *Path.cwd().parents) if (d / path).is_file()]
        if not found:
            raise ValueError(f"MEND setting editor: no file {str(path)!r} (from {str(Path.cwd())!r} or a "
                             "parent); train one with python -m crispedit_lite.editing.mend_train")
        return (path if path.is_absolute() else found[0]), settings.editor_sha256
    for entry in SHIPPED_EDITORS.values():
        if entry["shape"] == _shape(model):
            ref = resources.files("crispedit_lite") / "resources" / entry["file"]
            return Path(str(ref)), entry["sha256"]
    raise ValueError(f"MEND: no shipped editor for a model of shape {_shape(model)} (model_type, layers, "
                     f"hidden, intermediate); shipped: {sorted(SHIPPED_EDITORS)}. Train one with python -m "
                     "crispedit_lite.editing.mend_train and set config.extra['mend']['editor']")


def _prepare(job: EditJob) -> tuple[MendSettings, list[str], MendNetwork, dict[str, Any]]:
    settings = mend_settings(job.config)
    modules = mend_modules(job.model, settings, job)
    path, digest = _editor_file(settings, job.model)
    weight = job.model.get_submodule(modules[0]).weight
    dtype = torch.float64 if weight.dtype == torch.float64 else torch.float32
    net = load_editor(path, digest, weight.device, dtype)
    shapes = {m: tuple(job.model.get_submodule(m).weight.shape) for m in modules}
    if net.shapes != shapes:
        raise ValueError(f"MEND editor {str(path)!r} was trained for {net.shapes}, the model's edited "
                         f"matrices are {shapes}")
    info = {"editor": str(path) if settings.editor != "shipped" else f"shipped:{path.name}",
            "editor_sha256": digest or file_sha256(path), "network": net.describe(),
            "learned_edit_lrs": [round(float(x), 8) for x in net.edit_lrs.detach()],
            "lr_scale": settings.lr_scale, "settings": dataclasses.asdict(settings)}
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
        steps = chunk_requests(list(job.requests), settings.edits_per_step, job.config.seed)
    else:
        steps = [list(job.requests)]
    per_step = []
    for k, chunk in enumerate(tqdm(steps, desc="mend steps", disable=not job.progress or len(steps) < 2)):
        rec = _step(job, net, modules, chunk, settings.lr_scale)
        rec["step"], rec["case_ids"] = k, [getattr(r, "case_id", None) for r in chunk]
        per_step.append(rec)
    timings = {"edit_s": time.perf_counter() - start, "total_s": time.perf_counter() - start}
    info["schedule"] = ({"edits_per_step": settings.edits_per_step, "n_steps": len(steps),
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
    """MEND-Seq: one step per ``edits_per_step`` requests, in sequence, never restored (the paper's run).

    Described on the book page ``mend``.
    """
    return _run(job, sequential=True)


_CHANGES = "gate_proj / up_proj / down_proj of the last three layers (EasyEdit's MEND layers)"
EDITORS = (
    Editor(name="mend", changes=_CHANGES, statistics=(), update="projected_gradient", run=run,
           summary="one step of the gradient's token factors mapped by a trained editor network "
                   "(all requests in one step)"),
    Editor(name="mend_seq", changes=_CHANGES, statistics=(), update="projected_gradient", run=run_seq,
           paper_row="MEND", sequential=True,
           summary="MEND one request at a time on the model the earlier steps edited (the paper's Table 1 "
                   "run: 3,000 single edits in sequence)"),
)
