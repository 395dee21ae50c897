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


# The official FT run trains in float32 (run_crispedit.py --no_crisp); FT Sequential is the same loop
# over chunks of 100 edits (run_crispedit.py --no_crisp --sequential_edit --num_edits 100).
EDITORS = (
    Editor(name="ft", changes="down_proj of the edited layers", statistics=(),
           update="projected_gradient", run=run, label="FT", color="#949494", paper_row="FT",
           paper_run={"dtype": "float32"}, sequential_form="ft_seq",
           summary="FT-M on the edited down_proj matrices, no projection"),
    Editor(name="ft_seq", changes="down_proj of the edited layers", statistics=(),
           update="projected_gradient", run=run_seq, label="FT-Seq", color="#595959",
           paper_row="FT Sequential", paper_run={"chunk_size": 100, "dtype": "float32"},
           sequential=True, chunk_hook=True,
           summary="FT-M chunk by chunk (CrispEdit-Seq's schedule), no projection"),
)
