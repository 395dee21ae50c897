r"""Offline capability proxies for CPU runs: perplexity, KL to the base model, a probe set.

The paper measures capability with lm-eval benchmarks (:mod:`~crispedit_lite.evaluation.harness`),
which need a GPU and the network. On a CPU with the embedded model we measure the same thing more
directly — how far the edited model :math:`\theta'` drifts from the base model :math:`\theta` on
text the edit is not about (Yang et al. 2025 and CrispEdit both argue that capability damage, not
edit success, is the hard part):

.. math::

    \mathrm{PPL} = \exp\Big(\frac{1}{T}\sum_{t} -\log p_{\theta'}(x_t \mid x_{<t})\Big), \qquad
    \overline{\mathrm{KL}} = \frac1{T'}\sum_{t} \mathrm{KL}\big(p_\theta(\cdot\mid x_{<t})\,
    \big\|\, p_{\theta'}(\cdot\mid x_{<t})\big),

pooled over all predicted tokens of all texts (token-weighted), and the accuracy (greedy WILD
decoding, exact match) on probe questions the base model answers correctly. The KL is the
quantity CrispEdit's Bregman constraint bounds to second order (paper §3.2: for cross-entropy the
Bregman divergence of the log-partition is this KL), so it is the most faithful offline proxy.

Derived in notebook ``06_crispedit_on_a_small_lm``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from crispedit_lite.evaluation.generation import greedy_generate, model_device, pad_right
from crispedit_lite.evaluation.text import contains_match, exact_match
from crispedit_lite.evaluation.wild import format_prompt

__all__ = ["token_logprobs", "perplexity", "kl_to_base", "probe_accuracy", "select_known_probes"]


def _encode_texts(tokenizer: Any, texts: Sequence[str], max_length: int) -> list[list[int]]:
    if isinstance(texts, str):
        raise ValueError("texts must be a sequence of strings, not one string")
    out = []
    for i, t in enumerate(texts):
        if not isinstance(t, str) or not t.strip():
            raise ValueError(f"text {i} must be a non-empty string")
        ids = list(tokenizer(t).input_ids)[:max_length]
        if len(ids) < 2:
            raise ValueError(f"text {i} has fewer than 2 tokens; nothing to predict")
        out.append(ids)
    if not out:
        raise ValueError("no texts")
    return out


def _batches(model: nn.Module, tokenizer: Any, texts: Sequence[str], max_length: int,
             batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Yield ``(log_probs (B,T,V) float32, input_ids, attention_mask)`` per right-padded batch."""
    if batch_size < 1 or max_length < 2:
        raise ValueError("batch_size must be positive and max_length at least 2")
    encoded = _encode_texts(tokenizer, texts, max_length)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = model_device(model)
    was_training = model.training
    model.eval()
    try:
        for s in range(0, len(encoded), batch_size):
            ids, mask = pad_right(encoded[s : s + batch_size], pad_id)
            ids, mask = ids.to(device), mask.to(device)
            # no_grad only around the forward pass: a generator that held it across ``yield`` would
            # leave gradients switched off for the caller until the generator is exhausted
            with torch.no_grad():
                logp = F.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(), dim=-1)
            yield logp, ids, mask
    finally:
        model.train(was_training)


def token_logprobs(model: nn.Module, tokenizer: Any, texts: Sequence[str], *, max_length: int = 256,
                   batch_size: int = 8) -> list[torch.Tensor]:
    """Per text, the next-token log-probabilities at every position, ``(T_i, V)`` float32 on CPU.

    Store these from the base model to compute :func:`kl_to_base` later without keeping the base
    model; they take ``4 T V`` bytes per text (SmolLM2: ~50 MB for 256 tokens), so keep the capability
    texts few and short, or pass the base model instead.

    Derived in notebook ``07_sequential_editing``.
    """
    out: list[torch.Tensor] = []
    for logp, _, mask in _batches(model, tokenizer, texts, max_length, batch_size):
        out.extend(logp[i, : int(mask[i].sum())].cpu() for i in range(logp.shape[0]))
    return out


def perplexity(model: nn.Module, tokenizer: Any, texts: Sequence[str], *, max_length: int = 256,
               batch_size: int = 8) -> float:
    r"""Token-weighted perplexity :math:`\exp(\sum_t \mathrm{NLL}_t / T)` over all texts.

    Each text is tokenised as the tokenizer does by default (BOS included when it adds one),
    truncated to ``max_length`` tokens; every token after the first is predicted.

    Derived in notebook ``06_crispedit_on_a_small_lm``.
    """
    total, count = 0.0, 0
    for logp, ids, mask in _batches(model, tokenizer, texts, max_length, batch_size):
        nll = -torch.gather(logp[:, :-1], -1, ids[:, 1:, None])[..., 0]
        valid = mask[:, 1:].bool()
        total += float(nll[valid].double().sum())
        count += int(valid.sum())
    return math.exp(total / count)


def kl_to_base(model: nn.Module, tokenizer: Any, texts: Sequence[str], *,
               base: nn.Module | Sequence[torch.Tensor], max_length: int = 256,
               batch_size: int = 8) -> float:
    r"""Mean per-token :math:`\mathrm{KL}(p_{\rm base} \,\|\, p_{\rm edited})` (nats) over the texts.

    Args:
        model: the edited model. texts: capability text (the same texts for both models).
        base: the base model, or its :func:`token_logprobs` on the same ``texts`` with the same
            ``max_length``.

    The mean runs over every non-padding position of every text (token-weighted).

    Derived in notebook ``06_crispedit_on_a_small_lm``.
    """
    if isinstance(base, nn.Module):
        base_lp: Any = None
        base_iter = _batches(base, tokenizer, texts, max_length, batch_size)
    else:
        base_lp = list(base)
        if len(base_lp) != len(texts):
            raise ValueError(f"kl_to_base: {len(base_lp)} base log-prob tensors for {len(texts)} texts")
    total, count, seen = 0.0, 0, 0
    for logp, _, mask in _batches(model, tokenizer, texts, max_length, batch_size):
        if base_lp is None:
            blogp = next(base_iter)[0]
        else:
            chunk = base_lp[seen : seen + logp.shape[0]]
            blogp = torch.zeros_like(logp)
            for i, b in enumerate(chunk):
                n = int(mask[i].sum())
                if tuple(b.shape) != (n, logp.shape[-1]):
                    raise ValueError(f"kl_to_base: base log-probs of text {seen + i} have shape "
                                     f"{tuple(b.shape)}, expected {(n, logp.shape[-1])}")
                blogp[i, :n] = b.to(logp.device, torch.float32)
        kl = (blogp.exp() * (blogp - logp)).sum(-1)
        valid = mask.bool()
        total += float(kl[valid].double().sum())
        count += int(valid.sum())
        seen += logp.shape[0]
    return total / count


def _check_probes(probes: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    out = []
    for i, pr in enumerate(probes):
        if not (isinstance(pr, (tuple, list)) and len(pr) == 2 and all(isinstance(x, str) and x.strip()
                                                                          for x in pr)):
            raise ValueError(f"probe {i} must be a (question, answer) pair of non-empty strings, got {pr!r}")
        out.append((pr[0], pr[1]))
    if not out:
        raise ValueError("no probes")
    return out


def probe_accuracy(model: nn.Module, tokenizer: Any, probes: Sequence[tuple[str, str]], *,
                   context: str = "qa", scorer: str = "exact_match", max_new_tokens: int = 40,
                   batch_size: int = 16, progress: bool = False) -> dict[str, Any]:
    """Accuracy (×100) of greedy WILD answers to ``(question, answer)`` probes.

    Args:
        context: WILD context (``"qa"``, ``"none"``, ``"chat"``; small instruct models need
            ``"chat"``). scorer: ``"exact_match"`` (SQuAD EM) or ``"contains"`` (the normalised
            gold occurs in the answer; for full-sentence answers).

    Returns:
        ``{"accuracy": float, "n": int, "answers": [{"question", "gold", "answer", "correct"}, ...]}``.

    Derived in notebook ``06_crispedit_on_a_small_lm``.
    """
    scorers = {"exact_match": exact_match, "contains": contains_match}
    if scorer not in scorers:
        raise ValueError(f"scorer must be one of {sorted(scorers)}, got {scorer!r}")
    probes = _check_probes(probes)
    inputs = [format_prompt(q, context, tokenizer) for q, _ in probes]
    answers = greedy_generate(model, tokenizer, inputs, max_new_tokens=max_new_tokens,
                              batch_size=batch_size, progress=progress)
    rows = [{"question": q, "gold": a, "answer": y, "correct": scorers[scorer](y, a)}
            for (q, a), y in zip(probes, answers)]
    return {"accuracy": 100.0 * sum(r["correct"] for r in rows) / len(rows), "n": len(rows),
            "context": context, "scorer": scorer, "answers": rows}


def select_known_probes(model: nn.Module, tokenizer: Any, candidates: Sequence[tuple[str, str]], *,
                        context: str = "qa", scorer: str = "exact_match", max_new_tokens: int = 40,
                        batch_size: int = 16) -> list[tuple[str, str]]:
    """The candidates the (base) model answers correctly: a probe set with 100 % base accuracy.

    Derived in notebook ``06_crispedit_on_a_small_lm``.
    """
    res = probe_accuracy(model, tokenizer, candidates, context=context, scorer=scorer,
                         max_new_tokens=max_new_tokens, batch_size=batch_size)
    return [(r["question"], r["gold"]) for r in res["answers"] if r["correct"] == 1.0]
