r"""Locality against the pre-edit model: where the base model's greedy answers are kept and found.

"Unchanged elsewhere" is measured against the *unedited* model, not the dataset: the WILD
``loc_agreement`` of an edited model :math:`\theta'` over locality prompts :math:`x_1,\dots,x_L` is

.. math::

    \mathrm{Loc}_{\rm agree} = \frac1L\sum_{l=1}^L \mathbb 1\big[\operatorname{norm} g_{\theta'}(c(x_l))
    = \operatorname{norm} g_{\theta}(c(x_l))\big],

with :math:`g` the greedy decoder of one WILD decoding, :math:`c` the context and :math:`\operatorname{norm}`
SQuAD normalisation (:func:`~.wild.locality_agreement`); the probability side is
:math:`\mathrm{Loc}_P` of :mod:`~crispedit_lite.evaluation.probability`. The base answers
:math:`g_\theta(c(x_l))` are written into the "before" metrics
(``metrics["wild"]["base_answers"][decoding][context][prompt]``), so a results file alone is enough
to score an "after" run; :func:`base_answers` reads them back from a result of
:func:`~.runner.evaluate_run`, in memory or loaded from JSON.

Derived in notebook ``06_crispedit_on_a_small_lm``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["base_answers", "answers_of"]

Answers = dict[str, dict[str, str]]


def answers_of(records: list[dict[str, Any]], contexts: list[str]) -> Answers:
    """``{context: {locality prompt: answer}}`` from :func:`~.wild.wild_evaluate`'s records.

    Listed on the book page ``api``.
    """
    return {c: {e["question"]: e["answer"] for r in records for e in r[c]["loc"]} for c in contexts}


def base_answers(base: Mapping[str, Any] | None) -> dict[str, Answers]:
    """The pre-edit locality answers of a "before" result, per WILD decoding (``{}`` without a base).

    Looks in ``base["state"]["pre_edit_locality_by_decoding"]``, then in
    ``base["metrics"]["wild"]["base_answers"]`` (what a results file keeps), then in the older
    ``base["state"]["pre_edit_locality"]`` (the decoding named in the base's WILD settings, else
    ``"official"``). A value that is not a mapping is a ``ValueError``.

    Listed on the book page ``api``.
    """
    if not base:
        return {}
    state = base.get("state") or {}
    wild = (base.get("metrics") or {}).get("wild") or {}
    found = state.get("pre_edit_locality_by_decoding") or wild.get("base_answers")
    if not found and state.get("pre_edit_locality") is not None:
        decoding = (wild.get("settings") or {}).get("wild_decoding", "official")
        found = {decoding: state["pre_edit_locality"]}
    found = found or {}
    for decoding, per_context in found.items():
        if not isinstance(per_context, Mapping) or any(not isinstance(v, Mapping)
                                                       for v in per_context.values()):
            raise ValueError(f"base answers for decoding {decoding!r}: expected "
                             "{context: {prompt: answer}}")
    return {d: {c: dict(v) for c, v in pc.items()} for d, pc in found.items()}
