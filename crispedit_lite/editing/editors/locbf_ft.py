r"""LocBF-FT (Yang et al. 2025): FT-M of one ``down_proj`` with a per-sample mean loss.

The layer is the setting ``locbf_layer``, else the second-to-last edited layer (22 of 19-23 on
LLaMA-3-8B, as the paper runs it). Derived in notebook ``06_crispedit_on_a_small_lm``.
"""

from __future__ import annotations

from dataclasses import dataclass

from crispedit_lite.editing.loops.projected import run_gradient_editor
from crispedit_lite.editing.registry import EditJob, Editor
from crispedit_lite.editing.settings import EditorSettings, check

__all__ = ["EDITORS", "LocBFSettings"]


@dataclass(frozen=True)
class LocBFSettings(EditorSettings):
    """LocBF-FT's own setting.

    Attributes:
        locbf_layer: the one layer it trains (``None``: the second-to-last edited layer, i.e. 22 of
            19-23 on LLaMA-3-8B as the paper runs it, locft-bf.py).

    Described on the book page ``running``.
    """

    locbf_layer: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.locbf_layer is None or self.locbf_layer >= 0, "locbf_layer",
              "a non-negative layer index or None", self.locbf_layer)


def run(job: EditJob):
    """LocBF-FT on one layer."""
    from crispedit_lite.models import resolve_edit_modules

    cfg = job.config
    layer = cfg.settings.locbf_layer
    if layer is None:
        modules = [job.modules[-2] if len(job.modules) > 1 else job.modules[0]]
    else:
        modules = resolve_edit_modules(job.model, cfg.module_pattern, [layer])
    return run_gradient_editor(job, modules, projector_kind=None, per_sample=True)


EDITORS = (Editor(
    name="locbf_ft", changes="one down_proj (second-to-last edited layer)", statistics=(),
    update="projected_gradient", run=run, label="LocBF-FT", color="#fbafe4", settings=LocBFSettings,
    paper_row="LocBF-FT", paper_run={"dtype": "float32"},  # locft-bf.py trains in float32
    summary="FT-M of a single down_proj with a per-sample mean loss"),)
