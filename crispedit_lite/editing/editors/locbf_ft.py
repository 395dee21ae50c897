r"""LocBF-FT (Yang et al. 2025): FT-M of one ``down_proj`` with a per-sample mean loss.

The layer is ``config.locbf_layer``, else the second-to-last edited layer (22 of 19-23 on LLaMA-3-8B,
as the paper runs it). Derived in notebook ``06_crispedit_on_a_small_lm``.
"""

from __future__ import annotations

from crispedit_lite.editing.loops.projected import run_gradient_editor
from crispedit_lite.editing.registry import EditJob, Editor


def run(job: EditJob):
    """LocBF-FT on one layer."""
    from crispedit_lite.models import resolve_edit_modules

    cfg = job.config
    if cfg.locbf_layer is None:
        modules = [job.modules[-2] if len(job.modules) > 1 else job.modules[0]]
    else:
        modules = resolve_edit_modules(job.model, cfg.module_pattern, [cfg.locbf_layer])
    return run_gradient_editor(job, modules, projector_kind=None, per_sample=True)


EDITORS = (Editor(
    name="locbf_ft", changes="one down_proj (second-to-last edited layer)", statistics=(),
    update="projected_gradient", run=run, paper_row="LocBF-FT",
    summary="FT-M of a single down_proj with a per-sample mean loss"),)
