"""Editing methods on real causal LMs: settings, the registry of editors, the FT-M loop, statistics.

``EditConfig`` holds what every method reads; each editor's own settings are a
:class:`~crispedit_lite.editing.settings.EditorSettings` subclass declared in its file and named in its
:class:`Editor` record.

Derived in notebooks ``06_crispedit_on_a_small_lm``, ``07_sequential_editing``, ``08_one_framework``.
"""

from crispedit_lite.editing.config import EditConfig, cpu_config, paper_config
from crispedit_lite.editing.kfac_cache import build_projectors, cache_key, capability_factors
from crispedit_lite.editing.loops.trainer import TrainLog, ft_m_loss, train_edits
from crispedit_lite.editing.methods import EditResult, edit
from crispedit_lite.editing.registry import (
    EditJob,
    Editor,
    editor_names,
    get_editor,
    needs_capability,
    registry,
)
from crispedit_lite.editing.save import save_edited
from crispedit_lite.editing.settings import EditorSettings


def __getattr__(name: str):
    """``METHODS``: the registered editor names."""
    if name == "METHODS":
        return editor_names()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["METHODS", "EditConfig", "EditJob", "EditResult", "Editor", "EditorSettings", "TrainLog",
           "build_projectors",
           "cache_key", "capability_factors", "cpu_config", "edit", "editor_names", "ft_m_loss",
           "get_editor", "needs_capability", "paper_config", "registry", "save_edited", "train_edits"]
