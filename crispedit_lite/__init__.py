"""crispedit-lite: a thin, tested library behind the CrispEdit tutorial book.

CrispEdit (Ikram et al., 2026, arXiv:2602.15823) edits an LLM by fine-tuning a few MLP matrices while
projecting every gradient onto the low-curvature subspace of a capability loss. Modules, in reading
order:

* the method: :mod:`~crispedit_lite.curvature` (exact Hessian / Gauss-Newton / Bregman),
  :mod:`~crispedit_lite.kfac` (Kronecker factors, merge, cache), :mod:`~crispedit_lite.ekfac`,
  :mod:`~crispedit_lite.projector` (energy rule, matrix-free projector),
  :mod:`~crispedit_lite.optim` (projected optimisers), :mod:`~crispedit_lite.fastproject` (faster
  equivalent projections), :mod:`~crispedit_lite.costs`, :mod:`~crispedit_lite.teaching.toy`;
* real models: :mod:`~crispedit_lite.models`, :mod:`~crispedit_lite.data`,
  :mod:`~crispedit_lite.data.capability`, :mod:`~crispedit_lite.data.batches`, :mod:`~crispedit_lite.editing`,
  :mod:`~crispedit_lite.evaluation`;
* reproduction: :mod:`~crispedit_lite.reproduction.experiment`, :mod:`~crispedit_lite.reproduction.results`,
  :mod:`~crispedit_lite.reproduction.paper_tables`, :mod:`~crispedit_lite.cli` (``python -m crispedit_lite``).
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
