r"""One registry of editors: what each changes, which statistics it reads, how it updates, how it looks.

Every editor of the paper's comparison (CrispEdit Table 1) is one small module under
:mod:`crispedit_lite.editing.editors` that defines ``EDITORS``, a tuple of :class:`Editor` records.
:func:`crispedit_lite.editing.edit`, :class:`~crispedit_lite.editing.config.EditConfig`, the command
line (``--method``, ``--set``), :func:`crispedit_lite.reproduction.experiment.run_experiment`, the
paper presets, the reproduce YAMLs, the CPU tables and the book's figure colours all look methods up
here, so adding an editor means adding one file, its tests and one line in :data:`EDITOR_MODULES`.

An editor declares

* ``changes``: which matrices it changes (the ``down_proj`` of the edited layers, one of them, or
  adapters);
* ``statistics``: which statistics it reads, from :data:`STATISTICS`. The capability K-FAC factors
  :math:`(A, S)` and the input covariance :math:`C=\mathbb E[k k^\top]` are the same cache entry: the
  count-normalised input factor :math:`A` of K-FAC is MEMIT's and AlphaEdit's estimator (the
  uncentred second moment of the layer's inputs divided by the token count), so one statistics file
  serves CrispEdit, Adam-NSCL, MEMIT and AlphaEdit. The sample is not MEMIT's: :math:`n` capability
  texts cut to ``capability_max_length`` tokens, each text's last token left out (K-FAC counts only
  positions with a next-token label), where MEMIT counts every token of 100,000 full-length Wikipedia
  texts. On the same texts the two differ by a few percent, more for short texts (2-3 % at 128 tokens,
  6-8 % at 32 on SmolLM2; ``benchmarks/closed_form_deviations.py``); ``cf_covariance="every_token"``
  counts every position (:mod:`~crispedit_lite.editing.loops.covariance`);
* ``update``: how it turns the edits into a weight change, one of :data:`UPDATES`:
  ``"projected_gradient"`` (the FT-M loop with a projected or plain optimiser), ``"closed_form"`` (a
  least-squares solve, MEMIT-style) or ``"learned"`` (a trained network maps the edit's gradient to the
  change in one step, MEND);
* ``settings``: the :class:`~crispedit_lite.editing.settings.EditorSettings` subclass of what only its
  family reads (``None``: nothing beyond the shared :class:`~crispedit_lite.editing.config.EditConfig`
  fields), and ``presets``, the model-specific defaults it needs (layers and values by model shape);
* how it is shown and reproduced: ``label`` and ``color`` (one spelling and one colour in every table
  and figure), ``paper_row`` (the paper's exact row text), ``paper_run`` (how the official run behind
  that row departed from CrispEdit's settings: chunks, epochs, precision), ``paper_n_gamma`` (the
  paper's capability-set size and energy threshold) and ``sequential_form`` (its chunked variant).

Derived in notebook ``08_one_framework``.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from torch import Tensor, nn

from crispedit_lite.editing.settings import EditorSettings

__all__ = ["EDITOR_MODULES", "PAPER_DTYPE_DEFAULT", "PAPER_RUN_KEYS", "STATISTICS", "UPDATES", "EditJob",
           "Editor", "base_methods", "editor_names", "get_editor", "needs_capability", "paper_dtype",
           "paper_dtypes", "registry", "sequential_form", "settings_owners"]

# One line per editor module (crispedit_lite/editing/editors/<name>.py); a module may define the
# batch and the sequential variant of one method.
EDITOR_MODULES: tuple[str, ...] = (
    "crispedit", "crispedit_seq", "ft", "locbf_ft", "lora", "adam_nscl",
    "ultraedit",
    "memit", "alphaedit",
    "mend",
)

STATISTICS: dict[str, str] = {
    "capability_kfac": "K-FAC factors A (input second moment) and S (output-gradient second moment) "
                       "of the capability loss",
    "input_covariance": "the input second moment C = E[k k^T] per token on capability text (the K-FAC "
                        "factor A of the same module, from the same cache: every position but each "
                        "text's last; or every position with cf_covariance='every_token')",
    "edit_kfac": "K-FAC factors of the edit data, merged chunk by chunk (sequential editing)",
}

#: How an editor turns the edits into a weight change (its ``update``). What a method reads follows
#: from it (:mod:`crispedit_lite.cli.readers`): only the gradient loop reads epochs, batch size,
#: learning rate and optimiser.
UPDATES: dict[str, str] = {
    "projected_gradient": "gradient steps on the edit loss (the FT-M loop), the gradient projected or not",
    "closed_form": "a least-squares solve for the change of each edited matrix (MEMIT, AlphaEdit, UltraEdit)",
    "learned": "one step whose change a trained network computes from the edit's gradient factors (MEND); "
               "no optimiser loop, no solve",
}

#: What an editor's ``paper_run`` may say about the official run behind its paper row.
PAPER_RUN_KEYS: dict[str, str] = {
    "chunk_size": "the row ran in chunks of this many edits (the reproduce cell's CHUNK_SIZE)",
    "epochs": "epochs (or steps) per chunk of the official run (EPOCHS)",
    "config": "other EditConfig settings of the official run (CONFIG), e.g. {'lr': 5e-3}",
    "dtype": "the precision the official run loads the model in: 'float32', 'bfloat16' or 'float16' "
             "(the reproduce cell's DTYPE; see paper_dtype)",
    "differs": "how the reproduce cell's run still differs from the official run of the row, in words "
               "(written into the cell's header)",
}
_HEX = re.compile(r"^#[0-9a-fA-F]{6}$")


@dataclass
class EditJob:
    """Everything an editor's ``run`` receives.

    Attributes:
        model, tokenizer: the model (edited in memory) and its tokenizer (right padding).
        requests: the edit requests.
        config: the run's :class:`~crispedit_lite.editing.config.EditConfig`.
        modules: the resolved module names of the edited layers (``config.module_pattern``).
        capability_texts: capability corpus for the editors that read statistics.
        cache_dir: where capability statistics are cached.
        progress: show tqdm bars.
        after_chunk: ``after_chunk(chunk_index, chunk, state)``, called after every chunk by the
            editors with ``chunk_hook`` (see :mod:`crispedit_lite.editing.loops.sequential`).
        carry: the state a sequential editor hands from one call to the next, so that a stream of
            chunks can be edited over many calls (one chunk per call, evaluated in between, resumed
            after an interruption) exactly as one call over all chunks: the chunks done, and the
            editor's own state (CrispEdit-Seq's running K-FAC factors and Adam's moments, MEMIT-Seq's
            and AlphaEdit-Seq's key cache and covariance, UltraEdit's normalisers): statistics of the
            model the stream started from, never recomputed on the edited model. ``None``: a fresh run that
            hands nothing on. An empty dict starts a stream; the editor fills it in place.

    Listed on the book page ``api``.
    """

    model: nn.Module
    tokenizer: Any
    requests: Sequence[Any]
    config: Any
    modules: list[str]
    capability_texts: Sequence[str] | None = None
    cache_dir: str | None = None
    progress: bool = True
    after_chunk: Callable[[int, list[Any], Any], None] | None = None
    carry: dict[str, Any] | None = None
    _factors: tuple[dict, dict] | None = field(default=None, repr=False)

    def collate(self, batch: Sequence[Any]) -> dict[str, Tensor]:
        """FT-M batch of edit requests (prompt tokens masked)."""
        from crispedit_lite.data.batches import tokenize_edits

        return tokenize_edits(batch, self.tokenizer)

    def capability_factors(self, modules: Sequence[str] | None = None) -> tuple[dict, dict[str, Any]]:
        """K-FAC factors of ``modules`` (default: :attr:`modules`) on the capability texts, cached.

        Returns ``(factors, info)`` as :func:`~crispedit_lite.editing.kfac_cache.capability_factors`.
        """
        from crispedit_lite.editing.kfac_cache import capability_factors

        modules = list(self.modules if modules is None else modules)
        if self._factors is not None and list(self._factors[0]) == modules:
            return self._factors
        if not self.capability_texts:
            raise ValueError(f"method {self.config.method!r} needs capability_texts for its statistics")
        cfg = self.config
        self._factors = capability_factors(
            self.model, self.tokenizer, modules, self.capability_texts,
            max_length=cfg.capability_max_length, labels=cfg.kfac_labels, seed=cfg.seed,
            cache_dir=self.cache_dir, progress=self.progress)
        return self._factors


@dataclass(frozen=True, eq=False)
class Editor:
    r"""One editing method of the comparison.

    Attributes:
        name: the method name used by configs, the CLI and results (``"crispedit"``).
        changes: which matrices it changes, in words.
        statistics: the statistics it reads (keys of :data:`STATISTICS`; empty: none).
        update: ``"projected_gradient"``, ``"closed_form"`` or ``"learned"`` (:data:`UPDATES`).
        run: ``run(job) -> EditResult``.
        label: its display name in every table and figure (``"FT-Seq"``).
        color: its colour in every figure, ``#rrggbb`` (a sequential form: a darker shade of its batch
            method's).
        settings: the :class:`~crispedit_lite.editing.settings.EditorSettings` subclass of its own
            settings, or ``None``; ``EditConfig(method=name).settings`` is its default instance.
        presets: model-specific defaults, ``{preset name: {"shape": (model_type, layers, hidden,
            intermediate), ...}}``; an editor with presets picks its own layers (:meth:`preset`).
        paper_row: its row in the paper's Table 1, exactly as printed (empty if it has none).
        paper_run: how the official run behind ``paper_row`` departed from CrispEdit's settings
            (keys of :data:`PAPER_RUN_KEYS`).
        paper_n_gamma: the paper's :math:`(n, \gamma)`, ``{model family: {dataset: (n, gamma)}}``
            (CrispEdit Table 2 / App. E, Tables 4, 5); empty: CrispEdit's values.
        sequential: edits arrive in chunks (a lifelong / sequential editor).
        sequential_form: the name of its chunked variant (``"memit_seq"``), if it has one.
        summary: one line for listings.
        chunk_hook: its ``run`` calls :attr:`EditJob.after_chunk` after every chunk.
        preflight: ``preflight(config, model, modules)``, its own checks of a run before any weights
            load (``model`` may be a skeleton on the meta device); raises ``ValueError("<setting>:
            <message>")`` naming one of its settings. ``None``: nothing beyond the shared checks.

    Listed on the book page ``api``.
    """

    name: str
    changes: str
    statistics: tuple[str, ...]
    update: Literal["projected_gradient", "closed_form", "learned"]
    run: Callable[[EditJob], Any]
    label: str = ""
    color: str = ""
    settings: type[EditorSettings] | None = None
    presets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    paper_row: str = ""
    paper_run: Mapping[str, Any] = field(default_factory=dict)
    paper_n_gamma: Mapping[str, Mapping[str, tuple[int, float]]] = field(default_factory=dict)
    sequential: bool = False
    sequential_form: str = ""
    summary: str = ""
    chunk_hook: bool = False
    preflight: Callable[[Any, nn.Module, list[str]], None] | None = None

    def __post_init__(self) -> None:
        def fail(what: str) -> None:
            raise ValueError(f"editor {self.name!r}: {what}")

        unknown = [s for s in self.statistics if s not in STATISTICS]
        if unknown:
            fail(f"unknown statistics {unknown}; known: {sorted(STATISTICS)}")
        if self.update not in UPDATES:
            fail(f"update must be one of {list(UPDATES)}, got {self.update!r}")
        if not self.label.strip():
            fail("label must be a non-empty display name")
        if not _HEX.match(self.color):
            fail(f"color must be a hex colour '#rrggbb', got {self.color!r}")
        if self.settings is not None and not (
                isinstance(self.settings, type) and issubclass(self.settings, EditorSettings)
                and dataclasses.is_dataclass(self.settings) and self.settings.__dataclass_params__.frozen):
            fail(f"settings must be a frozen dataclass subclassing EditorSettings, got {self.settings!r}")
        bad = sorted(set(self.paper_run) - set(PAPER_RUN_KEYS))
        if bad:
            fail(f"paper_run keys {bad} unknown; expected some of {list(PAPER_RUN_KEYS)}")
        if self.paper_run.get("dtype", "bfloat16") not in ("float32", "bfloat16", "float16"):
            fail(f"paper_run dtype must be 'float32', 'bfloat16' or 'float16', got "
                 f"{self.paper_run['dtype']!r}")
        no_shape = [k for k, v in self.presets.items() if not isinstance(v, Mapping) or "shape" not in v]
        if no_shape:
            fail(f"presets {no_shape} lack the 'shape' that identifies the model")
        if self.sequential_form and self.sequential:
            fail(f"a sequential editor has no sequential form, got {self.sequential_form!r}")

    def preset(self, model: nn.Module) -> tuple[str, Mapping[str, Any]] | None:
        """The entry of :attr:`presets` whose ``shape`` is ``model``'s: ``(name, entry)``, else ``None``."""
        from crispedit_lite.models.presets import _model_shape

        shape = _model_shape(model)
        return next(((k, v) for k, v in self.presets.items() if tuple(v["shape"]) == shape), None)

    def describe(self) -> dict[str, Any]:
        """JSON-ready declaration (recorded in every results file)."""
        return {"name": self.name, "label": self.label, "changes": self.changes,
                "statistics": list(self.statistics), "update": self.update, "paper_row": self.paper_row,
                "sequential": self.sequential,
                "settings": None if self.settings is None else self.settings.__name__}


_REGISTRY: dict[str, Editor] | None = None


def registry() -> dict[str, Editor]:
    """All editors by name, loaded once from :data:`EDITOR_MODULES`.

    Derived in notebook ``08_one_framework``.
    """
    global _REGISTRY
    if _REGISTRY is None:
        table: dict[str, Editor] = {}
        for mod in EDITOR_MODULES:
            for editor in importlib.import_module(f"crispedit_lite.editing.editors.{mod}").EDITORS:
                if editor.name in table:
                    raise ValueError(f"editor {editor.name!r} is registered twice (module {mod})")
                table[editor.name] = editor
        _check_table(table)
        _REGISTRY = table
    return _REGISTRY


def _check_table(table: Mapping[str, Editor]) -> None:
    """Labels and colours unique, sequential forms registered and sequential."""
    for attr in ("label", "color"):
        seen: dict[str, str] = {}
        for e in table.values():
            key = getattr(e, attr).lower()
            if key in seen:
                raise ValueError(f"editor {e.name!r}: {attr} {getattr(e, attr)!r} is already "
                                 f"{seen[key]!r}'s; every method has its own")
            seen[key] = e.name
    for e in table.values():
        if e.sequential_form and not (e.sequential_form in table and table[e.sequential_form].sequential):
            raise ValueError(f"editor {e.name!r}: sequential_form {e.sequential_form!r} is not a registered "
                             "sequential editor")


def editor_names() -> tuple[str, ...]:
    """Names of every registered editor, in registry order.

    Listed on the book page ``api``.
    """
    return tuple(registry())


def get_editor(name: str) -> Editor:
    """The editor called ``name``; an unknown name is an error that lists the known ones.

    Listed on the book page ``api``.
    """
    table = registry()
    if name not in table:
        import difflib

        close = difflib.get_close_matches(str(name), list(table), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown method {name!r}{hint}; known methods: {', '.join(table)}")
    return table[name]


def needs_capability(name: str) -> bool:
    """Whether method ``name`` reads capability-text statistics (K-FAC factors or covariance).

    Listed on the book page ``api``.
    """
    stats = get_editor(name).statistics
    return "capability_kfac" in stats or "input_covariance" in stats


def settings_owners(key: str) -> tuple[str, ...]:
    """The editors whose own settings (:attr:`Editor.settings`) have a field ``key``.

    Described on the book page ``running``.
    """
    return tuple(n for n, e in registry().items()
                 if e.settings is not None and key in e.settings.field_names())


#: The precision of an official run that declares none: run_crispedit.py's (CrispEdit's own runs).
PAPER_DTYPE_DEFAULT = "bfloat16"


def paper_dtype(name: str) -> str:
    """The precision the official run behind method ``name``'s paper row loaded the model in.

    The editor's ``paper_run["dtype"]`` (:data:`PAPER_DTYPE_DEFAULT` where it declares none). The
    reproduction cells run in it and record it (``reproduce/make_configs.py``).

    Described on the book page ``reproducing``.
    """
    return str(get_editor(name).paper_run.get("dtype", PAPER_DTYPE_DEFAULT))


def paper_dtypes() -> dict[str, str]:
    """``{method: precision of its official run}`` for every editor with a paper row: the one table.

    Listed on the book page ``api``.
    """
    return {n: paper_dtype(n) for n, e in registry().items() if e.paper_row}


def sequential_form(name: str) -> str:
    """The sequential variant of method ``name`` (itself if it is sequential); an error if it has none.

    Described on the book page ``running``.
    """
    editor = get_editor(name)
    if editor.sequential:
        return name
    if editor.sequential_form:
        return editor.sequential_form
    raise ValueError(f"method {name!r} has no sequential form; sequential methods: "
                     f"{[n for n, e in registry().items() if e.sequential]}")


def base_methods() -> tuple[str, ...]:
    """The methods of the comparison: every editor except the sequential forms of another one.

    Described on the book page ``running``.
    """
    forms = {e.sequential_form for e in registry().values()}
    return tuple(n for n in registry() if n not in forms)
