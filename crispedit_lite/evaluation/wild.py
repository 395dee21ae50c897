r"""WILD evaluation of edits: greedy answers, judged or exact-matched, in two prompt contexts.

Yang et al. (2025, "The Mirage of Model Editing") evaluate an edit the way the model is used: the
edited model *generates* an answer (greedy, at most 40 new tokens, stopping at ``"."``, newline or
EOS), and the answer is scored against the gold string. CrispEdit reports (§4.2, App. E; ×100)

.. math::

    \mathrm{Rel} = \frac1N\sum_{i=1}^N s\big(g(c(x_i)), y_i^{\rm new}\big), \qquad
    \mathrm{Gen} = \frac1N\sum_{i=1}^N s\big(g(c(x_i^{\rm reph})), y_i^{\rm new}\big),

with :math:`g` the greedy decoder, :math:`c` the context (``"qa"``: the template
``"Please answer the question:\n\nQ: {question}\nA:"``; ``"none"``: the prompt verbatim; the paper
reports these two) and :math:`s` the LLM judge (paper) or SQuAD exact match (fallback). A third
context, ``"chat"`` (the official code's ``chat_temp``: a system prompt and the QA template through
the tokenizer's chat template; not in the paper's tables), is what small instruct models need: the
embedded SmolLM2-135M-Instruct answers the bare templates with EOS or a newline, i.e. ``""``.
Exact match also fails on full-sentence answers ("The capital of France is Paris"); every answer is
therefore also scored by :func:`~.text.contains_match` (``*_contains``), an offline stand-in for
the judge's "contains the gold target" criterion. Locality is reported two ways:
``loc`` = the score of the edited model's answer against the dataset's locality answer (what the
official code computes, an *absolute* accuracy) and ``loc_agreement`` = the fraction of locality
prompts on which the edited model's answer equals the *pre-edit* model's answer after SQuAD
normalisation (what "unchanged elsewhere" means; needs the pre-edit generations, see
:func:`pre_edit_locality`). ``decoding`` picks the paper's decoding (``"official"``) or the one for
small instruct models (``"robust"``: chat template in the QA context, stop strings after the first
non-blank character; :mod:`~crispedit_lite.evaluation.decoding`); by default the robust one when the
tokenizer has a chat template.

Derived in notebook ``06_crispedit_on_a_small_lm``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torch import nn

from crispedit_lite.evaluation.decoding import (
    CHAT_SYSTEM_PROMPT,
    CONTEXTS,
    QA_TEMPLATE,
    decoding_settings,
    format_prompt,
    resolve_decodings,
)
from crispedit_lite.evaluation.generation import greedy_generate
from crispedit_lite.evaluation.records import locality_pairs, record_text
from crispedit_lite.evaluation.text import STOP_STRINGS, contains_match, exact_match, normalize_answer

__all__ = ["QA_TEMPLATE", "CHAT_SYSTEM_PROMPT", "CONTEXTS", "format_prompt", "pre_edit_locality",
           "locality_agreement", "wild_evaluate", "wild_generate"]

Judge = Callable[[str, str, str], float]


def _check_contexts(contexts: Sequence[str], tokenizer: Any) -> list[str]:
    contexts = [contexts] if isinstance(contexts, str) else list(contexts)
    if not contexts:
        raise ValueError("WILD needs at least one context")
    for c in contexts:
        format_prompt("q", c, tokenizer)
    return contexts


def _one_decoding(decoding: str | None, tokenizer: Any) -> str:
    if decoding == "both" or not (decoding is None or isinstance(decoding, str)):
        raise ValueError("decoding: one WILD decoding ('official' or 'robust') or None, "
                         f"got {decoding!r}")
    return resolve_decodings(decoding, tokenizer)[0]


def wild_generate(model: nn.Module, tokenizer: Any, questions: Sequence[str], context: str, *,
                  decoding: str | None = None, **kwargs: Any) -> tuple[list[str], list[str]]:
    """``(inputs, answers)``: the WILD inputs of ``questions`` in ``context`` and the greedy answers.

    ``decoding``: ``"official"``, ``"robust"`` or ``None`` (robust when the tokenizer has a chat
    template); ``kwargs`` go to :func:`~.generation.greedy_generate`.

    Listed on the book page ``api``.
    """
    decoding = _one_decoding(decoding, tokenizer)
    inputs = [format_prompt(q, context, tokenizer, decoding) for q in questions]
    stop_first = decoding_settings(decoding, tokenizer)["stop_after_first_token"]
    return inputs, greedy_generate(model, tokenizer, inputs, stop_after_first_token=stop_first, **kwargs)


def pre_edit_locality(
    model: nn.Module,
    tokenizer: Any,
    requests: Sequence[Any],
    *,
    contexts: Sequence[str] = ("qa", "none"),
    max_new_tokens: int = 40,
    batch_size: int = 16,
    progress: bool = False,
    decoding: str | None = None,
) -> dict[str, dict[str, str]]:
    """Greedy answers of the *unedited* model to every locality prompt, for ``loc_agreement``.

    Run it before editing (or on the base model) and pass the result to :func:`wild_evaluate`
    with the same ``decoding``.

    Returns:
        ``{context: {locality prompt: answer}}`` (JSON-serialisable; keyed by prompt text, so it
        survives re-ordering or sub-setting of the requests).

    Listed on the book page ``api``.
    """
    prompts = list(dict.fromkeys(p for i, r in enumerate(requests) for p, _ in locality_pairs(r, i)))
    out: dict[str, dict[str, str]] = {}
    for c in _check_contexts(contexts, tokenizer):
        _, answers = wild_generate(model, tokenizer, prompts, c, decoding=decoding,
                                   max_new_tokens=max_new_tokens, batch_size=batch_size, progress=progress)
        out[c] = dict(zip(prompts, answers))
    return out


def locality_agreement(edited: Sequence[str], pre_edit: Sequence[str]) -> list[float]:
    """Per prompt, ``1.0`` if the edited and pre-edit answers agree after SQuAD normalisation.

    Listed on the book page ``api``.
    """
    if len(edited) != len(pre_edit):
        raise ValueError(f"locality_agreement: {len(edited)} edited vs {len(pre_edit)} pre-edit answers")
    return [float(normalize_answer(a) == normalize_answer(b)) for a, b in zip(edited, pre_edit)]


def _mean100(values: list[float]) -> float | None:
    return 100.0 * sum(values) / len(values) if values else None


def wild_evaluate(
    model: nn.Module,
    tokenizer: Any,
    requests: Sequence[Any],
    *,
    contexts: Sequence[str] = ("qa", "none"),
    judge: Judge | None = None,
    max_new_tokens: int = 40,
    batch_size: int = 16,
    pre_edit_locality: Mapping[str, Mapping[str, str]] | None = None,
    progress: bool = True,
    fallback: str = "exact_match",
    decoding: str | None = None,
) -> dict[str, Any]:
    """WILD Rel / Gen / Loc of an (edited) model over edit records, with every answer kept.

    Args:
        model, tokenizer: the model to evaluate and its tokenizer (padding side restored on return).
        requests: records with ``prompt``, ``target_new`` and optionally ``rephrase_prompt``,
            ``locality_prompt``, ``locality_answer`` (see :class:`~.records.EditRecord`).
        contexts: any of ``"qa"``, ``"none"``, ``"chat"``. judge: ``judge(question, gold,
            prediction) -> float`` (e.g. :func:`~.judge.make_judge`), given the *raw* question as in
            the official code; ``None`` scores by ``fallback``. Exact match and contains-match are
            always reported too (``*_em``, ``*_contains``).
        max_new_tokens: decoding budget (40). batch_size: prompts per ``generate`` call.
        pre_edit_locality: output of :func:`pre_edit_locality`; enables ``loc_agreement``.
        progress: tqdm bars during generation. fallback: the scorer without a judge,
            ``"exact_match"`` (the official code's) or ``"contains"`` (:func:`~.text.contains_match`).
        decoding: ``"official"`` (the paper's), ``"robust"`` or ``None`` (robust when the tokenizer
            has a chat template); see :mod:`~crispedit_lite.evaluation.decoding`.

    Returns:
        ``{"settings": ..., "scores": {context: {"rel", "gen", "loc", "loc_agreement",
        "loc_agreement_nonempty" (over prompts whose pre-edit answer is not empty), "rel_em",
        "gen_em", "loc_em", "rel_contains", ..., "n_rel", "n_gen", "n_loc"}}, "records": [...]}``;
        scores are ×100 and
        ``None`` where no record had the field; each record holds, per context, the model input,
        the answer and its scores.

    Listed on the book page ``api``.
    """
    if fallback not in ("exact_match", "contains"):
        raise ValueError(f"fallback must be 'exact_match' or 'contains', got {fallback!r}")
    contexts = _check_contexts(contexts, tokenizer)
    decoding = _one_decoding(decoding, tokenizer)
    requests = list(requests)
    if not requests:
        raise ValueError("wild_evaluate: no requests")
    # (record index, kind, question, gold) for every item to answer
    items: list[tuple[int, str, str, str | None]] = []
    for i, r in enumerate(requests):
        gold = record_text(r, i, "target_new")
        items.append((i, "rel", record_text(r, i, "prompt"), gold))
        reph = record_text(r, i, "rephrase_prompt", required=False)
        if reph is not None:
            items.append((i, "gen", reph, gold))
        items.extend((i, "loc", p, a) for p, a in locality_pairs(r, i))
    if pre_edit_locality is not None:
        for c in contexts:
            if c not in pre_edit_locality:
                raise ValueError(f"pre_edit_locality has no answers for context {c!r}")
            for i, kind, q, _ in items:
                if kind == "loc" and q not in pre_edit_locality[c]:
                    raise ValueError(
                        f"record {i}: locality prompt {q!r} missing from pre_edit_locality[{c!r}]")

    records: list[dict[str, Any]] = [
        {"index": i, "case_id": getattr(r, "case_id", None), "prompt": r.prompt, "target_new": r.target_new}
        for i, r in enumerate(requests)
    ]
    scores: dict[str, dict[str, Any]] = {}
    for c in contexts:
        inputs, answers = wild_generate(model, tokenizer, [q for _, _, q, _ in items], c,
                                        decoding=decoding, max_new_tokens=max_new_tokens,
                                        batch_size=batch_size, progress=progress)
        per_record: list[dict[str, Any]] = [{"rel": None, "gen": None, "loc": []} for _ in requests]
        acc: dict[str, list[float]] = {f"{k}{suffix}": [] for suffix in ("", "_em", "_contains")
                                       for k in ("rel", "gen", "loc")}
        acc["loc_agreement"] = []
        acc["loc_agreement_nonempty"] = []  # only where the pre-edit answer is not "" (else vacuous)
        for (i, kind, q, gold), x, y in zip(items, inputs, answers):
            entry: dict[str, Any] = {"question": q, "input": x, "answer": y, "gold": gold}
            if gold is not None:
                entry["em"] = exact_match(y, gold)
                entry["contains"] = contains_match(y, gold)
                entry["judge"] = float(judge(q, gold, y)) if judge is not None else None
                entry["score"] = entry["judge"] if judge is not None else (
                    entry["em"] if fallback == "exact_match" else entry["contains"])
                acc[kind].append(entry["score"])
                acc[f"{kind}_em"].append(entry["em"])
                acc[f"{kind}_contains"].append(entry["contains"])
            if kind == "loc":
                if pre_edit_locality is not None:
                    entry["pre_edit_answer"] = pre_edit_locality[c][q]
                    entry["agreement"] = locality_agreement([y], [entry["pre_edit_answer"]])[0]
                    acc["loc_agreement"].append(entry["agreement"])
                    if normalize_answer(entry["pre_edit_answer"]):
                        acc["loc_agreement_nonempty"].append(entry["agreement"])
                per_record[i]["loc"].append(entry)
            else:
                per_record[i][kind] = entry
        for rec, res in zip(records, per_record):
            rec[c] = res
        scores[c] = {k: _mean100(v) for k, v in acc.items()}
        scores[c].update(n_rel=len(acc["rel"]), n_gen=len(acc["gen"]), n_loc=len(acc["loc"]),
                         n_loc_agreement=len(acc["loc_agreement"]),
                         n_loc_agreement_nonempty=len(acc["loc_agreement_nonempty"]))
    settings = {
        "contexts": contexts, "max_new_tokens": max_new_tokens, "decoding": "greedy",
        "stop_strings": [*STOP_STRINGS, "<eos>"], "n_records": len(requests),
        "scorer": getattr(judge, "name", "llm_judge") if judge is not None else fallback,
        "loc_agreement": pre_edit_locality is not None, **decoding_settings(decoding, tokenizer),
    }
    return {"settings": settings, "scores": scores, "records": records}
