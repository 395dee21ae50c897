r"""CrispEdit-Seq (Alg. 2): CrispEdit chunk by chunk, merging each chunk's edit-data K-FAC.

See :mod:`crispedit_lite.editing.loops.sequential`. ``seq_mask_prompt=True`` is the Table 6 ablation
(prompt-masked edit-data factors). Derived in notebook ``07_sequential_editing``.
"""

from __future__ import annotations

from crispedit_lite.editing.registry import EditJob, Editor


def run(job: EditJob):
    """CrispEdit-Seq on ``job``."""
    from crispedit_lite.editing.loops.sequential import run_chunks

    return run_chunks(job, project=True)


EDITORS = (Editor(
    name="crispedit_seq", changes="down_proj of the edited layers",
    statistics=("capability_kfac", "edit_kfac"), update="projected_gradient", run=run,
    paper_row="CrispEdit-Seq", sequential=True, chunk_hook=True,
    summary="CrispEdit in chunks; each chunk's K-FAC is merged into the protected statistics"),)
