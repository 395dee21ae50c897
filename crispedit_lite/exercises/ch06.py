r"""Graders for the exercises of notebook ``06_crispedit_on_a_small_lm``.

Each grader raises ``AssertionError`` with a hint when the answer is wrong and prints ``"correct"``
when it is right. Derived in notebook ``06_crispedit_on_a_small_lm``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["check_ft_m_labels", "check_pareto_front"]

PAIRS = [("The capital of France is", "Brussels"), ("The chemical symbol of gold is", " Au"),
         ("Python was created by", "Guido van Rossum")]


def check_ft_m_labels(fn: Callable[[str, str, Any], tuple[Sequence[int], Sequence[int]]],
                      tokenizer: Any) -> None:
    r"""Exercise 6.1: ``fn(prompt, target, tokenizer) -> (input_ids, labels)`` for one FT-M example.

    The input is ``prompt + " " + target`` (one space, added only when ``target`` has none); the
    labels copy the input ids, except the first ``len(tokenizer(prompt).input_ids)`` positions,
    which are ``-100``: the loss :math:`\mathcal L_{\rm edit}` sees only target tokens. Compared
    with :func:`crispedit_lite.data.batches.tokenize_edits` on a few pairs. Derived in notebook
    ``06_crispedit_on_a_small_lm``.

    Derived in notebook ``06_crispedit_on_a_small_lm``.
    """
    from crispedit_lite.data.batches import tokenize_edits

    for prompt, target in PAIRS:
        want = tokenize_edits([(prompt, target)], tokenizer)
        ids_w = want["input_ids"][0].tolist()
        lab_w = want["labels"][0].tolist()
        ids, labels = fn(prompt, target, tokenizer)
        ids, labels = [int(x) for x in ids], [int(x) for x in labels]
        assert ids == ids_w, (
            f"input ids differ for {prompt!r} + {target!r}: tokenise prompt + ' ' + target "
            "(add the space only when the target has none)"
        )
        assert len(labels) == len(ids), "one label per input token"
        if labels == ids:
            raise AssertionError("mask the prompt: its positions get label -100 (FT-M trains targets only)")
        assert labels == lab_w, (
            f"labels differ for {prompt!r}: the first len(tokenizer(prompt).input_ids) positions are "
            "-100, the target positions keep their token ids"
        )
    print("correct")


def _front(rows: Mapping[str, tuple[float, float]]) -> set[str]:
    out = set()
    for m, (r, k) in rows.items():
        dominated = any(r2 >= r and k2 <= k and (r2 > r or k2 < k)
                        for m2, (r2, k2) in rows.items() if m2 != m)
        if not dominated:
            out.add(m)
    return out


def check_pareto_front(fn: Callable[[Mapping[str, tuple[float, float]]], Sequence[str]]) -> None:
    r"""Exercise 6.2: ``fn({method: (reliability, kl)}) -> methods on the Pareto front``.

    A method is on the front when no other method has reliability :math:`\ge` and KL :math:`\le`
    with at least one strict. Checked on hand-made tables (ties included) and returned as a set.
    Derived in notebook ``06_crispedit_on_a_small_lm``.
    """
    cases = [
        {"A": (90.0, 0.10), "B": (80.0, 0.01), "C": (70.0, 0.05), "D": (90.0, 0.20)},
        {"A": (50.0, 0.1), "B": (50.0, 0.1)},
        {"A": (10.0, 0.0), "B": (100.0, 1.0), "C": (60.0, 0.5), "D": (60.0, 0.6)},
        {"only": (0.0, 0.0)},
    ]
    for rows in cases:
        got = set(fn(dict(rows)))
        want = _front(rows)
        if got == set(rows) and want != got:
            raise AssertionError("not every method is on the front: drop the dominated ones")
        assert got == want, (
            f"for {rows} the front is {sorted(want)}, got {sorted(got)}: a method is dominated when "
            "another has reliability >= and KL <= with at least one strict (equal rows both stay)"
        )
    print("correct")
