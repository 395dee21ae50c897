"""What the evaluators read from an edit record, without importing :mod:`crispedit_lite.data`.

Any object with the attributes of :class:`EditRecord` works (the package's ``EditRequest``, a
dataclass of your own, a ``types.SimpleNamespace``). ``locality_prompt`` may be one prompt or a list
of neighbourhood prompts (CounterFact); ``locality_answer`` is then one answer for all of them or a
list of the same length.

Derived in notebook ``06_crispedit_on_a_small_lm``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

__all__ = ["EditRecord", "record_text", "locality_pairs"]


@runtime_checkable
class EditRecord(Protocol):
    """The fields the evaluators use (a structural type: no inheritance needed).

    Attributes:
        prompt: the edit prompt (a question for ZsRE/WikiBigEdit, a cloze for CounterFact).
        target_new: the new answer the edit teaches.
        rephrase_prompt: a paraphrase of ``prompt`` (generalisation), or ``None``.
        locality_prompt: an unrelated prompt, or a list of neighbourhood prompts, or ``None``.
        locality_answer: its answer(s) (dataset gold), or ``None``.

    Listed on the book page ``api``.
    """

    prompt: str
    target_new: str
    rephrase_prompt: str | None
    locality_prompt: str | Sequence[str] | None
    locality_answer: str | Sequence[str] | None


def record_text(record: Any, index: int, field: str, *, required: bool = True) -> str | None:
    """Read one string field; a missing, empty or non-string required field is a ``ValueError``.

    Listed on the book page ``api``.
    """
    value = getattr(record, field, None)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise ValueError(f"record {index}: field {field!r} is missing or empty")
        return None
    if not isinstance(value, str):
        raise ValueError(f"record {index}: field {field!r} must be a string, got {type(value).__name__}")
    return value


def locality_pairs(record: Any, index: int) -> list[tuple[str, str | None]]:
    """The record's ``(locality prompt, locality answer)`` pairs; ``[]`` when it has none.

    Listed on the book page ``api``.
    """
    prompts = getattr(record, "locality_prompt", None)
    answers = getattr(record, "locality_answer", None)
    if prompts is None or (isinstance(prompts, str) and not prompts.strip()):
        return []
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if any(not isinstance(p, str) or not p.strip() for p in prompts):
        raise ValueError(f"record {index}: field 'locality_prompt' must hold non-empty strings")
    if answers is None or isinstance(answers, str):
        answers = [answers or None] * len(prompts)
    else:
        answers = list(answers)
        if len(answers) != len(prompts):
            raise ValueError(
                f"record {index}: field 'locality_answer' has {len(answers)} answers for "
                f"{len(prompts)} locality prompts"
            )
        if any(a is not None and not isinstance(a, str) for a in answers):
            raise ValueError(f"record {index}: field 'locality_answer' must hold strings")
    return list(zip(prompts, answers))
