"""K-FAC for linear layers: hooks, factors, merging, the on-disk cache, checkpoints, all-reduce.

Derived in notebook ``04_kfac_step_by_step``.
"""

from crispedit_lite.kfac.checkpoint import KFACSums, load_checkpoint, save_checkpoint
from crispedit_lite.kfac.factors import KFACFactors, merge_kfac
from crispedit_lite.kfac.hooks import accumulate_kfac, collect_kfac, resolve_modules
from crispedit_lite.kfac.io import load_kfac, save_kfac

__all__ = ["KFACFactors", "KFACSums", "accumulate_kfac", "collect_kfac", "merge_kfac", "resolve_modules",
           "save_kfac", "load_kfac", "save_checkpoint", "load_checkpoint"]
