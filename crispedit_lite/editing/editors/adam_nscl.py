r"""Adam-NSCL (Wang et al. 2021): gradients projected onto the null space of the inputs (S = I).

The projector keeps :math:`G\,U_0U_0^\top` with :math:`U_0` the low-energy eigenvectors of the input
covariance :math:`A` (energy threshold ``nscl_gamma``, early stop ``nscl_early_stop``, as the paper's
run). It is CrispEdit with :math:`S=I`. Derived in notebook ``08_one_framework``.
"""

from __future__ import annotations

from crispedit_lite.editing.loops.projected import run_gradient_editor
from crispedit_lite.editing.registry import EditJob, Editor


def run(job: EditJob):
    """Adam-NSCL on ``job``."""
    cfg = job.config
    return run_gradient_editor(job, job.modules, projector_kind="input", gamma=cfg.nscl_gamma,
                               early_stop=cfg.nscl_early_stop, statistics=("input_covariance",))


EDITORS = (Editor(
    name="adam_nscl", changes="down_proj of the edited layers", statistics=("input_covariance",),
    update="projected_gradient", run=run, paper_row="Adam-NSCL",
    summary="FT-M, gradients projected onto the input covariance's null space (S = I)"),)
