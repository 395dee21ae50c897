"""crispedit-lite: a thin, tested library behind the CrispEdit tutorial book.

CrispEdit (Ikram et al., 2026, arXiv:2602.15823) edits an LLM by fine-tuning a few MLP matrices while
projecting every gradient onto the low-curvature subspace of a capability loss. Modules, in reading
order: :mod:`~crispedit_lite.curvature` (exact references), :mod:`~crispedit_lite.kfac` (Kronecker
factors), :mod:`~crispedit_lite.projector` (energy rule, matrix-free projector),
:mod:`~crispedit_lite.optim` (projected optimisers).
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
