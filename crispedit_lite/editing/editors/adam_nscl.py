r"""Adam-NSCL (Wang et al. 2021): gradients projected onto the null space of the inputs (S = I).

The projector keeps :math:`G\,U_0U_0^\top` with :math:`U_0` the low-energy eigenvectors of the input
covariance :math:`A` (energy threshold ``nscl_gamma``, early stop ``nscl_early_stop``, as the paper's
run). It is CrispEdit with :math:`S=I`. Derived in notebook ``08_one_framework``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from crispedit_lite.editing.loops.projected import run_gradient_editor
from crispedit_lite.editing.registry import EditJob, Editor
from crispedit_lite.editing.settings import EditorSettings, check

__all__ = ["EDITORS", "AdamNSCLSettings"]


@dataclass(frozen=True)
class AdamNSCLSettings(EditorSettings):
    """Adam-NSCL's own settings (the paper's run: ``alphaedit_ft.py --energy_threshold 0.5``).

    Attributes:
        nscl_gamma: energy threshold on the input covariance, in (0, 1] (paper's run: 0.5).
        nscl_early_stop: its early stop, >= 0 (paper's run: 0.05).

    Described on the book page ``running``.
    """

    nscl_gamma: float = 0.5
    nscl_early_stop: float = 0.05
    paper: ClassVar[dict[str, Any]] = {"nscl_gamma": 0.5, "nscl_early_stop": 0.05}

    def __post_init__(self) -> None:
        super().__post_init__()
        check(0 < self.nscl_gamma <= 1, "nscl_gamma", "in (0, 1]", self.nscl_gamma)
        check(self.nscl_early_stop >= 0, "nscl_early_stop", ">= 0", self.nscl_early_stop)


def run(job: EditJob):
    """Adam-NSCL on ``job``."""
    s = job.config.settings
    return run_gradient_editor(job, job.modules, projector_kind="input", gamma=s.nscl_gamma,
                               early_stop=s.nscl_early_stop, statistics=("input_covariance",))


EDITORS = (Editor(
    name="adam_nscl", changes="down_proj of the edited layers", statistics=("input_covariance",),
    update="projected_gradient", run=run, label="Adam-NSCL", color="#cc78bc", settings=AdamNSCLSettings,
    paper_row="Adam-NSCL",
    # alphaedit_ft.py loads the model with from_pretrained and no torch_dtype: float32
    paper_run={"dtype": "float32"},
    summary="FT-M, gradients projected onto the input covariance's null space (S = I)"),)
