r"""CrispEdit (Alg. 1): FT-M with every gradient projected onto the low-curvature subspace of K-FAC.

The projector is :math:`\mathbf P_\gamma(G)=U_{out}\big((U_{out}^\top G U_{in})\odot M\big)U_{in}^\top`
with the mask :math:`M` of the energy rule (eq. 3) on the capability factors :math:`A\otimes S`.
Derived in notebooks ``05_matrix_free_projector`` and ``06_crispedit_on_a_small_lm``.
"""

from __future__ import annotations

from crispedit_lite.editing.loops.projected import run_gradient_editor
from crispedit_lite.editing.registry import EditJob, Editor


def run(job: EditJob):
    """CrispEdit on ``job`` (see module docstring)."""
    return run_gradient_editor(job, job.modules, projector_kind="kronecker",
                               statistics=("capability_kfac",))


EDITORS = (Editor(
    name="crispedit", changes="down_proj of the edited layers", statistics=("capability_kfac",),
    update="projected_gradient", run=run, paper_row="CrispEdit",
    summary="FT-M, gradients projected by the K-FAC low-curvature projector (gamma)"),)
