r"""CrispEdit-Seq (Alg. 2): CrispEdit chunk by chunk, merging each chunk's edit-data K-FAC.

See :mod:`crispedit_lite.editing.loops.sequential`. Its one setting of its own,
``seq_mask_prompt=True``, is the Table 6 ablation (prompt-masked edit-data factors). Derived in
notebook ``07_sequential_editing``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from crispedit_lite.editing.registry import EditJob, Editor
from crispedit_lite.editing.settings import EditorSettings

__all__ = ["EDITORS", "PAPER_N_GAMMA", "CrispEditSeqSettings"]

#: The paper's (n, gamma) of CrispEdit-Seq by model family and dataset: LLaMA-3-8B (30, 0.999) on ZsRE
#: and CounterFact, (200, 0.995) on WikiBigEdit (App. E, Table 1); Qwen-2.5-1.5B (30, 0.995) (Table 5).
PAPER_N_GAMMA: dict[str, dict[str, tuple[int, float]]] = {
    "llama3-8b": {"zsre": (30, 0.999), "zsre10k": (30, 0.999), "counterfact": (30, 0.999),
                  "wikibigedit": (200, 0.995)},
    "qwen2.5-1.5b": {d: (30, 0.995) for d in ("zsre", "zsre10k", "counterfact", "wikibigedit")},
}


@dataclass(frozen=True)
class CrispEditSeqSettings(EditorSettings):
    """CrispEdit-Seq's own setting.

    Attributes:
        seq_mask_prompt: collect each chunk's edit-data K-FAC on the target positions only (the
            Table 6 ablation); the paper's default lets the whole prompt + target text in.

    Described on the book page ``running``.
    """

    seq_mask_prompt: bool = False
    paper: ClassVar[dict[str, Any]] = {"seq_mask_prompt": False}  # App. E: full prompt + target text


def run(job: EditJob):
    """CrispEdit-Seq on ``job``."""
    from crispedit_lite.editing.loops.sequential import run_chunks

    return run_chunks(job, project=True)


EDITORS = (Editor(
    name="crispedit_seq", changes="down_proj of the edited layers",
    statistics=("capability_kfac", "edit_kfac"), update="projected_gradient", run=run,
    label="CrispEdit-Seq", color="#015f45", settings=CrispEditSeqSettings, paper_row="CrispEdit-Seq",
    paper_n_gamma=PAPER_N_GAMMA, sequential=True, chunk_hook=True,
    paper_run={"dtype": "bfloat16"},  # run_crispedit.py --sequential_edit, the model in bfloat16
    summary="CrispEdit in chunks; each chunk's K-FAC is merged into the protected statistics"),)
