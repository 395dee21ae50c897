"""crispedit_lite.evaluation.generation: batched greedy decoding equals one by one; stops, EOS, budget."""

from __future__ import annotations

import pytest

from crispedit_lite.evaluation import greedy_generate
from tests.helpers import constant_model, tiny_model

PROMPTS = ["the capital of france is", "paris", "q : w1 w2 w3 w4 w5 w6 w7 ?", "please answer the question",
           "rome is the capital of italy , a city"]


def test_left_padded_batch_equals_one_by_one(tok):
    model = tiny_model(1)
    batched = greedy_generate(model, tok, PROMPTS, max_new_tokens=12, batch_size=3)
    single = [greedy_generate(model, tok, [p], max_new_tokens=12, batch_size=1)[0] for p in PROMPTS]
    assert batched == single
    assert any(batched)  # the random model says something
    assert tok.padding_side == "right" and tok.pad_token == "<pad>"


def test_tokenizer_without_pad_token_is_restored(tok):
    model = tiny_model(2)
    ref = greedy_generate(model, tok, PROMPTS[:2], max_new_tokens=5, batch_size=1)
    tok.pad_token = None
    try:
        assert greedy_generate(model, tok, PROMPTS[:2], max_new_tokens=5, batch_size=2) == ref
        assert tok.pad_token is None and tok.padding_side == "right"
    finally:
        tok.pad_token = "<pad>"


def test_stop_string_ends_generation_early(tok):
    model = constant_model(".")
    calls = []
    model.lm_head.register_forward_hook(lambda m, i, o: calls.append(1))
    assert greedy_generate(model, tok, ["paris", "the capital of france is"], max_new_tokens=40) == ["", ""]
    assert len(calls) == 1  # one decoding step, not 40


def test_eos_and_budget(tok):
    assert greedy_generate(constant_model("</s>"), tok, ["paris"]) == [""]
    out = greedy_generate(constant_model("rome"), tok, ["paris"], max_new_tokens=7)
    assert out == [" ".join(["rome"] * 7)]
    with pytest.raises(ValueError, match="prompt 1"):
        greedy_generate(constant_model("rome"), tok, ["paris", ""])
    assert greedy_generate(constant_model("rome"), tok, []) == []
