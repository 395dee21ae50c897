r"""LoRA baselines: AdaLoRA adapters on the attention ``q_proj``/``v_proj``, merged after training.

The paper's LoRA row was run with peft's ``AdaLoraConfig`` and a plain training loop. Read as it
runs (``lora_variant="official"``, the default):

* the adapters keep rank ``init_r`` = 12 throughout, because ``update_and_allocate`` is never
  called (so the configured ``r = 8`` has no effect);
* the loss is ``outputs.loss`` of the peft model built with ``task_type="CAUSAL_LM"``, whose forward
  adds AdaLoRA's orthogonal regulariser

  .. math::

      R_{\rm orth} = \frac{w}{n}\sum_{P}\lVert PP^\top-I\rVert_F,\qquad
      P\in\{A_\ell,\ B_\ell^\top\},

  over the :math:`n` adapter matrices (``lora_A`` and ``lora_B`` of every adapted layer,
  ``orth_reg_weight`` :math:`w=0.5`) to the token cross-entropy, and the 0.01 skip and stop tests see
  that sum (Zhang et al., ICLR 2023, eq. 4; peft's ``AdaLoraModel.forward``). Without the task type,
  peft returns a plain ``PeftModel`` whose forward calls the transformers model directly, and the
  regulariser silently drops out; ``details["orth_reg"]`` records its value at the first and the last
  step;
* LoRA dropout stays active (the model is in train mode);
* adapters train in float32.

``lora_variant="allocate"`` is this library's earlier variant: AdaLoRA's rank allocation from
``init_r`` down to ``lora_rank`` after every step, FT-M loss only, dropout off.

LoRA-Seq walks the chunks of :func:`~crispedit_lite.editing.loops.sequential.chunk_requests`. By
default (``lora_seq_adapters="one"``) it trains one set of adapters, with one Adam, through all chunks
and merges them after the last one. The paper's LoRA Sequential row ran EasyEdit's ``lora_main.py``
chunk by chunk instead: fresh adapters and a fresh Adam for every chunk of 100 edits, 70 epochs over
the chunk at lr 5e-3, merged into the model after that chunk (``lora_seq_adapters="per_chunk"``,
which the reproduction cells of that row set). ``details["schedule"]["adapters"]`` records which.
Derived in notebook ``06_crispedit_on_a_small_lm``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch

from crispedit_lite.editing.loops.trainer import train_edits
from crispedit_lite.editing.registry import EditJob, Editor
from crispedit_lite.editing.result import EditResult
from crispedit_lite.editing.settings import EditorSettings, check

__all__ = ["EDITORS", "LoraSettings", "run", "run_seq"]


@dataclass(frozen=True)
class LoraSettings(EditorSettings):
    """The settings of LoRA and LoRA-Seq (AdaLoRA; the paper's run: r 8, alpha 32, dropout 0.1, q/v).

    Attributes:
        lora_rank: AdaLoRA's target rank ``target_r`` (paper: 8).
        lora_alpha: the adapters' scale alpha (paper: 32).
        lora_dropout: adapter dropout, in [0, 1) (paper: 0.1).
        lora_targets: the attention matrices that get adapters (paper: ``q_proj``, ``v_proj``).
        lora_init_r: AdaLoRA's initial rank (peft's default 12; the official run keeps it).
        lora_variant: ``"official"`` (rank ``lora_init_r`` throughout, ``outputs.loss`` with the
            orthogonal regulariser, dropout active, fp32 adapters) or ``"allocate"`` (rank allocation
            down to ``lora_rank``, FT-M loss, no dropout).
        lora_seq_adapters: LoRA-Seq's adapters: ``"one"`` set (and one Adam) trained through all
            chunks and merged after the last, or ``"per_chunk"``: fresh adapters and Adam for every
            chunk, merged after it, as EasyEdit's ``lora_main.py`` does in the paper's LoRA
            Sequential run (each chunk's merged model is the next chunk's base).

    Described on the book page ``running``.
    """

    lora_rank: int = 8
    lora_alpha: int = 32
    lora_dropout: float = 0.1
    lora_targets: tuple[str, ...] = ("q_proj", "v_proj")
    lora_init_r: int = 12
    lora_variant: Literal["official", "allocate"] = "official"
    lora_seq_adapters: Literal["one", "per_chunk"] = "one"
    paper: ClassVar[dict[str, Any]] = {  # run_crispedit.py --perform_lora --lora_type adalora
        "lora_rank": 8, "lora_alpha": 32, "lora_dropout": 0.1, "lora_targets": ("q_proj", "v_proj"),
        "lora_init_r": 12, "lora_variant": "official", "lora_seq_adapters": "per_chunk"}

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("lora_rank", "lora_alpha", "lora_init_r"):
            check(getattr(self, name) > 0, name, "a positive integer", getattr(self, name))
        check(0 <= self.lora_dropout < 1, "lora_dropout", "in [0, 1)", self.lora_dropout)
        check(len(self.lora_targets) > 0 and all(self.lora_targets), "lora_targets",
              "a non-empty list of module names such as q_proj,v_proj", self.lora_targets)


class _AllocatingAdam(torch.optim.Adam):
    """Adam that also runs AdaLoRA's rank allocation after every step (``lora_variant="allocate"``)."""

    def __init__(self, params, peft_model, lr):
        super().__init__(params, lr=lr)
        self.peft_model, self.global_step = peft_model, 0

    def step(self, closure=None):  # noqa: D102
        loss = super().step(closure)
        self.global_step += 1
        self.peft_model.base_model.update_and_allocate(self.global_step)
        return loss


def _outputs_loss(model, batch):
    """``outputs.loss`` of the peft model: token cross-entropy plus AdaLoRA's orthogonal regulariser."""
    device = next(model.parameters()).device
    out = model(input_ids=batch["input_ids"].to(device),
                attention_mask=batch["attention_mask"].to(device), labels=batch["labels"].to(device))
    return out.loss


def adalora_model(model: torch.nn.Module, s: LoraSettings, layers: list[int], total_step: int) -> Any:
    r"""``model`` wrapped with AdaLoRA adapters as the official run builds them (a ``PeftModelForCausalLM``).

    ``task_type="CAUSAL_LM"`` makes peft return the causal-LM wrapper, whose forward goes through
    ``AdaLoraModel.forward`` and adds :func:`orthogonal_regulariser` to ``outputs.loss`` when labels
    are given.
    """
    from peft import AdaLoraConfig, get_peft_model

    lcfg = AdaLoraConfig(task_type="CAUSAL_LM", init_r=s.lora_init_r, target_r=s.lora_rank,
                         lora_alpha=s.lora_alpha, lora_dropout=s.lora_dropout,
                         target_modules=list(s.lora_targets), layers_to_transform=layers,
                         total_step=max(total_step, 2), tinit=0, tfinal=0)
    return get_peft_model(model, lcfg)


def orthogonal_regulariser(peft_model: Any) -> float:
    r"""AdaLoRA's orthogonal regulariser :math:`\tfrac{w}{n}\sum_P\lVert PP^\top-I\rVert_F` of ``peft_model``.

    :math:`P` runs over every trainable ``lora_A`` (:math:`AA^\top`) and ``lora_B``
    (:math:`B^\top B`), :math:`w` is the adapter's ``orth_reg_weight``. This is the term that
    ``outputs.loss`` adds to the cross-entropy.
    """
    name = peft_model.active_adapter
    weight = float(peft_model.peft_config[name].orth_reg_weight)
    norms = []
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if ("lora_A" in n or "lora_B" in n) and name in n:
                cov = p @ p.T if "lora_A" in n else p.T @ p
                norms.append(float(torch.linalg.matrix_norm(cov - torch.eye(len(cov), dtype=cov.dtype,
                                                                              device=cov.device))))
    return weight * sum(norms) / len(norms) if norms else 0.0


def _train(job: EditJob, chunks: list[list]) -> EditResult:
    from crispedit_lite.models import default_layers

    cfg, s, model = job.config, job.config.settings, job.model
    start = time.perf_counter()
    layers = list(cfg.layers) if cfg.layers is not None else default_layers(model)
    targets = [f"model.layers.{i}.self_attn.{t}" for i in layers for t in s.lora_targets]
    original = {f"{n}.weight": model.get_submodule(n).weight.detach().to("cpu", copy=True)
                for n in targets}
    for p in model.parameters():
        p.requires_grad_(False)
    official = s.lora_variant == "official"
    fresh = len(chunks) > 1 and s.lora_seq_adapters == "per_chunk"
    groups = [[c] for c in chunks] if fresh else [chunks]  # one adapter set per group
    logs, ranks, orth = [], set(), []
    for group in groups:
        steps = cfg.epochs * sum(math.ceil(len(c) / cfg.batch_size) for c in group)
        peft_model = adalora_model(model, s, layers, steps)
        trainable = [p for p in peft_model.parameters() if p.requires_grad]
        if official:
            for p in trainable:  # adapters in float32, as the official run trains them
                p.data = p.data.float()
            opt: torch.optim.Optimizer = torch.optim.Adam(trainable, lr=cfg.lr)
        else:
            opt = _AllocatingAdam(trainable, peft_model, cfg.lr)
        reg_start = orthogonal_regulariser(peft_model)
        for chunk in group:
            k = len(logs)
            logs.append(train_edits(
                peft_model, chunk, job.collate, opt, epochs=cfg.epochs, batch_size=cfg.batch_size,
                early_stop=cfg.early_stop, seed=cfg.seed + k,
                reshuffle=True if len(chunks) == 1 else cfg.seq_reshuffle, progress=job.progress,
                desc="lora" if len(chunks) == 1 else f"lora chunk {k + 1}/{len(chunks)}",
                loss_fn=_outputs_loss if official else None, train_mode=official))
        orth.append({"start": round(reg_start, 6), "end": round(orthogonal_regulariser(peft_model), 6)})
        # official: every adapter keeps init_r; allocate: AdaLoRA masks ranks down towards lora_rank
        ranks |= {int(e.shape[0]) for m in peft_model.modules() if hasattr(m, "lora_E")
                  for e in m.lora_E.values()}
        peft_model.merge_and_unload()
        del peft_model, opt
    for p in model.parameters():
        p.requires_grad_(False)
    details = {"lora_variant": s.lora_variant, "adapter_ranks": sorted(ranks),
               "loss": "outputs.loss (CE + orthogonal regulariser)" if official else "FT-M CE",
               "orth_reg": orth if fresh else orth[0], "dropout_active": official}
    if len(chunks) > 1:
        details["schedule"] = {
            "chunk_size": cfg.chunk_size, "n_chunks": len(chunks), "order_seed": cfg.seed,
            "adapters": ("fresh adapters and Adam per chunk, merged after each chunk" if fresh else
                         "one adapter set and one Adam through all chunks, merged after the last"),
            "evaluated": "once, after the last chunk"}
    return EditResult(config=cfg, modules=targets, logs=logs,
                      timings={"train_s": sum(log.seconds for log in logs),
                               "total_s": time.perf_counter() - start},
                      details=details, original=original)


def run(job: EditJob) -> EditResult:
    """LoRA (AdaLoRA) on all edits at once.

    Derived in notebook ``06_crispedit_on_a_small_lm``.
    """
    return _train(job, [list(job.requests)])


def run_seq(job: EditJob) -> EditResult:
    """LoRA-Seq: adapters trained chunk by chunk (``lora_seq_adapters``: one set, or fresh per chunk).

    Listed on the book page ``api``.
    """
    from crispedit_lite.editing.loops.sequential import chunk_requests

    return _train(job, chunk_requests(list(job.requests), job.config.chunk_size, job.config.seed))


_CHANGES = "AdaLoRA adapters on q_proj/v_proj of the edited layers (merged)"
# LoRA: run_crispedit.py --no_crisp --perform_lora --lora_type adalora, model loaded in float32.
# LoRA Sequential: EasyEdit's edit.py --editing_method LoRA --num_edits 100 (lora_main.py): fresh
# AdaLoRA adapters and Adam for every chunk of 100, 70 epochs over the chunk at lr 5e-3, merged after
# it; EasyEdit loads the model in float32 (its hparams set no fp16).
EDITORS = (
    Editor(name="lora", changes=_CHANGES, statistics=(), update="projected_gradient", run=run,
           label="LoRA", color="#ca9161", settings=LoraSettings, paper_row="LoRA",
           paper_run={"dtype": "float32"}, sequential_form="lora_seq",
           summary="AdaLoRA adapters trained on the edits, then merged"),
    Editor(name="lora_seq", changes=_CHANGES, statistics=(), update="projected_gradient",
           run=run_seq, label="LoRA-Seq", color="#79573a", settings=LoraSettings,
           paper_row="LoRA Sequential",
           paper_run={"chunk_size": 100, "epochs": 70, "dtype": "float32",
                      "config": {"lr": 5e-3, "lora_seq_adapters": "per_chunk"}},
           sequential=True, summary="AdaLoRA adapters trained chunk by chunk (one set through all "
                                    "chunks, or fresh per chunk as EasyEdit), merged"),
)
