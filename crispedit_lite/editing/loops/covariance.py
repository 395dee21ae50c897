r"""The input covariance of MEMIT and AlphaEdit counted over every token, as MEMIT's ``layer_stats``.

MEMIT's preserved-key covariance is :math:`C=\frac1T\sum_t k_tk_t^\top`, the uncentred second moment
of a layer's inputs over the :math:`T` non-padding token positions of preserved text (100,000
Wikipedia texts, every token counted; ``layer_stats`` / ``runningstats.SecondMoment``). The
closed-form editors here read by default the K-FAC input factor :math:`A` of the capability
statistics file that CrispEdit shares: the same estimator on a different sample, because K-FAC
counts only the positions that have a next-token label, so each text's last token is left out (and
the texts are the capability corpus, cut to ``capability_max_length`` tokens).
:func:`input_second_moment` computes the every-token moment of the same texts instead
(``cf_covariance="every_token"``): one forward pass, nothing cached. Chapter 8 (``08_one_framework``)
states the difference; the book page ``reproducing`` says what the reproduction cells use.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

__all__ = ["input_second_moment"]


def input_second_moment(model: nn.Module, tokenizer: Any, modules: Sequence[str], texts: Sequence[str], *,
                        max_length: int, batch_size: int = 1, progress: bool = False
                        ) -> tuple[dict[str, Tensor], dict[str, Any]]:
    r""":math:`C=\frac1N\sum_n a_na_n^\top` of each module's input over its N non-padding positions.

    Texts are tokenised as the capability statistics are
    (:func:`~crispedit_lite.data.batches.tokenize_capability`, truncated to ``max_length``); sums in
    float64, returned in float32 (the precision of the statistics file). Returns ``(C, info)`` with
    ``info = {"n_tokens", "seconds", "hit": False, "cache": None, "tokens": "every position"}``.

    Listed on the book page ``api``.
    """
    from crispedit_lite.data.batches import tokenize_capability

    if len(texts) == 0:
        raise ValueError("input_second_moment: no texts")
    start = time.perf_counter()
    batches = tokenize_capability(texts, tokenizer, max_length=max_length, batch_size=batch_size)
    sums: dict[str, Tensor] = {}
    mask: list[Tensor] = []

    def hook(name: str):
        def pre(mod: nn.Module, args: tuple) -> None:
            a = args[0].detach()
            rows = a[mask[0].to(a.device)].double()
            sums[name] = sums.get(name, 0) + rows.T @ rows
        return pre

    handles = [model.get_submodule(m).register_forward_pre_hook(hook(m)) for m in modules]
    device, n_tokens = next(model.parameters()).device, 0
    try:
        with torch.no_grad():
            for batch in tqdm(batches, desc="covariance", disable=not progress):
                att = batch["attention_mask"].bool()
                mask[:] = [att]
                model(input_ids=batch["input_ids"].to(device), attention_mask=att.long().to(device))
                n_tokens += int(att.sum())
    finally:
        for h in handles:
            h.remove()
    C = {m: (sums[m] / n_tokens).float() for m in modules}
    return C, {"n_tokens": n_tokens, "seconds": time.perf_counter() - start, "hit": False, "cache": None,
               "tokens": "every position"}
