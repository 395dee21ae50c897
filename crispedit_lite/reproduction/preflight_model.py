r"""Checks of a run against the model's structure, its tokenizer and its context, before any weights load.

The model's config gives its skeleton (every module on the meta device,
:mod:`crispedit_lite.models.structure`), on which the edited modules are resolved exactly as
:func:`~crispedit_lite.editing.edit` resolves them after loading: layers out of range, a module
pattern that matches nothing, a method without a layer preset for the model. The tokenizer and the
context length (``max_position_embeddings``) decide whether every prompt with its answer fits,
MEMIT-style editors need each record's subject inside its prompt, and MEND's editor file must exist,
match a pinned digest and have been trained for the model's edited matrices (its header is read, not
its weights). Refusals are
:class:`~crispedit_lite.reproduction.preflight.SettingError` s; :func:`check_structure` is part of
:func:`~crispedit_lite.reproduction.preflight.preflight`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from crispedit_lite.reproduction.setting_error import SettingError

__all__ = ["check_structure"]


def _tokenizer(model: str, tokenizer: str | None) -> Any | None:
    from transformers import AutoTokenizer

    from crispedit_lite.models.structure import model_folder

    source = tokenizer or model_folder(model)
    if source is None:
        return None
    try:
        return AutoTokenizer.from_pretrained(str(source))
    except (OSError, ValueError) as err:
        raise SettingError("tokenizer", f"{str(source)!r} cannot be loaded as a tokenizer "
                           f"({' '.join(str(err).split())[:160]})") from None


def check_structure(config: Any, model: str, tokenizer: str | None = None, requests: Sequence[Any] = (),
                    ) -> dict[str, Any]:
    """Layers, module pattern, context and records against the model's config and tokenizer.

    Returns ``{"modules": [...], "context": int | None, "names": [every module name]}`` (empty when
    the config is not at hand).

    Listed on the book page ``api``.
    """
    from crispedit_lite.editing.methods import edit_modules
    from crispedit_lite.editing.registry import get_editor
    from crispedit_lite.models.presets import SHAPE_PRESETS
    from crispedit_lite.models.structure import context_length, model_config, skeleton

    editor = get_editor(config.method)
    if editor.update == "closed_form" and "input_covariance" in editor.statistics:
        from crispedit_lite.editing.loops.keys_values import subject_span

        for i, r in enumerate(requests):
            try:
                subject_span(r.prompt, r.subject, r.case_id if r.case_id is not None else i)
            except ValueError as err:
                raise SettingError("data", f"{err} (method {config.method} edits at the subject's last "
                                   "token)") from None
    cfg = model_config(model)
    if cfg is None:
        return {}
    tok = _tokenizer(model, tokenizer)
    if tok is not None and model.startswith("random:"):
        vocab = SHAPE_PRESETS[model.split(":", 1)[1]]["vocab_size"]
        if len(tok) > vocab:
            raise SettingError("tokenizer", f"{tokenizer!r} has {len(tok)} tokens but {model} has vocab_size "
                               f"{vocab}: its token ids would index past the embedding; use a tokenizer "
                               "with at most that many tokens, or a larger shape preset")
    net = skeleton(cfg)
    layers = list(config.layers) if config.layers is not None else None
    try:
        modules = edit_modules(editor, net, config)  # as edit() resolves them
        if editor.update == "closed_form" and editor.presets and layers is None:
            if editor.preset(net) is None:
                raise ValueError(f"method {config.method!r} has no preset of edited layers for this model "
                                 f"(presets: {sorted(editor.presets)}); give the layers")
    except ValueError as err:
        text = str(err)
        by_pattern = text.startswith("no module matches") or "placeholder" in text or "nn.Linear" in text
        raise SettingError("module_pattern" if by_pattern else "layers", f"model {model}: {text}") from None
    if editor.preflight is not None:  # the editor's own checks (MEND: its editor file)
        try:
            editor.preflight(config, net, modules)
        except ValueError as err:
            setting, _, message = str(err).partition(": ")
            raise SettingError(setting, f"model {model}: {message}") from None
    context = context_length(cfg)
    reads_text = bool({"capability_kfac", "input_covariance", "edit_kfac"} & set(editor.statistics))
    if reads_text and context is not None and config.capability_max_length > context:
        raise SettingError("capability_max_length", f"{config.capability_max_length} tokens, but model "
                           f"{model} has {context} positions")
    if tok is not None and context is not None and requests:
        _check_lengths(tok, requests, context, model)
    return {"modules": modules, "context": context, "names": [n for n, _ in net.named_modules()]}


def _check_lengths(tok: Any, requests: Sequence[Any], context: int, model: str) -> None:
    """Every prompt with its answer fits the model's context."""
    texts, where = [], []
    for i, r in enumerate(requests):
        rid = r.case_id if r.case_id is not None else i
        for field, prompt, answer in (("prompt + target_new", r.prompt, r.target_new),
                                      ("rephrase_prompt + target_new", r.rephrase_prompt, r.target_new),
                                      ("locality_prompt + locality_answer", r.locality_prompt,
                                       r.locality_answer or "")):
            if prompt:
                texts.append(f"{prompt} {answer}".strip())
                where.append((rid, field))
    lengths = [len(ids) for ids in tok(texts, add_special_tokens=True)["input_ids"]]
    for n, (rid, field) in zip(lengths, where):
        if n > context:
            raise SettingError("data", f"edit record {rid!r}: {field} is {n:,} tokens, but model {model} has "
                               f"{context:,} positions; shorten it or drop the record")
