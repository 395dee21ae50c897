r"""Settings of one edit run, with the paper's defaults (CrispEdit Table 2, App. E) as presets.

Every method of :mod:`crispedit_lite.editing.methods` reads an :class:`EditConfig`; the results
store records it verbatim, so a run says which choices (paper or official code) it used.

Derived in notebook ``06_crispedit_on_a_small_lm``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

__all__ = [  # noqa: F822 (METHODS: module __getattr__)
    "EditConfig", "METHODS", "cpu_config", "paper_config"]


def __getattr__(name: str) -> Any:
    """``METHODS``: the names of every registered editor (:mod:`crispedit_lite.editing.registry`)."""
    if name == "METHODS":
        from crispedit_lite.editing.registry import editor_names

        return editor_names()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class EditConfig:
    """One edit run's settings.

    Attributes:
        method: one of :data:`METHODS`.
        layers: edited layer indices (``None``: the model's preset, see ``models.LAYER_PRESETS``).
        module_pattern: module name with ``{i}`` for the layer.
        epochs, batch_size, lr: FT-M loop (paper: 25, 32, Adam 5e-4).
        early_stop: stop when the epoch's mean loss falls below this; batches whose loss is already
            below it are skipped (paper and code: 0.01).
        gamma: energy threshold of the projector (paper: 0.7 ZsRE, 0.9 CF/Wiki).
        rule: tie rule of the energy cut (``"code"``: keeps protected energy >= gamma).
        n_capability: capability texts for K-FAC (paper: 10,000 Wikipedia articles).
        capability_max_length: tokens per capability text (paper/code: 512).
        capability_source: ``"wikipedia"`` or ``"offline"`` (a stand-in corpus shipped with Python).
        kfac_labels: ``"true"`` (official code: empirical Fisher) or ``"sampled"`` (the paper's
            Gauss-Newton, Monte-Carlo) or ``"type2"``.
        optimizer: ``"adam"`` (paper: Adam on projected gradients) or ``"sgd"`` (true PGD).
        project_update: with Adam, also project the update so it stays in the subspace.
        projection: how CrispEdit's projection is computed, not what it is: ``"fast"`` (the
            staircase-block form in float32 where it is cheaper and passes a precision check, see
            ``fastproject.guard``; the same iterates up to rounding) or ``"reference"`` (the four
            dense products of the paper's code).
        chunk_size: edits per chunk for CrispEdit-Seq (paper: 100).
        seq_reshuffle: reshuffle inside a chunk every epoch (official code: no).
        seq_mask_prompt: CrispEdit-Seq's edit-data K-FAC on target positions only (the Table 6
            ablation); the paper's default lets the whole prompt + target text in.
        locbf_layer: LocBF-FT's single layer (``None``: the second-to-last edited layer, i.e. 22
            of 19-23 on LLaMA-3-8B as the paper runs it).
        lora_rank, lora_alpha, lora_dropout, lora_targets: AdaLoRA (paper: 8, 32, 0.1, q/v).
        lora_init_r: AdaLoRA's initial rank (peft's default 12; the official run keeps it).
        lora_variant: ``"official"`` (rank init_r throughout, ``outputs.loss`` with the orthogonal
            regulariser, dropout active, fp32 adapters) or ``"allocate"`` (rank allocation down to
            ``lora_rank``, FT-M loss, no dropout).
        nscl_gamma: Adam-NSCL's energy threshold on the input covariance (paper's run: 0.5).
        nscl_early_stop: Adam-NSCL's early stop (paper's run: 0.05).
        eigh_dtype: ``"float64"`` or ``"float32"`` (the official code) for the eigendecompositions.
        cf_lambda: closed-form editors (MEMIT, AlphaEdit): MEMIT's ``mom2_update_weight``
            lambda (``None``: the model's ``CLOSED_FORM_PRESETS`` entry; 15,000 on LLaMA-3-8B).
        cf_l2: AlphaEdit's alpha (``L2``): 1 in the paper and EasyEdit, 10 in the official
            JSON configs.
        cf_nullspace_rule: AlphaEdit's null space: ``"absolute"`` (eigenvalues of :math:`C` below
            ``cf_nullspace_threshold``, the official rule) or ``"energy"`` (outside the top
            ``cf_nullspace_gamma`` of the energy, as CrispEdit's gamma).
        cf_nullspace_threshold: the absolute cut (official: 2e-2; ``None``: the preset's).
        cf_nullspace_gamma: the energy fraction of ``"energy"`` (``None``: ``gamma``).
        cf_v_lr, cf_v_steps, cf_v_weight_decay, cf_clamp_norm, cf_kl_factor: the target-value
            optimisation (``compute_z``: Adam lr, steps, weight decay, clamp factor, KL weight;
            ``None``: the preset's).
        ultra_modules: UltraEdit's edited modules (``ultra_*`` block): ``"preset"`` (the official
            per-model ``gate_proj`` / ``up_proj`` layers of ``editing.editors.ultraedit``) or
            ``"pattern"`` (``module_pattern`` over ``layers``).
        ultra_lr: UltraEdit's step size eta of the pseudo-values (official: 1e-6).
        ultra_lambda: UltraEdit's ridge weight lambda (official: 1, the identity).
        ultra_batch_size: edits per forward/backward pass when UltraEdit collects keys and value
            gradients (official: 10); the loss is the mean over that pass's target tokens.
        ultra_token: UltraEdit's positions: ``"ans"`` (official: the positions that predict target
            tokens) or ``"all"`` (every real token, EasyEdit's ``token: mask``).
        ultra_normalizer: one lifelong normaliser per weight ``"shape"`` (official: modules of equal
            shape share it) or per ``"module"``.
        ultra_variance: ``"exact"`` (streaming equals one-shot statistics) or ``"official"``.
        seed: seeds shuffling and label sampling.

    Derived in notebook ``06_crispedit_on_a_small_lm``.
    """

    method: str = "crispedit"
    layers: tuple[int, ...] | None = None
    module_pattern: str = "model.layers.{i}.mlp.down_proj"
    epochs: int = 25
    batch_size: int = 32
    lr: float = 5e-4
    early_stop: float = 0.01
    gamma: float = 0.7
    rule: Literal["paper", "code"] = "code"
    n_capability: int = 10_000
    capability_max_length: int = 512
    capability_source: str = "wikipedia"
    kfac_labels: Literal["true", "sampled", "type2"] = "true"
    optimizer: Literal["adam", "sgd"] = "adam"
    project_update: bool = False
    projection: Literal["fast", "reference"] = "fast"
    chunk_size: int = 100
    seq_reshuffle: bool = False
    seq_mask_prompt: bool = False
    locbf_layer: int | None = None
    lora_rank: int = 8
    lora_alpha: int = 32
    lora_dropout: float = 0.1
    lora_targets: tuple[str, ...] = ("q_proj", "v_proj")
    lora_init_r: int = 12
    lora_variant: Literal["official", "allocate"] = "official"
    nscl_gamma: float = 0.5
    nscl_early_stop: float = 0.05
    eigh_dtype: Literal["float64", "float32"] = "float64"
    # --- closed-form editors (MEMIT, AlphaEdit and their -Seq variants) ---
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
    # --- end closed-form editors ---
    # --- UltraEdit (ultra_*) ---
    ultra_modules: Literal["preset", "pattern"] = "preset"
    ultra_lr: float = 1e-6
    ultra_lambda: float = 1.0
    ultra_batch_size: int = 10
    ultra_token: Literal["ans", "all"] = "ans"
    ultra_normalizer: Literal["shape", "module"] = "shape"
    ultra_variance: Literal["exact", "official"] = "exact"
    # --- end UltraEdit ---
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from crispedit_lite.editing.registry import get_editor

        get_editor(self.method)  # an unknown method is an error listing the known ones
        for name in ("epochs", "batch_size", "chunk_size", "n_capability", "capability_max_length"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("gamma", "nscl_gamma"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"{name} must lie in (0, 1], got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.projection not in ("fast", "reference"):
            raise ValueError(f"projection must be 'fast' or 'reference', got {self.projection!r}")
        # --- closed-form editors (cf_*) ---
        if self.cf_nullspace_rule not in ("absolute", "energy"):
            raise ValueError(f"cf_nullspace_rule must be 'absolute' or 'energy', got "
                             f"{self.cf_nullspace_rule!r}")
        if self.cf_nullspace_gamma is not None and not 0 < self.cf_nullspace_gamma <= 1:
            raise ValueError(f"cf_nullspace_gamma must lie in (0, 1], got {self.cf_nullspace_gamma}")
        if self.cf_lambda is not None and self.cf_lambda < 0:
            raise ValueError(f"cf_lambda must be >= 0, got {self.cf_lambda}")
        for name in ("cf_l2", "cf_nullspace_threshold", "cf_v_lr", "cf_v_steps", "cf_clamp_norm"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be positive, got {value}")
        for name in ("cf_v_weight_decay", "cf_kl_factor"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        # --- end closed-form editors ---
        if self.layers is not None:
            object.__setattr__(self, "layers", tuple(int(i) for i in self.layers))
        # --- UltraEdit (ultra_*) ---
        for name, allowed in (("ultra_modules", ("preset", "pattern")), ("ultra_token", ("ans", "all")),
                              ("ultra_normalizer", ("shape", "module")),
                              ("ultra_variance", ("exact", "official"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        for name in ("ultra_lr", "ultra_lambda", "ultra_batch_size"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        # --- end UltraEdit ---

    def with_(self, **changes: Any) -> EditConfig:
        """A copy with some fields changed."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of every setting."""
        d = asdict(self)
        d["layers"] = list(self.layers) if self.layers is not None else None
        d["lora_targets"] = list(self.lora_targets)
        return d


def paper_config(method: str = "crispedit", dataset: str = "zsre", *, model: str | None = None,
                 **changes: Any) -> EditConfig:
    r"""The paper's settings (Table 2, App. E; Table 5 for Qwen-2.5-1.5B) for ``model`` on ``dataset``.

    LLaMA-3-8B (and any model that is not the paper's): CrispEdit :math:`(n, \gamma)` = (10,000, 0.7)
    on ZsRE and (10,000, 0.9) on CounterFact / WikiBigEdit, (1,000, 0.7) on ``zsre10k`` (Table 4);
    CrispEdit-Seq (30, 0.999) on ZsRE / CounterFact and (200, 0.995) on WikiBigEdit. Qwen-2.5-1.5B:
    n = 1,000 with the same :math:`\gamma`, CrispEdit-Seq (30, 0.995)
    (:mod:`crispedit_lite.editing.paper_presets`). ``dataset`` takes the names of
    :data:`~crispedit_lite.editing.paper_presets.PAPER_DATASET_NAMES`; ``changes`` override any
    field. Derived in notebook ``06_crispedit_on_a_small_lm``.
    """
    from crispedit_lite.editing.paper_presets import paper_values

    values = paper_values(method, dataset, model)
    base = dict(method=method, gamma=values["gamma"], n_capability=values["n_capability"],
                eigh_dtype="float32")
    base.update(changes)
    return EditConfig(**base)


def cpu_config(method: str = "crispedit", **changes: Any) -> EditConfig:
    """Small settings that run on 2 CPU cores with the embedded SmolLM2 (tens of texts, short texts).

    Training follows the paper's stopping rule: it ends once an epoch's mean FT-M loss is below
    ``early_stop`` = 0.01, with ``epochs`` = 60 as a cap (the paper's 25 epochs of 94 minibatches are
    far more steps than a handful of CPU edits get in 25 epochs).

    Derived in notebook ``06_crispedit_on_a_small_lm``.
    """
    base = dict(method=method, epochs=60, batch_size=8, lr=5e-4, gamma=0.7, n_capability=32,
                capability_max_length=128, capability_source="offline", chunk_size=8,
                eigh_dtype="float64")
    base.update(changes)
    return EditConfig(**base)
