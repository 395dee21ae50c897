r"""Probability comparison metrics of ROME and MEMIT: is the new object likelier than the old one.

ROME (Meng et al. 2022, §3.2, "efficacy score") and MEMIT (Meng et al. 2023) score an edit
:math:`(s, r, o \to o^*)` without decoding, by comparing the model's probabilities of the two
objects after the prompt :math:`x`:

.. math::

    \mathrm{Rel}_P = \frac1N\sum_i \mathbb 1\big[\log P_\theta(o^*_i \mid x_i)
    > \log P_\theta(o_i \mid x_i)\big], \qquad
    \log P_\theta(y \mid x) = \sum_{j=1}^m \log p_\theta(y_j \mid x, y_{<j}),

on the rewrite prompt (efficacy, :math:`\mathrm{Rel}_P`), on the paraphrase (:math:`\mathrm{Gen}_P`),
and, on neighbourhood prompts whose true object :math:`o^{\rm true}` must survive,
:math:`\mathrm{Loc}_P = \text{mean}\ \mathbb 1[\log P_\theta(o^{\rm true}\mid x) > \log P_\theta(o^*\mid x)]`.
Here :math:`o` is the record's ``ground_truth`` and :math:`o^{\rm true}` its ``locality_answer``;
records without ``ground_truth`` count in no Rel / Gen term. The public ROME/MEMIT code compares the
*per-token mean* log-probabilities (it divides each sum by the target's length), which differs from
the joint rule only when the two objects have different token counts; both are reported
(``rel`` joint, ``rel_token_mean`` the code's rule), with the mean margin :math:`\log P(o^*) - \log
P(o)` in nats (ROME's "efficacy magnitude" in log space). Targets are tokenised as in
:mod:`~crispedit_lite.evaluation.teacher_forced` (``prompt + " " + target``, right-padded batches).

Derived in notebook ``06_crispedit_on_a_small_lm``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from crispedit_lite.evaluation.decoding import format_prompt
from crispedit_lite.evaluation.records import locality_pairs, record_text
from crispedit_lite.evaluation.teacher_forced import _encode_pair, score_targets

__all__ = ["sequence_logprobs", "probability_evaluate"]


def sequence_logprobs(
    model: nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    targets: Sequence[str],
    *,
    batch_size: int = 16,
) -> tuple[list[float], list[int]]:
    r"""Per pair, :math:`\log P_\theta(y \mid x)` and the token count.

    The log-probability is in nats, summed over the target tokens.

    Listed on the book page ``api``.
    """
    _, nlls = score_targets(model, tokenizer, prompts, targets, batch_size=batch_size)
    counts = []
    for i, (p, t) in enumerate(zip(prompts, targets)):
        full, n_prompt = _encode_pair(tokenizer, p, t, i)
        counts.append(len(full) - n_prompt)
    return [-n * c for n, c in zip(nlls, counts)], counts


def _mean100(values: list[float]) -> float | None:
    return 100.0 * sum(values) / len(values) if values else None


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def probability_evaluate(
    model: nn.Module,
    tokenizer: Any,
    requests: Sequence[Any],
    *,
    context: str = "none",
    batch_size: int = 16,
) -> dict[str, Any]:
    r"""ROME/MEMIT probability tests over edit records: Rel, Gen (:math:`P(\text{new}) > P(\text{old})`), Loc.

    Args:
        requests: records with ``prompt``, ``target_new``, and optionally ``ground_truth`` (the old
            object; needed for Rel / Gen), ``rephrase_prompt``, ``locality_prompt`` (one or a list) and
            ``locality_answer`` (needed for Loc).
        context: ``"none"`` (the prompt as it is, as ROME and MEMIT score) or ``"qa"`` (inside the
            WILD QA template, to see whether an edit carries over to the template).

    Returns:
        ``{"settings", "scores": {"rel", "gen", "loc", "rel_token_mean", ..., "rel_margin", ...,
        "n_rel", "n_gen", "n_loc"}, "records"}``; rates ×100 (``None`` with no item), margins in nats.

    Listed on the book page ``api``.
    """
    if context not in ("none", "qa"):
        raise ValueError(f"probability_evaluate: context must be 'none' or 'qa', got {context!r}")
    requests = list(requests)
    if not requests:
        raise ValueError("probability_evaluate: no requests")
    # (record, kind, prompt, preferred target, other target)
    items: list[tuple[int, str, str, str, str]] = []
    for i, r in enumerate(requests):
        new = record_text(r, i, "target_new")
        old = record_text(r, i, "ground_truth", required=False)
        if old is not None:
            items.append((i, "rel", record_text(r, i, "prompt"), new, old))
            reph = record_text(r, i, "rephrase_prompt", required=False)
            if reph is not None:
                items.append((i, "gen", reph, new, old))
        items.extend((i, "loc", p, a, new) for p, a in locality_pairs(r, i) if a is not None)
    prompts = [format_prompt(p, context) for _, _, p, _, _ in items]
    lp, n = sequence_logprobs(model, tokenizer, prompts + prompts,
                              [x[3] for x in items] + [x[4] for x in items], batch_size=batch_size)
    k = len(items)
    acc: dict[str, list[float]] = {f"{kind}{s}": [] for kind in ("rel", "gen", "loc")
                                   for s in ("", "_token_mean", "_margin")}
    per: list[dict[str, Any]] = [{"rel": None, "gen": None, "loc": []} for _ in requests]
    for j, (i, kind, p, good, bad) in enumerate(items):
        lp_good, lp_bad = lp[j], lp[k + j]
        entry = {"prompt": p, "preferred": good, "other": bad, "logp_preferred": lp_good,
                 "logp_other": lp_bad, "joint": float(lp_good > lp_bad),
                 "token_mean": float(lp_good / n[j] > lp_bad / n[k + j])}
        acc[kind].append(entry["joint"])
        acc[f"{kind}_token_mean"].append(entry["token_mean"])
        acc[f"{kind}_margin"].append(lp_good - lp_bad)
        if kind == "loc":
            per[i]["loc"].append(entry)
        else:
            per[i][kind] = entry
    scores: dict[str, Any] = {}
    for key, values in acc.items():
        scores[key] = _mean(values) if key.endswith("_margin") else _mean100(values)
    scores.update(n_rel=len(acc["rel"]), n_gen=len(acc["gen"]), n_loc=len(acc["loc"]))
    records = [{"index": i, "case_id": getattr(r, "case_id", None), **res}
               for i, (r, res) in enumerate(zip(requests, per))]
    settings = {"context": context, "rule": "log P(new | x) > log P(old | x), joint over target tokens",
                "token_mean_rule": "per-token mean log-probabilities (ROME/MEMIT code)",
                "join": "prompt + ' ' + target", "n_records": len(requests)}
    return {"settings": settings, "scores": scores, "records": records}
