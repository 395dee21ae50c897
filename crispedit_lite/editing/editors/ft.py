r"""FT (FT-M, Zhang et al. 2024): the unprojected baseline, and FT-Seq, the same in chunks.

FT-Seq (paper Table 1) edits in the chunks of CrispEdit-Seq (``chunk_size``, same order, same
per-chunk loop) without any projection. Derived in notebooks ``06_crispedit_on_a_small_lm`` and
``07_sequential_editing``.
"""

from __future__ import annotations

from crispedit_lite.editing.loops.projected import run_gradient_editor
from crispedit_lite.editing.registry import EditJob, Editor


def run(job: EditJob):
    """Plain FT-M on the edited ``down_proj`` matrices."""
    return run_gradient_editor(job, job.modules, projector_kind=None)


def run_seq(job: EditJob):
    """FT-Seq: FT-M chunk by chunk, no projection (the sequential loop of CrispEdit-Seq)."""
    from crispedit_lite.editing.loops.sequential import run_chunks

    return run_chunks(job, project=False)


EDITORS = (
    Editor(name="ft", changes="down_proj of the edited layers", statistics=(),
           update="projected_gradient", run=run, paper_row="FT",
           summary="FT-M on the edited down_proj matrices, no projection"),
    Editor(name="ft_seq", changes="down_proj of the edited layers", statistics=(),
           update="projected_gradient", run=run_seq, paper_row="FT-Sequential", sequential=True,
           summary="FT-M chunk by chunk (CrispEdit-Seq's schedule), no projection", chunk_hook=True),
)
