r"""Settings of one edit run, with the paper's defaults (CrispEdit Table 2, App. E) as presets.

Every editor of :mod:`crispedit_lite.editing.registry` reads an :class:`EditConfig`: the fields more
than one editor family reads (learning rate, epochs, :math:`\gamma`, layers, the capability text,
chunks, ...) and ``settings``, the method's own
:class:`~crispedit_lite.editing.settings.EditorSettings` (LoRA's ranks, the closed-form editors'
:math:`\lambda`, UltraEdit's step size, ...; ``None`` for a method without any). Construction stays
flat, ``EditConfig(method="lora", lora_rank=4)``: a name that is not a shared field goes to the
method's settings, and a name that belongs to another method's settings is an error that says which
method reads it. :meth:`EditConfig.to_dict` is flat too (the shared fields and the method's own
settings), which is what results JSON records, and :meth:`EditConfig.from_dict` reads such a record
back, older records that listed every method's settings included.

Derived in notebook ``06_crispedit_on_a_small_lm``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any, Literal

from crispedit_lite.editing.settings import EditorSettings

__all__ = [  # noqa: F822 (METHODS: module __getattr__)
    "EditConfig", "METHODS", "SHARED_FIELDS", "cpu_config", "paper_config", "setting_error"]


def __getattr__(name: str) -> Any:
    """``METHODS``: the names of every registered editor (:mod:`crispedit_lite.editing.registry`)."""
    if name == "METHODS":
        from crispedit_lite.editing.registry import editor_names

        return editor_names()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True, init=False)
class EditConfig:
    """One edit run's settings: the shared fields and the method's own ``settings``.

    ``EditConfig(method, settings=None, **values)``: ``values`` are shared fields or fields of the
    method's settings class (``Editor.settings``); ``settings`` may be an instance of that class or a
    mapping of its fields. The method's settings are also readable as attributes
    (``config.lora_rank`` is ``config.settings.lora_rank``).

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
        chunk_size: edits per chunk of the sequential editors (paper: 100).
        seq_reshuffle: reshuffle inside a chunk every epoch (CrispEdit-Seq, FT-Seq, LoRA-Seq;
            official code: no).
        eigh_dtype: ``"float64"`` or ``"float32"`` (the official code) for the eigendecompositions.
        seed: seeds shuffling and label sampling.
        settings: the method's own settings (an instance of ``Editor.settings``), or ``None``.

    Derived in notebook ``09_reproduce_llama3_8b``.
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
    eigh_dtype: Literal["float64", "float32"] = "float64"
    seed: int = 0
    settings: EditorSettings | None = None

    def __init__(self, method: str = "crispedit", *, settings: Any = None, **values: Any) -> None:
        from crispedit_lite.editing.registry import get_editor

        editor = get_editor(method)  # an unknown method is an error listing the known ones
        own_names = editor.settings.field_names() if editor.settings else ()
        shared, own = {}, {}
        for key, value in values.items():
            if key in SHARED_FIELDS:
                shared[key] = value
            elif key in own_names:
                own[key] = value
            else:
                raise ValueError(f"EditConfig: {setting_error(method, key, f'{key}={value!r}')}")
        for f in fields(self):
            if f.name not in ("method", "settings"):
                object.__setattr__(self, f.name, shared.get(f.name, f.default))
        object.__setattr__(self, "method", method)
        object.__setattr__(self, "settings", _settings_for(editor, settings, own))
        self._check()

    def _check(self) -> None:
        for name in ("epochs", "batch_size", "chunk_size", "n_capability", "capability_max_length"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not 0 < self.gamma <= 1:
            raise ValueError(f"gamma must lie in (0, 1], got {self.gamma}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.projection not in ("fast", "reference"):
            raise ValueError(f"projection must be 'fast' or 'reference', got {self.projection!r}")
        if self.layers is not None:
            object.__setattr__(self, "layers", tuple(int(i) for i in self.layers))

    def __getattr__(self, name: str) -> Any:
        """The method's own settings as attributes; another method's setting is an error naming it."""
        settings = self.__dict__.get("settings")
        if not name.startswith("_") and settings is not None and name in settings.field_names():
            return getattr(settings, name)
        if not name.startswith("_") and "method" in self.__dict__:
            from crispedit_lite.editing.registry import settings_owners

            owners = settings_owners(name)
            if owners:
                raise AttributeError(f"EditConfig of method {self.method!r} has no setting {name!r}; "
                                     f"{', '.join(owners)} read it")
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def with_(self, **changes: Any) -> EditConfig:
        """A copy with some fields (shared, or the method's own settings) changed."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready flat dict: every shared field, then the method's own settings (tuples as lists)."""
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "settings"}
        d["layers"] = list(self.layers) if self.layers is not None else None
        if self.settings is not None:
            d.update(self.settings.to_dict())
        return d

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> EditConfig:
        """The config of a flat dict written by :meth:`to_dict` (a results record's ``config``).

        Records written before the settings moved into each editor listed every method's settings
        and an ``extra`` dict: those other methods' keys are ignored, and a block of ``extra`` named
        after the method's family holds its settings without their prefix (``{"mend": {"rank": 8}}``
        is ``mend_rank=8``). Any other unknown key is an error.
        """
        from crispedit_lite.editing.registry import get_editor, settings_owners

        values = dict(record)
        extra = values.pop("extra", None)
        values.pop("settings", None)
        method = values.pop("method", "crispedit")
        editor = get_editor(method)
        own = editor.settings.field_names() if editor.settings else ()
        for family, block in (extra.items() if isinstance(extra, Mapping) else ()):
            if not (isinstance(block, Mapping) and any(f.startswith(f"{family}_") for f in own)):
                continue  # another method's block
            for key, value in block.items():
                name = key if key.startswith(f"{family}_") else f"{family}_{key}"
                if name not in own:
                    raise ValueError(f"EditConfig: record's extra[{family!r}] has {key!r}, which is no "
                                     f"setting of method {method} (it reads {', '.join(own)})")
                values.setdefault(name, value)
        kept = {k: v for k, v in values.items()
                if k in SHARED_FIELDS or k in own or not settings_owners(k)}  # unknown: an error below
        return cls(method, **kept)


#: The fields of :class:`EditConfig` that every method shares (all but ``method`` and ``settings``).
SHARED_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(EditConfig)
                                       if f.name not in ("method", "settings"))


def _settings_for(editor: Any, given: Any, own: dict[str, Any]) -> EditorSettings | None:
    """The method's settings instance from ``settings=`` (instance, mapping or None) and flat values."""
    cls = editor.settings
    if isinstance(given, EditorSettings) and not isinstance(given, cls or ()):
        changed = sorted(k for k, v in given.to_dict().items() if v != type(given)().to_dict()[k])
        if changed:  # another method's settings, e.g. carried over by dataclasses.replace(method=...)
            raise ValueError(f"EditConfig: method {editor.name!r} does not read {type(given).__name__} "
                             f"({', '.join(changed)} changed from the defaults)")
        given = None
    if cls is None:
        if given:
            raise ValueError(f"EditConfig: method {editor.name!r} has no settings of its own, got {given!r}")
        return None
    if given is None:
        return cls(**own)
    if isinstance(given, cls):
        return replace(given, **own) if own else given
    if isinstance(given, Mapping):
        unknown = sorted(set(given) - set(cls.field_names()))
        if unknown:
            raise ValueError(f"EditConfig: {setting_error(editor.name, unknown[0], unknown[0])}")
        return cls(**{**given, **own})
    raise ValueError(f"EditConfig: settings must be a {cls.__name__}, a mapping of its fields or None, "
                     f"got {type(given).__name__}")


def setting_error(method: str, key: str, shown: str | None = None) -> str:
    """Why ``key`` is no setting of ``method``: another method's (naming it) or unknown (with a hint).

    ``shown`` is how the caller names the setting (``lora_rank=4``).

    Listed on the book page ``api``.
    """
    import difflib

    from crispedit_lite.editing.registry import get_editor, registry, settings_owners

    editor = get_editor(method)
    own = list(editor.settings.field_names()) if editor.settings else []
    reads = (", ".join(own) + " and the shared settings") if own else "only the shared settings"
    owners = settings_owners(key)
    if owners:
        label = registry()[owners[0]].label
        article = "an" if label[:1].lower() in "aeiou" else "a"
        return (f"{shown or key} is {article} {label} setting (read by {', '.join(owners)}); "
                f"method {method} reads: {reads}")
    close = difflib.get_close_matches(key, own + list(SHARED_FIELDS), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return (f"unknown setting {key!r} for method {method}{hint}; it reads: {reads} "
            f"({', '.join(SHARED_FIELDS)})")


def paper_config(method: str = "crispedit", dataset: str = "zsre", *, model: str | None = None,
                 **changes: Any) -> EditConfig:
    r"""The paper's settings (Table 2, App. E; Table 5 for Qwen-2.5-1.5B) for ``model`` on ``dataset``.

    LLaMA-3-8B (and any model that is not the paper's): CrispEdit :math:`(n, \gamma)` = (10,000, 0.7)
    on ZsRE and (10,000, 0.9) on CounterFact / WikiBigEdit, (1,000, 0.7) on ``zsre10k`` (Table 4);
    CrispEdit-Seq (30, 0.999) on ZsRE / CounterFact and (200, 0.995) on WikiBigEdit. Qwen-2.5-1.5B:
    n = 1,000 with the same :math:`\gamma`, CrispEdit-Seq (30, 0.995)
    (:mod:`crispedit_lite.editing.paper_presets`). ``dataset`` takes the names of
    :data:`~crispedit_lite.editing.paper_presets.PAPER_DATASET_NAMES`; ``changes`` override any
    shared field or setting of the method. Derived in notebook ``09_reproduce_llama3_8b``.
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
    far more steps than a handful of CPU edits get in 25 epochs). ``changes`` override any shared
    field or setting of the method (``cpu_config("memit", cf_lambda=1.5e3)``).

    Derived in notebook ``06_crispedit_on_a_small_lm``.
    """
    base = dict(method=method, epochs=60, batch_size=8, lr=5e-4, gamma=0.7, n_capability=32,
                capability_max_length=128, capability_source="offline", chunk_size=8,
                eigh_dtype="float64")
    base.update(changes)
    return EditConfig(**base)
