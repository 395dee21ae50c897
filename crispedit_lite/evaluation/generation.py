r"""Batched greedy decoding with WILD's stopping rule, and right-padded teacher-forced batches.

WILD decoding (Yang et al. 2025; CrispEdit §4.2, App. E; official code
``evaluate/evaluate_utils.py``) is greedy,

.. math::

    \hat y_t = \arg\max_v\, p_\theta(v \mid x, \hat y_{<t}), \qquad t = 1, \dots, T_{\max} = 40,

stopping at ``"."``, a newline or EOS. With ``stop_after_first_token=True`` (the "robust" decoding
of :mod:`~crispedit_lite.evaluation.decoding`) stop strings count only after the first non-blank
character, so a model that opens its answer with a blank line is not cut to ``""``. Prompts of a
batch are **left**-padded, so that every row's next token sits in the last column; transformers
derives position ids from the attention mask, so a batched row decodes as the same prompt decoded
alone (checked in the tests). The tokenizer's ``padding_side`` and ``pad_token`` are restored
afterwards. Unlike the official code we keep the KV cache on (``use_cache=True``): greedy decoding is
the same, only faster.

Teacher-forced batches (:func:`pad_right`) are **right**-padded, so positions need no correction.

Derived in notebook ``06_crispedit_on_a_small_lm``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

from crispedit_lite.evaluation.text import STOP_STRINGS, truncate_at_stop
from crispedit_lite.models.compat import generate_kwargs

__all__ = ["greedy_generate", "left_padding", "pad_right", "eos_token_ids", "model_device"]


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a parameterless module).

    Listed on the book page ``api``.
    """
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def eos_token_ids(model: nn.Module, tokenizer: Any) -> list[int]:
    """EOS ids of the model's generation config (LLaMA-3-Instruct has two) and of the tokenizer.

    Listed on the book page ``api``.
    """
    ids: list[int] = []
    gen = getattr(model, "generation_config", None)
    for source in (getattr(gen, "eos_token_id", None), getattr(tokenizer, "eos_token_id", None)):
        if source is None:
            continue
        for i in [source] if isinstance(source, int) else list(source):
            if int(i) not in ids:
                ids.append(int(i))
    return ids


@contextlib.contextmanager
def left_padding(tokenizer: Any) -> Iterator[Any]:
    """Temporarily pad on the left (and with EOS when there is no pad token); restore on exit.

    Listed on the book page ``api``.
    """
    side, pad = tokenizer.padding_side, tokenizer.pad_token
    if pad is None:
        if tokenizer.eos_token is None:
            raise ValueError("the tokenizer has neither a pad nor an EOS token to pad with")
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    try:
        yield tokenizer
    finally:
        tokenizer.padding_side = side
        if pad is None:
            tokenizer.pad_token = None


def pad_right(sequences: Sequence[Sequence[int]], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token id lists into ``(input_ids, attention_mask)``, both ``(B, T_max)`` int64.

    Listed on the book page ``api``.
    """
    if not sequences or any(len(s) == 0 for s in sequences):
        raise ValueError("pad_right needs at least one sequence and no empty sequence")
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), int(pad_id), dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, s in enumerate(sequences):
        ids[i, : len(s)] = torch.as_tensor(list(s), dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids, mask


class _StopOnStrings:
    """Per-row stopping criterion: the decoded continuation contains a stop string."""

    def __init__(self, tokenizer: Any, prompt_width: int, stop_strings: Sequence[str],
                 after_first_token: bool = False):
        self.tokenizer, self.prompt_width, self.stop_strings = tokenizer, prompt_width, tuple(stop_strings)
        self.after_first_token = after_first_token

    def __call__(self, input_ids: torch.Tensor, scores: Any = None, **kwargs: Any) -> torch.Tensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_width :], skip_special_tokens=True)
        if self.after_first_token:
            texts = [t.lstrip() for t in texts]
        done = [any(s in t for s in self.stop_strings) for t in texts]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


def greedy_generate(
    model: nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 40,
    stop_strings: Sequence[str] = STOP_STRINGS,
    batch_size: int = 16,
    progress: bool = False,
    stop_after_first_token: bool = False,
    raw: bool = False,
) -> list[str]:
    """Greedy continuations of ``prompts``, cut at the first stop string or EOS, stripped.

    Prompts are batched by length (longest first, to waste little padding) and the answers returned
    in input order. Special tokens (padding, EOS, chat markers) are dropped when decoding.

    Args:
        model: a causal LM with ``generate``. tokenizer: its tokenizer (left untouched on return).
        prompts: the fully formatted prompts. max_new_tokens: the WILD budget (40).
        stop_strings: text stops besides EOS. batch_size: prompts per ``generate`` call.
        progress: show a tqdm bar over batches.
        stop_after_first_token: apply the stop strings only after the first non-blank character
            (leading whitespace is dropped from the answer). raw: return each continuation as
            decoded up to EOS, neither cut at a stop string nor stripped (generation still stops at
            one); ``raw=True, stop_strings=()`` gives the whole greedy continuation, from which
            every stop rule's answer can be read off (:func:`~.text.truncate_at_stop`).

    Derived in notebook ``06_crispedit_on_a_small_lm``.
    """
    from transformers import GenerationConfig, StoppingCriteriaList

    prompts = list(prompts)
    for i, p in enumerate(prompts):
        if not isinstance(p, str) or not p:
            raise ValueError(f"greedy_generate: prompt {i} must be a non-empty string, got {p!r}")
    if batch_size < 1 or max_new_tokens < 1:
        raise ValueError("greedy_generate: batch_size and max_new_tokens must be positive")
    if not prompts:
        return []
    eos = eos_token_ids(model, tokenizer)
    device = model_device(model)
    lengths = [len(tokenizer(p).input_ids) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: -lengths[i])
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc="generate", leave=False)
    answers: list[str] = [""] * len(prompts)
    was_training = model.training
    model.eval()
    try:
        with left_padding(tokenizer), torch.no_grad():
            config = GenerationConfig(
                do_sample=False, max_new_tokens=max_new_tokens, num_beams=1,
                pad_token_id=tokenizer.pad_token_id, eos_token_id=eos or None,
            )
            for batch in batches:
                enc = tokenizer([prompts[i] for i in batch], return_tensors="pt", padding=True)
                # ids and padding mask only: a tokenizer's token_type_ids are not a causal LM's
                # input, and transformers 4.x's generate() rejects them
                enc = {k: enc[k].to(device) for k in ("input_ids", "attention_mask")}
                width = enc["input_ids"].shape[1]
                stop = StoppingCriteriaList([_StopOnStrings(tokenizer, width, stop_strings,
                                                            stop_after_first_token)])
                out = model.generate(**enc, generation_config=config, stopping_criteria=stop,
                                     **generate_kwargs(model))
                for row, i in enumerate(batch):
                    new = out[row, width:].tolist()
                    cut = next((j for j, t in enumerate(new) if t in eos), len(new))
                    text = tokenizer.decode(new[:cut], skip_special_tokens=True)
                    answers[i] = text if raw else truncate_at_stop(
                        text, stop_strings, after_first_token=stop_after_first_token)
    finally:
        model.train(was_training)
    return answers
