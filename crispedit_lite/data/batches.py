r"""Token batches: FT-M edit batches, and K-FAC batches of capability text or of edit text.

All batches are dicts of ``input_ids``, ``attention_mask`` and ``labels`` (``-100`` = no loss),
padded on the **right** with the tokenizer's pad token (its EOS when it has none; the vocabulary is
never resized). They feed a causal LM directly, and :func:`crispedit_lite.kfac.collect_kfac`, which
shifts the labels by one position itself.

* :func:`tokenize_edits` is the FT-M objective of the paper's code (``crispedit.py:execute_ft``):
  text ``prompt + " " + target`` (a leading space is added to the target when missing; no chat
  template, no EOS), labels ``-100`` on padding and on the first ``len(tokenizer(prompt))``
  positions, so the loss is :math:`-\sum_t \log p(y_t \mid \text{prompt}, y_{<t})` over target
  tokens.
* :func:`edit_kfac_batches` is the edit-data K-FAC of CrispEdit-Seq
  (``layer_stats_kfac_with_txt_tgt``): the same texts **without** prompt masking (the paper's
  Table 6: masking the prompt dropped reliability from 71.1 to 12), batches of 8, at most 512
  tokens.
* :func:`tokenize_capability` tokenises capability texts as the paper's K-FAC does: each text
  truncated to 512 tokens, batch size 1, labels are the text itself (teacher forcing).

Derived in notebook ``06_crispedit_on_a_small_lm``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch

from crispedit_lite.data import EditRequest

__all__ = ["edit_kfac_batches", "edit_pairs", "pad_batch", "tokenize_capability", "tokenize_edits"]

EditLike = EditRequest | Mapping[str, str] | tuple[str, str]


def edit_pairs(requests: Iterable[EditLike]) -> list[tuple[str, str]]:
    """Return ``(prompt, " " + target)`` pairs; the target gets a leading space when it has none.

    Listed on the book page ``api``.
    """
    out = []
    for i, r in enumerate(requests):
        if isinstance(r, EditRequest):
            prompt, target = r.prompt, r.target_new
        elif isinstance(r, Mapping):
            prompt, target = r.get("prompt"), r.get("target_new", r.get("target"))
        elif isinstance(r, tuple) and len(r) == 2:
            prompt, target = r
        else:
            raise ValueError(f"request {i}: expected an EditRequest, a mapping with prompt and "
                             f"target_new, or a (prompt, target) pair; got {type(r).__name__}")
        if not isinstance(prompt, str) or not isinstance(target, str) or not target.strip():
            raise ValueError(f"request {i}: prompt and target must be strings, target non-empty; "
                             f"got {prompt!r}, {target!r}")
        out.append((prompt, target if target.startswith(" ") else " " + target))
    return out


def _pad_id(tokenizer: Any) -> int:
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad is None:
        raise ValueError("the tokenizer has neither a pad nor an EOS token to pad with")
    return int(pad)


def pad_batch(
    ids: Sequence[Sequence[int]], labels: Sequence[Sequence[int]], pad_id: int
) -> dict[str, torch.Tensor]:
    """Right-pad token lists into ``input_ids``, ``attention_mask`` and ``labels`` tensors.

    Listed on the book page ``api``.
    """
    if not ids:
        raise ValueError("cannot build a batch from zero sequences")
    width = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    lab = torch.full((len(ids), width), -100, dtype=torch.long)
    for i, (x, y) in enumerate(zip(ids, labels, strict=True)):
        input_ids[i, : len(x)] = torch.tensor(x, dtype=torch.long)
        mask[i, : len(x)] = 1
        lab[i, : len(y)] = torch.tensor(y, dtype=torch.long)
    return {"input_ids": input_ids, "attention_mask": mask, "labels": lab}


def tokenize_edits(
    requests: Sequence[EditLike],
    tokenizer: Any,
    mask_prompt: bool = True,
    max_length: int | None = None,
) -> dict[str, torch.Tensor]:
    """Tokenise edit requests into one right-padded batch for the FT-M loss (or K-FAC).

    Args:
        requests: :class:`~crispedit_lite.data.EditRequest` objects, ``{"prompt", "target_new"}``
            mappings, or ``(prompt, target)`` pairs.
        tokenizer: a Hugging Face tokenizer; special tokens are added as it adds them by default
            (LLaMA-3's BOS, none for Qwen or SmolLM2).
        mask_prompt: label ``-100`` on the first ``len(tokenizer(prompt))`` positions (FT-M); with
            ``False`` every real token is a label (the edit-data K-FAC of CrispEdit-Seq).
        max_length: truncate each sequence to this many tokens (``None``: no truncation, as the
            paper trains).

    Returns:
        ``{"input_ids", "attention_mask", "labels"}``, each of shape ``(len(requests), width)``.

    Raises:
        ValueError: a request whose target tokens are all masked or truncated away.

    Derived in notebook ``06_crispedit_on_a_small_lm``.
    """
    ids, labels = [], []
    for i, (prompt, target) in enumerate(edit_pairs(requests)):
        full = list(tokenizer(prompt + target)["input_ids"])
        if max_length is not None:
            full = full[:max_length]
        lab = list(full)
        if mask_prompt:
            n_prompt = len(tokenizer(prompt)["input_ids"])
            lab[:n_prompt] = [-100] * min(n_prompt, len(lab))
            if all(t == -100 for t in lab):
                raise ValueError(
                    f"request {i}: no target token left to train on after masking {n_prompt} "
                    f"prompt tokens of {len(full)} ({prompt!r}, {target!r})")
        ids.append(full)
        labels.append(lab)
    return pad_batch(ids, labels, _pad_id(tokenizer))


def edit_kfac_batches(
    requests: Sequence[EditLike], tokenizer: Any, batch_size: int = 8, max_length: int = 512,
    mask_prompt: bool = False,
) -> list[dict[str, torch.Tensor]]:
    """Batches of full ``prompt + " " + target`` texts for the edit-data K-FAC.

    ``mask_prompt=False`` (the paper's CrispEdit-Seq) lets every token of the text enter the factors;
    ``mask_prompt=True`` (the Table 6 ablation) labels the prompt ``-100`` so that only target
    positions contribute.

    Listed on the book page ``api``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    return [tokenize_edits(requests[i : i + batch_size], tokenizer, mask_prompt=mask_prompt,
                           max_length=max_length) for i in range(0, len(requests), batch_size)]


def tokenize_capability(
    texts: Iterable[str],
    tokenizer: Any,
    max_length: int = 512,
    batch_size: int = 1,
    ignore_token_ids: Sequence[int] = (),
) -> list[dict[str, torch.Tensor]]:
    """Tokenise capability texts into K-FAC batches (labels = the text; padding = ``-100``).

    Args:
        texts: e.g. a :class:`~crispedit_lite.data.capability.CapabilityCorpus`.
        tokenizer: a Hugging Face tokenizer.
        max_length: truncation in tokens (the paper: 512).
        batch_size: texts per batch (the paper: 1, so no padding at all).
        ignore_token_ids: token ids never used as labels. The official code also ignores id 0
            (``"!"`` in LLaMA-3; official code ``rome/layer_stats.py``); pass ``(0,)`` to reproduce it.

    Listed on the book page ``api``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if max_length < 2:
        raise ValueError(f"max_length must be at least 2 tokens, got {max_length}")
    ignore = set(ignore_token_ids)
    seqs = []
    for i, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"text {i}: expected a non-empty string, got {text!r:.60}")
        seqs.append(list(tokenizer(text, truncation=True, max_length=max_length)["input_ids"]))
    pad = _pad_id(tokenizer)
    out = []
    for start in range(0, len(seqs), batch_size):
        chunk = seqs[start : start + batch_size]
        labels = [[-100 if t in ignore else t for t in s] for s in chunk]
        out.append(pad_batch(chunk, labels, pad))
    return out
