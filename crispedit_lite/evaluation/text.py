r"""Answer normalisation, exact match, and stop-string truncation for WILD evaluation.

The exact-match scorer is the SQuAD one (Rajpurkar et al. 2016), which the CrispEdit code uses as its
``exact_match`` criterion (``evaluate/evaluate_utils.py``):

.. math::

    \mathrm{EM}(\hat y, y) = \mathbb 1\big[\operatorname{norm}(\hat y) = \operatorname{norm}(y)\big],
    \qquad \operatorname{norm} = \text{whitespace} \circ \text{articles} \circ \text{punctuation}
    \circ \text{lowercase},

where the steps lowercase, delete ASCII punctuation, delete the words *a*, *an*, *the*, and collapse
whitespace, in that order. WILD decoding (Yang et al. 2025, "The Mirage of Model Editing") stops at
the first ``"."`` or newline; :func:`truncate_at_stop` cuts a decoded continuation there.

Derived in notebook ``06_crispedit_on_a_small_lm``.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence

__all__ = ["STOP_STRINGS", "normalize_answer", "exact_match", "contains_match", "truncate_at_stop"]

#: Stop strings of WILD decoding besides the EOS token (official code ``evaluate/evaluate_utils.py``).
STOP_STRINGS: tuple[str, ...] = (".", "\n")

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lowercase, drop punctuation, drop articles, collapse whitespace.

    Example: ``normalize_answer("The Eiffel-Tower!") == "eiffeltower"``.

    Listed on the book page ``api``.
    """
    if not isinstance(text, str):
        raise ValueError(f"normalize_answer expects a string, got {type(text).__name__}")
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, gold: str | Sequence[str]) -> float:
    r"""SQuAD exact match, :math:`1.0` or :math:`0.0`; with several gold answers, the best of them.

    Listed on the book page ``api``.
    """
    golds = [gold] if isinstance(gold, str) else list(gold)
    if not golds:
        raise ValueError("exact_match needs at least one gold answer")
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(g) for g in golds))


def contains_match(prediction: str, gold: str | Sequence[str]) -> float:
    r"""``1.0`` if the normalised gold answer occurs as whole words inside the normalised prediction.

    A lenient, offline stand-in for the judge's criterion ("the answer contains the gold target"):
    ``contains_match("The capital of France is Paris", "Paris") == 1.0``, while ``"Parisian"`` does
    not contain ``"Paris"``. It does not catch contradictions (``"Paris or Rome"`` counts), so report
    it next to exact match, never instead of the judge.

    Listed on the book page ``api``.
    """
    golds = [gold] if isinstance(gold, str) else list(gold)
    if not golds:
        raise ValueError("contains_match needs at least one gold answer")
    pred = f" {normalize_answer(prediction)} "
    return float(any(normalize_answer(g) and f" {normalize_answer(g)} " in pred for g in golds))


def truncate_at_stop(text: str, stop_strings: Sequence[str] = STOP_STRINGS, *,
                     after_first_token: bool = False) -> str:
    r"""Cut ``text`` at the first occurrence of any stop string and strip surrounding whitespace.

    The official code stops generation when the text *ends* with a stop string and then strips that
    trailing stop string; cutting at the first occurrence gives the same answer whenever the stop
    string ends a token, and stays correct when a token carries text past it (e.g. ``".\n"``).
    An answer that starts with a stop string (a model that opens with a newline) becomes ``""``,
    as in the official code.

    With ``after_first_token=True`` (the "robust" WILD decoding) the leading whitespace is skipped
    first and stop strings count only from the first non-blank character on:
    ``truncate_at_stop("\n\nThe answer is: Hamlet.", after_first_token=True) ==
    "The answer is: Hamlet"``, where the official rule gives ``""``.

    Listed on the book page ``api``.
    """
    if after_first_token:
        text = text.lstrip()
    cut = len(text)
    for stop in stop_strings:
        if not stop:
            raise ValueError("truncate_at_stop: stop strings must be non-empty")
        i = text.find(stop)
        if i != -1:
            cut = min(cut, i)
    return text[:cut].strip()
