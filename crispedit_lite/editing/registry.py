r"""One registry of editors: what each changes, which statistics it reads, and how it updates.

Every editor of the paper's comparison (CrispEdit Table 1) is one small module under
:mod:`crispedit_lite.editing.editors` that defines ``EDITORS``, a tuple of :class:`Editor` records.
:func:`crispedit_lite.editing.edit`, the command line,
:func:`crispedit_lite.reproduction.experiment.run_experiment`,
the reproduce YAMLs and the results JSON all look methods up here, so adding an editor means adding
one file, its tests and one line in :data:`EDITOR_MODULES`.

An editor declares

* ``changes``: which matrices it changes (the ``down_proj`` of the edited layers, one of them, or
  adapters);
* ``statistics``: which statistics it reads, from :data:`STATISTICS`. The capability K-FAC factors
  :math:`(A, S)` and the input covariance :math:`C=\mathbb E[k k^\top]` are the same cache entry: the
  count-normalised input factor :math:`A` of K-FAC *is* MEMIT's and AlphaEdit's covariance, so one
  statistics file serves CrispEdit, Adam-NSCL, MEMIT and AlphaEdit;
* ``update``: ``"projected_gradient"`` (the FT-M loop with a projected or plain optimiser) or
  ``"closed_form"`` (a least-squares solve, MEMIT-style).

Derived in notebook ``08_one_framework``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from torch import Tensor, nn

__all__ = ["EDITOR_MODULES", "STATISTICS", "EditJob", "Editor", "editor_names", "get_editor",
           "needs_capability", "registry"]

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
                        "factor A of the same module, from the same cache)",
    "edit_kfac": "K-FAC factors of the edit data, merged chunk by chunk (sequential editing)",
}


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

    Derived in notebook ``08_one_framework``.
    """

    model: nn.Module
    tokenizer: Any
    requests: Sequence[Any]
    config: Any
    modules: list[str]
    capability_texts: Sequence[str] | None = None
    cache_dir: str | None = None
    progress: bool = True
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


@dataclass(frozen=True)
class Editor:
    """One editing method of the comparison.

    Attributes:
        name: the method name used by configs, the CLI and results (``"crispedit"``).
        changes: which matrices it changes, in words.
        statistics: the statistics it reads (keys of :data:`STATISTICS`; empty: none).
        update: ``"projected_gradient"`` or ``"closed_form"``.
        run: ``run(job) -> EditResult``.
        paper_row: its row name in the paper's Table 1 (empty if it has none).
        sequential: edits arrive in chunks (a lifelong / sequential editor).
        summary: one line for listings.

    Derived in notebook ``08_one_framework``.
    """

    name: str
    changes: str
    statistics: tuple[str, ...]
    update: Literal["projected_gradient", "closed_form"]
    run: Callable[[EditJob], Any]
    paper_row: str = ""
    sequential: bool = False
    summary: str = ""

    def __post_init__(self) -> None:
        unknown = [s for s in self.statistics if s not in STATISTICS]
        if unknown:
            raise ValueError(f"editor {self.name!r}: unknown statistics {unknown}; known: "
                             f"{sorted(STATISTICS)}")
        if self.update not in ("projected_gradient", "closed_form"):
            raise ValueError(f"editor {self.name!r}: update must be 'projected_gradient' or "
                             f"'closed_form', got {self.update!r}")

    def describe(self) -> dict[str, Any]:
        """JSON-ready declaration (recorded in every results file)."""
        return {"name": self.name, "changes": self.changes, "statistics": list(self.statistics),
                "update": self.update, "paper_row": self.paper_row, "sequential": self.sequential}


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
        _REGISTRY = table
    return _REGISTRY


def editor_names() -> tuple[str, ...]:
    """Names of every registered editor, in registry order.

    Derived in notebook ``08_one_framework``.
    """
    return tuple(registry())


def get_editor(name: str) -> Editor:
    """The editor called ``name``; an unknown name is an error that lists the known ones.

    Derived in notebook ``08_one_framework``.
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

    Derived in notebook ``08_one_framework``.
    """
    stats = get_editor(name).statistics
    return "capability_kfac" in stats or "input_covariance" in stats
