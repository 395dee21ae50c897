r"""CrispEdit (Alg. 1): FT-M with every gradient projected onto the low-curvature subspace of K-FAC.

The projector is :math:`\mathbf P_\gamma(G)=U_{out}\big((U_{out}^\top G U_{in})\odot M\big)U_{in}^\top`
with the mask :math:`M` of the energy rule (eq. 3) on the capability factors :math:`A\otimes S`.
Derived in notebooks ``05_matrix_free_projector`` and ``06_crispedit_on_a_small_lm``.
"""

from __future__ import annotations

from crispedit_lite.editing.loops.projected import run_gradient_editor
from crispedit_lite.editing.registry import EditJob, Editor

__all__ = ["EDITORS", "PAPER_N_GAMMA"]

#: The paper's capability-set size and energy threshold (n, gamma) by model family and dataset.
#: LLaMA-3-8B: Table 2 / App. E (Table 1) and Table 4 (``zsre10k``: 10,000 ZsRE edits, n = 1,000);
#: Qwen-2.5-1.5B: Table 5 (n = 1,000). Every method without its own values is run with these.
PAPER_N_GAMMA: dict[str, dict[str, tuple[int, float]]] = {
    "llama3-8b": {"zsre": (10_000, 0.7), "zsre10k": (1_000, 0.7), "counterfact": (10_000, 0.9),
                  "wikibigedit": (10_000, 0.9)},
    "qwen2.5-1.5b": {"zsre": (1_000, 0.7), "zsre10k": (1_000, 0.7), "counterfact": (1_000, 0.9),
                     "wikibigedit": (1_000, 0.9)},
}


def run(job: EditJob):
    """CrispEdit on ``job`` (see module docstring)."""
    return run_gradient_editor(job, job.modules, projector_kind="kronecker",
                               statistics=("capability_kfac",))


EDITORS = (Editor(
    name="crispedit", changes="down_proj of the edited layers", statistics=("capability_kfac",),
    update="projected_gradient", run=run, label="CrispEdit", color="#029e73", paper_row="CrispEdit",
    paper_n_gamma=PAPER_N_GAMMA, sequential_form="crispedit_seq",
    paper_run={"dtype": "bfloat16"},  # run_crispedit.py loads the model in bfloat16
    summary="FT-M, gradients projected by the K-FAC low-curvature projector (gamma)"),)
