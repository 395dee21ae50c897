"""Editing methods on real causal LMs: settings, the FT-M loop, capability curvature, the methods.

Derived in notebooks ``06_crispedit_on_a_small_lm``, ``07_sequential_editing``, ``08_one_framework``.
"""

from crispedit_lite.editing.config import METHODS, EditConfig, cpu_config, paper_config
from crispedit_lite.editing.kfac_cache import build_projectors, cache_key, capability_factors
from crispedit_lite.editing.methods import EditResult, edit
from crispedit_lite.editing.save import save_edited
from crispedit_lite.editing.trainer import TrainLog, ft_m_loss, train_edits

__all__ = ["METHODS", "EditConfig", "EditResult", "TrainLog", "build_projectors", "cache_key",
           "capability_factors", "cpu_config", "edit", "ft_m_loss", "paper_config", "save_edited",
           "train_edits"]
