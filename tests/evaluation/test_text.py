"""crispedit_lite.evaluation.text: SQuAD normalisation, exact and contains-as-a-word match, stop strings."""

from __future__ import annotations

import pytest

from crispedit_lite.evaluation import contains_match, exact_match, normalize_answer, truncate_at_stop


@pytest.mark.parametrize("raw, norm", [
    ("The Eiffel Tower", "eiffel tower"),
    ("  an  apple, a pear!  ", "apple pear"),
    ("Paris.", "paris"),
    ("THEATRE", "theatre"),          # "the" inside a word survives
    ("U.S.A.", "usa"),
    ("", ""),
])
def test_normalize_answer_squad(raw, norm):
    assert normalize_answer(raw) == norm


def test_exact_match():
    assert exact_match("the Paris", "Paris.") == 1.0
    assert exact_match("Paris, France", "Paris") == 0.0
    assert exact_match("rome", ["Paris", "Rome"]) == 1.0
    with pytest.raises(ValueError):
        exact_match("x", [])


def test_contains_match():
    assert contains_match("The capital of France is Paris", "Paris") == 1.0
    assert contains_match("It is the Eiffel Tower, in Paris", "the eiffel tower") == 1.0
    assert contains_match("Parisian food", "Paris") == 0.0  # whole words only
    assert contains_match("Rome", ["Paris", "rome"]) == 1.0
    assert contains_match("anything", "the") == 0.0  # a gold that normalises to "" never matches
    with pytest.raises(ValueError):
        contains_match("x", [])


@pytest.mark.parametrize("text, out", [
    (" Paris. It is", "Paris"),
    (" Paris\nQ: next", "Paris"),
    ("\nParis", ""),
    (" Paris", "Paris"),
    (" 3.5 metres.", "3"),           # WILD stops at the first ".", as the official code does
    ("Rome\n.", "Rome"),
])
def test_truncate_at_stop(text, out):
    assert truncate_at_stop(text) == out
