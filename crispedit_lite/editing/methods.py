r"""``edit()``: apply any registered editor to a model in memory.

The method is looked up in :mod:`crispedit_lite.editing.registry`; each editor is one module under
:mod:`crispedit_lite.editing.editors` (CrispEdit, CrispEdit-Seq, FT, FT-Seq, LocBF-FT, LoRA,
LoRA-Seq, Adam-NSCL, and the closed-form MEMIT, AlphaEdit and UltraEdit families). Editors change
the model **in memory**; :class:`EditResult` keeps the original weights so that
:meth:`EditResult.restore` undoes an edit, and nothing is ever written over a model on disk.

Derived in notebook ``06_crispedit_on_a_small_lm``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from crispedit_lite.editing.config import EditConfig
from crispedit_lite.editing.registry import EditJob, Editor, get_editor, registry
from crispedit_lite.editing.result import EditResult

__all__ = ["EditResult", "edit", "edit_modules"]


def edit(
    model: nn.Module,
    tokenizer: Any,
    requests: Sequence[Any],
    config: EditConfig,
    *,
    capability_texts: Sequence[str] | None = None,
    cache_dir: str | None = None,
    progress: bool = True,
    after_chunk: Callable[[int, list[Any], Any], None] | None = None,
    carry: dict[str, Any] | None = None,
) -> EditResult:
    """Apply ``config.method`` to ``model`` (in memory) on the edit ``requests``.

    Args:
        model, tokenizer: from :func:`crispedit_lite.models.load_model` (right padding).
        requests: :class:`crispedit_lite.data.EditRequest` records.
        config: the method and its settings (:func:`paper_config`, :func:`cpu_config`).
        capability_texts: the capability corpus of the editors that read statistics
            (:func:`~crispedit_lite.editing.registry.needs_capability`); its factors are cached
            under ``cache_dir``.
        progress: tqdm bars.
        after_chunk: for the editors with ``chunk_hook`` (CrispEdit-Seq, FT-Seq, MEMIT-Chunked,
            MEMIT-Seq), ``after_chunk(chunk_index, chunk, state)`` is called after every chunk with
            the model as that chunk left it and a
            :class:`~crispedit_lite.editing.loops.sequential.ChunkState` (training log, projectors,
            K-FAC factors); it only observes: the edit is the same with or without it (chapter 7
            records retention with it).
        carry: continue a stream of chunks across calls (a sequential editor reads its state from
            this dict and writes it back; see :class:`~crispedit_lite.editing.registry.EditJob`).

    Derived in notebook ``06_crispedit_on_a_small_lm``.
    """
    editor = get_editor(config.method)
    if len(requests) == 0:
        raise ValueError("no edit requests")
    if editor.statistics and editor.statistics != ("edit_kfac",) and not capability_texts:
        raise ValueError(f"method {config.method!r} needs capability_texts for its statistics "
                         f"({', '.join(editor.statistics)})")
    if after_chunk is not None and not editor.chunk_hook:
        hooked = [n for n, e in registry().items() if e.chunk_hook]
        raise ValueError(f"after_chunk: method {config.method!r} does not call it; methods that run "
                         f"chunk by chunk with a per-chunk callback: {hooked}")
    if after_chunk is not None and not callable(after_chunk):
        raise ValueError(f"after_chunk must be callable (chunk_index, chunk, state), got "
                         f"{type(after_chunk).__name__}")
    modules = edit_modules(editor, model, config)
    job = EditJob(model=model, tokenizer=tokenizer, requests=requests, config=config, modules=modules,
                  capability_texts=capability_texts, cache_dir=cache_dir, progress=progress,
                  after_chunk=after_chunk, carry=carry)
    start = time.perf_counter()
    result = editor.run(job)
    result.timings.setdefault("total_s", time.perf_counter() - start)
    result.details.setdefault("editor", editor.describe())
    return result


def edit_modules(editor: Editor, model: nn.Module, config: Any) -> list[str]:
    """The matrices a run edits: ``config.module_pattern`` at ``config.layers`` (or the model's preset).

    ``[]`` when the model has no layer preset, no layers are given and ``editor`` picks its own matrices
    from its :attr:`~crispedit_lite.editing.registry.Editor.presets` (MEND, UltraEdit); a
    ``ValueError`` otherwise. :func:`edit` and the command line's check before loading (on the model's
    skeleton) both resolve the matrices here.

    Listed on the book page ``api``.
    """
    from crispedit_lite.models import resolve_edit_modules

    layers = list(config.layers) if config.layers is not None else None
    try:
        return resolve_edit_modules(model, config.module_pattern, layers)
    except ValueError:
        if layers is not None or not editor.presets:
            raise
        return []
