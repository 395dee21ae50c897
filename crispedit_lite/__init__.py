"""crispedit-lite: a thin, tested library behind the CrispEdit tutorial book.

CrispEdit (Ikram et al., 2026, arXiv:2602.15823) edits an LLM by fine-tuning a few MLP matrices while
projecting every gradient onto the low-curvature subspace of a capability loss. One line per folder,
lowest layer first (each imports only from its own layer and those below):

* the method (``curvature``, ``energy``, ``projector``, ``optim``, ``ekfac``, ``costs``, ``atomic``):
  model-agnostic math;
* :mod:`~crispedit_lite.kfac`: Kronecker factors by hooks, merge, cache, checkpoints, all-reduce;
* :mod:`~crispedit_lite.fastproject`: faster projections with the same result;
* :mod:`~crispedit_lite.models`: loading real LMs, embedded models, presets;
* :mod:`~crispedit_lite.data`: edit records, capability text, batches;
* :mod:`~crispedit_lite.editing`: the registry of editors, settings, ``edit()``, the statistics cache;
* :mod:`~crispedit_lite.evaluation`: edit metrics and capability proxies;
* :mod:`~crispedit_lite.reproduction`: run, results JSON, the paper's tables beside runs;
* :mod:`~crispedit_lite.teaching`: what the book's pages draw and print;
* :mod:`~crispedit_lite.exercises`: graders, student versions, grading;
* :mod:`~crispedit_lite.cli`: ``python -m crispedit_lite``.
"""

from crispedit_lite.kfac import KFACFactors, collect_kfac, load_kfac, merge_kfac, save_kfac
from crispedit_lite.optim import ProjectedAdam, ProjectedSGD
from crispedit_lite.projector import InputNullspaceProjector, KroneckerProjector, energy_rank

__version__ = "0.1.0"

__all__ = [
    "KFACFactors",
    "collect_kfac",
    "merge_kfac",
    "save_kfac",
    "load_kfac",
    "KroneckerProjector",
    "InputNullspaceProjector",
    "energy_rank",
    "ProjectedAdam",
    "ProjectedSGD",
]
