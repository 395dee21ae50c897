"""K-FAC for linear layers: collection by hooks, the factor container, merging, and the on-disk cache.

Derived in notebook ``04_kfac_step_by_step``.
"""

from crispedit_lite.kfac.factors import KFACFactors, merge_kfac
from crispedit_lite.kfac.hooks import collect_kfac, resolve_modules
from crispedit_lite.kfac.io import load_kfac, save_kfac

__all__ = ["KFACFactors", "collect_kfac", "merge_kfac", "resolve_modules", "save_kfac", "load_kfac"]
