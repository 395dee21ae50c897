r"""Batched base-model measurements for the shipped edit set (used by the two edit-set tools).

* :func:`answer_probs`: the teacher-forced probability of a whole answer,
  :math:`p(y \mid x) = \prod_t p(y_t \mid x, y_{<t})` with ``y = " " + answer`` (the answer tokens
  are those of ``tok(x + " " + answer)`` after the prompt's tokens, as an editor's FT-M loss sees
  them), for many ``(x, answer)`` pairs in right-padded batches.
* :func:`greedy_many`: greedy continuations of many prompts in left-padded batches.
* :func:`chat_prompt`: a question wrapped in the model's chat template (how an instruct model is
  asked a question).
* :func:`starts` / :func:`mentions`: whether a continuation begins with / contains an answer as a
  whole word (``" Hg"`` does not start with ``"H"``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import torch
from tqdm.auto import tqdm


def _chunks(n: int, size: int) -> list[range]:
    return [range(i, min(i + size, n)) for i in range(0, n, size)]


@torch.no_grad()
def answer_probs(model: Any, tok: Any, pairs: Sequence[tuple[str, str]], batch_size: int = 32,
                 progress: bool = False) -> list[float]:
    r"""Return :math:`\prod_t p(y_t \mid x, y_{<t})` for each ``(x, answer)``, ``y = " " + answer``.

    A prompt that ends in a chat template's generation header is followed by the answer without
    the leading space (the assistant turn starts a new line).
    """
    seqs, spans = [], []
    for prompt, answer in pairs:
        sep = "" if prompt.endswith("\n") else " "
        p = tok(prompt)["input_ids"]
        a = tok(prompt + sep + answer.strip())["input_ids"][len(p):]
        if not a:
            raise ValueError(f"answer {answer!r} adds no token after prompt {prompt!r}")
        seqs.append(p + a)
        spans.append((len(p), len(a)))
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    out: list[float] = [0.0] * len(seqs)
    for idx in tqdm(_chunks(len(seqs), batch_size), disable=not progress, desc="p(answer)"):
        width = max(len(seqs[i]) for i in idx)
        ids = torch.full((len(idx), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, i in enumerate(idx):
            ids[row, :len(seqs[i])] = torch.tensor(seqs[i])
            mask[row, :len(seqs[i])] = 1
        logp = model(input_ids=ids, attention_mask=mask).logits.float().log_softmax(-1)
        for row, i in enumerate(idx):
            start, n = spans[i]
            pos = torch.arange(start - 1, start - 1 + n)
            toks = ids[row, start:start + n]
            out[i] = float(logp[row, pos, toks].sum().exp())
    return out


@torch.no_grad()
def greedy_many(model: Any, tok: Any, prompts: Sequence[str], n: int = 8, batch_size: int = 32,
                progress: bool = False) -> list[str]:
    """Greedy continuations (``n`` new tokens, special tokens dropped), left-padded batches."""
    side = tok.padding_side
    tok.padding_side = "left"
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    out: list[str] = []
    try:
        for idx in tqdm(_chunks(len(prompts), batch_size), disable=not progress, desc="greedy"):
            enc = tok([prompts[i] for i in idx], return_tensors="pt", padding=True)
            gen = model.generate(**enc, max_new_tokens=n, do_sample=False, pad_token_id=pad)
            width = enc["input_ids"].shape[1]
            out += [tok.decode(g[width:], skip_special_tokens=True) for g in gen]
    finally:
        tok.padding_side = side
    return out


def chat_prompt(tok: Any, question: str) -> str:
    """``question`` as a user turn in the tokenizer's chat template, ending in the assistant header."""
    return tok.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                   add_generation_prompt=True)


def _norm(text: str) -> str:
    return " ".join(text.lower().replace("\u2019", "'").split())


def starts(text: str, answer: str) -> bool:
    """Whether ``text`` begins with ``answer`` as whole words (case-insensitive)."""
    t, a = _norm(text), _norm(answer)
    return t.startswith(a) and (len(t) == len(a) or not t[len(a)].isalnum())


def mentions(text: str, answer: str) -> bool:
    """Whether ``answer`` occurs in ``text`` as whole words (case-insensitive)."""
    return re.search(r"(?<!\w)" + re.escape(_norm(answer)) + r"(?!\w)", _norm(text)) is not None
