r"""MEMIT, MEMIT-Chunked and MEMIT-Seq (Meng et al., ICLR 2023): least-squares updates over the layers.

For a batch of edits, the target values :math:`z` at the last edited layer :math:`L` are optimised
once (:func:`~crispedit_lite.editing.loops.keys_values.compute_targets`); then the edited layers are
visited in ascending order and, at layer :math:`l_i` (:math:`i=0..n-1`), on the partially edited
model,

.. math::

    K = \text{keys at } l_i,\qquad R = \frac{z - h^L}{n - i},\qquad
    W_{l_i} \mathrel{+}= R\,K^\top\big(\lambda C_{l_i} + C^{\rm cache}_{l_i} + KK^\top\big)^{-1}

(:func:`~crispedit_lite.editing.updates.closed_form.memit_delta`, float64), so the residual is spread over the
remaining layers. :math:`C` is the count-normalised input second moment: the K-FAC factor
:math:`A` of the same cache file that CrispEdit and Adam-NSCL read.

Two chunked forms walk the chunks of :func:`~crispedit_lite.editing.loops.sequential.chunk_requests`:

* **MEMIT-Chunked** (``memit_chunked``) applies the batch edit to each chunk in turn, on the model the
  earlier chunks left, with :math:`C^{\rm cache}=0`: :math:`\Delta = RK^\top(\lambda C + KK^\top)^{-1}`
  every time. This is how the paper's MEMIT row was run (EasyEdit's ``edit.py --num_edits 32``: its
  ``batch_edit`` calls MEMIT's ``apply_memit_to_model`` on one chunk of 32 after another, and that
  solve has no term for earlier chunks), and what the Table 1 MEMIT cells run.
* **MEMIT-Seq** (``memit_seq``) accumulates :math:`C^{\rm cache} \mathrel{+}= KK^\top` with the keys
  each solve used, so a later chunk's update is penalised for moving an earlier chunk's keys
  (the cached form of sequential MEMIT; AlphaEdit's update carries the same :math:`K_pK_p^\top` term).
  It is not the paper's MEMIT row.

Derived in notebook ``08_one_framework``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from torch import Tensor

from crispedit_lite.editing.loops.layerwise import Solver, run_closed_form
from crispedit_lite.editing.registry import EditJob, Editor
from crispedit_lite.editing.result import EditResult
from crispedit_lite.editing.settings import EditorSettings, check
from crispedit_lite.editing.updates.closed_form import memit_delta
from crispedit_lite.models.presets import ARCHITECTURES, LLAMA3_8B, QWEN2_5_1_5B, QWEN2_5_7B

__all__ = ["CLOSED_FORM_PRESETS", "EDITORS", "ClosedFormSettings", "memit_solver"]

# Closed-form editors (MEMIT, AlphaEdit and their -Seq forms) edit their own, earlier layers. Per model,
# recognised by its shape (model_type, num_hidden_layers, hidden_size, intermediate_size): the layers,
# MEMIT's lambda (mom2_update_weight, on the count-normalised covariance), the target-value
# optimisation of each method (compute_z: Adam lr, steps, weight decay, clamp factor, KL weight) and
# AlphaEdit's absolute null-space threshold. A model without an entry gets LLaMA-3-8B's values.
# * LLaMA-3-8B: layers 4-8, lambda 15000; MEMIT v_lr 0.5, clamp 4, weight decay 1e-3 (AnyEdit and
#   CrispEdit's MEMIT baseline); AlphaEdit v_lr 0.1, weight decay 0.5, clamp 0.75 (official
#   Llama3-8B.json); both 25 steps, KL 0.0625, threshold 2e-2.
# * Qwen2.5-7B: EasyEdit's hparams/MEMIT/qwen2.5-7b.yaml and hparams/AlphaEdit/qwen2.5-7b.yaml (the
#   same values for both: layers 4-8, lambda 15000, v_lr 0.5, clamp 4, weight decay 1e-3, threshold
#   2e-2, L2 1). Qwen2.5-1.5B has no published closed-form preset; it has the same 28-layer depth, so
#   it takes the 7B values (EasyEdit also edits layers 4-8 on the 16-layer Llama-3.2-1B).
# * SmolLM2-135M (provisional): layers 3-7 place LLaMA-3-8B's 4-8 of 32 at the same relative depth
#   of 30 layers, lambda stays 15000, the value optimisation keeps MEMIT's settings; the sweep of
#   benchmarks/sweep_closed_form_smollm2.py (layers 1-5 / 3-7 / 7-11 x lambda 1.5e3 / 1.5e4 / 1.5e5)
#   is the check of this choice and has not been run to completion yet. In chapter 6's Table 1 runs
#   (resources/results/cpu-table1-smollm2-part3.json, 40 edits) this preset reaches TF Rel 96.7
#   (MEMIT) and 97.5 (AlphaEdit) on subset 0, with the best locality of all editors there.
_MEMIT_Z = {"v_lr": 0.5, "v_steps": 25, "v_weight_decay": 1e-3, "clamp_norm": 4.0, "kl_factor": 0.0625}
_ALPHA_Z = {"v_lr": 0.1, "v_steps": 25, "v_weight_decay": 0.5, "clamp_norm": 0.75, "kl_factor": 0.0625}
CLOSED_FORM_PRESETS: dict[str, dict[str, Any]] = {
    "meta-llama/Meta-Llama-3-8B-Instruct": {
        "shape": ARCHITECTURES[LLAMA3_8B], "layers": [4, 5, 6, 7, 8], "lambda": 15000.0,
        "nullspace_threshold": 2e-2, "memit": _MEMIT_Z, "alphaedit": _ALPHA_Z},
    "Qwen/Qwen2.5-1.5B-Instruct": {
        "shape": ARCHITECTURES[QWEN2_5_1_5B], "layers": [4, 5, 6, 7, 8], "lambda": 15000.0,
        "nullspace_threshold": 2e-2, "memit": _MEMIT_Z, "alphaedit": _MEMIT_Z},
    "Qwen/Qwen2.5-7B-Instruct": {
        "shape": ARCHITECTURES[QWEN2_5_7B], "layers": [4, 5, 6, 7, 8], "lambda": 15000.0,
        "nullspace_threshold": 2e-2, "memit": _MEMIT_Z, "alphaedit": _MEMIT_Z},
    "smollm2-135m-instruct": {
        "shape": ARCHITECTURES["smollm2-135m-instruct"], "layers": [3, 4, 5, 6, 7], "lambda": 15000.0,
        "nullspace_threshold": 2e-2, "memit": _MEMIT_Z, "alphaedit": _MEMIT_Z},
}


@dataclass(frozen=True)
class ClosedFormSettings(EditorSettings):
    """The settings of MEMIT, MEMIT-Seq, AlphaEdit and AlphaEdit-Seq (``None``: the model's preset).

    Attributes:
        cf_lambda: MEMIT's ``mom2_update_weight`` lambda, >= 0 (``None``: the preset's; 15,000 on
            LLaMA-3-8B).
        cf_l2: AlphaEdit's alpha (``L2``), > 0: 1 in the paper and EasyEdit, 10 in the official JSON
            configs.
        cf_nullspace_rule: AlphaEdit's null space: ``"absolute"`` (eigenvalues of :math:`C` below
            ``cf_nullspace_threshold``, the official rule) or ``"energy"`` (outside the top
            ``cf_nullspace_gamma`` of the energy, as CrispEdit's gamma).
        cf_nullspace_threshold: the absolute cut, > 0 (official: 2e-2; ``None``: the preset's).
        cf_nullspace_gamma: the energy fraction of ``"energy"``, in (0, 1] (``None``: ``gamma``).
        cf_v_lr, cf_v_steps, cf_v_weight_decay, cf_clamp_norm, cf_kl_factor: the target-value
            optimisation (``compute_z``: Adam lr, steps, weight decay, clamp factor, KL weight;
            ``None``: the preset's).
        cf_templates: how the context-template prefixes are generated: ``"greedy"`` or ``"sampled"``
            (top-5 sampling, as the official ``generate_fast``; the reproduction cells of the MEMIT
            and AlphaEdit rows set it).
        cf_template_seed: the seed of the sampled templates (``None``: the config's ``seed``).
        cf_covariance: which tokens the covariance :math:`C` counts: ``"kfac"`` (the K-FAC factor
            :math:`A` of the shared statistics file, every position but each text's last) or
            ``"every_token"`` (every non-padding position of the same texts, as MEMIT's
            ``layer_stats``; a forward pass of its own, not cached).

    Described on the book page ``running``.
    """

    cf_lambda: float | None = None
    cf_l2: float = 1.0
    cf_nullspace_rule: Literal["absolute", "energy"] = "absolute"
    cf_nullspace_threshold: float | None = None
    cf_nullspace_gamma: float | None = None
    cf_v_lr: float | None = None
    cf_v_steps: int | None = None
    cf_v_weight_decay: float | None = None
    cf_clamp_norm: float | None = None
    cf_kl_factor: float | None = None
    cf_templates: Literal["greedy", "sampled"] = "greedy"
    cf_template_seed: int | None = None
    cf_covariance: Literal["kfac", "every_token"] = "kfac"
    paper: ClassVar[dict[str, Any]] = {  # AlphaEdit paper / EasyEdit; the model-specific rest: presets
        "cf_l2": 1.0, "cf_nullspace_rule": "absolute", "cf_nullspace_threshold": 2e-2,
        "cf_templates": "sampled", "cf_covariance": "every_token"}

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.cf_lambda is None or self.cf_lambda >= 0, "cf_lambda", ">= 0", self.cf_lambda)
        check(self.cf_nullspace_gamma is None or 0 < self.cf_nullspace_gamma <= 1, "cf_nullspace_gamma",
              "in (0, 1]", self.cf_nullspace_gamma)
        for name in ("cf_l2", "cf_nullspace_threshold", "cf_v_lr", "cf_v_steps", "cf_clamp_norm"):
            value = getattr(self, name)
            check(value is None or value > 0, name, "positive", value)
        for name in ("cf_v_weight_decay", "cf_kl_factor"):
            value = getattr(self, name)
            check(value is None or value >= 0, name, ">= 0", value)


def memit_solver(C: dict[str, Tensor], settings: dict[str, Any]) -> tuple[Solver, dict[str, Any]]:
    r"""MEMIT's solve :math:`R K^\top(\lambda C + C^{\rm cache} + KK^\top)^{-1}` per module.

    Returns ``(solve, {})``.

    Listed on the book page ``api``.
    """
    def solve(m: str, R: Tensor, K: Tensor, cache: Tensor | None) -> Tensor:
        return memit_delta(R, K, C[m], settings["lambda"], cache)

    return solve, {}


def _describe(settings: dict[str, Any], stats: dict[str, Any]) -> dict[str, Any]:
    return {"lambda": settings["lambda"], "l2": None, "nullspace": None}


def _run(job: EditJob, sequential: bool, accumulate: bool | None = None) -> EditResult:
    return run_closed_form(job, "memit", sequential, memit_solver, cache_keys="solve", describe=_describe,
                           accumulate=accumulate)


def run(job: EditJob) -> EditResult:
    """MEMIT on ``job`` (all edits in one batch)."""
    return _run(job, sequential=False)


def run_chunked(job: EditJob) -> EditResult:
    """MEMIT-Chunked on ``job``: the batch edit on each chunk of ``chunk_requests`` in turn, no cache."""
    return _run(job, sequential=True, accumulate=False)


def run_seq(job: EditJob) -> EditResult:
    """MEMIT-Seq on ``job`` (the chunks of ``chunk_requests``, covariance cache accumulated)."""
    return _run(job, sequential=True)


# The official MEMIT row ran in sequential batches of 32 edits (EasyEdit edit.py --num_edits 32), with
# no cache of earlier batches (memit_chunked), the model loaded in float32 (EasyEdit's hparams set no
# fp16).
_CHANGES = "down_proj of the closed-form layers (CLOSED_FORM_PRESETS)"
EDITORS = (
    Editor(name="memit", changes=_CHANGES,
           statistics=("input_covariance",), update="closed_form", run=run, label="MEMIT",
           color="#56b4e9", settings=ClosedFormSettings, presets=CLOSED_FORM_PRESETS, paper_row="MEMIT",
           paper_run={"chunk_size": 32, "dtype": "float32", "config": {"cf_templates": "sampled"}},
           sequential_form="memit_chunked",
           summary="least-squares update R K^T (lambda C + K K^T)^-1 spread over the layers"),
    Editor(name="memit_chunked", changes=_CHANGES,
           statistics=("input_covariance",), update="closed_form", run=run_chunked, label="MEMIT-Chunked",
           color="#0f4d71", settings=ClosedFormSettings, presets=CLOSED_FORM_PRESETS, sequential=True,
           chunk_hook=True,
           summary="the MEMIT batch edit on one chunk after another, no cache of earlier chunks (the "
                   "paper's MEMIT row: chunks of 32)"),
    Editor(name="memit_seq", changes=_CHANGES,
           statistics=("input_covariance",), update="closed_form", run=run_seq, label="MEMIT-Seq",
           color="#346c8c", settings=ClosedFormSettings, presets=CLOSED_FORM_PRESETS, sequential=True,
           chunk_hook=True,
           summary="MEMIT chunk by chunk with the accumulated cache sum K_p K_p^T of earlier chunks "
                   "(not the paper's MEMIT row)"),
)
