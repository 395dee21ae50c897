"""crispedit_lite.evaluation.decoding: the WILD prompts and decodings.

The QA, no-context and chat prompts (one BOS with a chat template), stop strings after the first
non-blank token, the chat template in the QA context, the official decoding unchanged, and the lenient
contains-as-a-word score.
"""

from __future__ import annotations

import types

import pytest
import torch

from crispedit_lite.evaluation import (
    CHAT_SYSTEM_PROMPT,
    QA_TEMPLATE,
    contains_match,
    default_decoding,
    format_prompt,
    greedy_generate,
    resolve_decodings,
    truncate_at_stop,
    wild_evaluate,
)
from tests.helpers import CHAT_TEMPLATE, qa_tokenizer, tiny_model
from tests.helpers import QA_WORDS as WORDS


@pytest.fixture()
def tok():
    """A fresh QA tokenizer for each test (the tests here set its chat template)."""
    return qa_tokenizer()


def scripted_model(chain: dict[str, str]):
    """A tiny Llama whose next token is ``chain[last token]`` (one-hot embeddings, a permutation head)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    v, h = len(WORDS), 88
    cfg = LlamaConfig(vocab_size=v, hidden_size=h, intermediate_size=16, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
                      bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        layer = model.model.layers[0]
        layer.self_attn.o_proj.weight.zero_()  # the block adds nothing: the residual is the embedding
        layer.mlp.down_proj.weight.zero_()
        model.model.embed_tokens.weight.zero_()
        model.model.embed_tokens.weight[:, :v] = torch.eye(v)
        model.lm_head.weight.zero_()
        for i, w in enumerate(WORDS):
            model.lm_head.weight[WORDS.index(chain.get(w, "</s>")), i] = 10.0
    return model


#: "... q" -> "\n" -> "paris" -> "." -> EOS: an answer after a blank line, as SmolLM2 gives in the QA context
BLANK_FIRST = {"q": "\n", "\n": "paris", "paris": ".", ".": "</s>"}


def test_stop_after_first_token_text_rule():
    text = "\n\nThe answer is: Hamlet."
    assert truncate_at_stop(text) == ""  # official: the leading newline is a stop
    assert truncate_at_stop(text, after_first_token=True) == "The answer is: Hamlet"
    assert truncate_at_stop(" Paris.\nQ: x", after_first_token=True) == "Paris"
    assert truncate_at_stop("\n\n", after_first_token=True) == ""
    assert contains_match(truncate_at_stop(text, after_first_token=True), "Hamlet") == 1.0


def test_contains_as_a_word():
    assert contains_match("It is Paris.", "Paris") == 1.0
    assert contains_match("Parisian", "Paris") == 0.0
    assert contains_match("The answer is: Hamlet", "hamlet") == 1.0
    assert contains_match("Hamlets", "Hamlet") == 0.0


def test_greedy_generation_after_a_blank_line(tok):
    model = scripted_model(BLANK_FIRST)
    assert greedy_generate(model, tok, ["w1 q"], max_new_tokens=10) == [""]
    assert greedy_generate(model, tok, ["w1 q"], max_new_tokens=10, stop_after_first_token=True) == ["paris"]
    raw = greedy_generate(model, tok, ["w1 q"], max_new_tokens=10, stop_strings=(), raw=True)
    assert raw[0].lstrip().startswith("paris") and raw[0] != raw[0].lstrip()
    # reading either rule off the raw continuation gives the decoded answers
    assert truncate_at_stop(raw[0]) == "" and truncate_at_stop(raw[0], after_first_token=True) == "paris"


def test_robust_stop_still_ends_generation(tok):
    model = scripted_model({"q": "\n", "\n": "paris", "paris": ".", ".": "rome", "rome": "rome"})
    calls = []
    model.lm_head.register_forward_hook(lambda m, i, o: calls.append(1))
    assert greedy_generate(model, tok, ["q"], max_new_tokens=30, stop_after_first_token=True) == ["paris"]
    assert len(calls) == 3  # "\n", "paris", "." and then stop, not 30 steps


def rec(prompt, target, loc=None, loc_ans=None):
    return types.SimpleNamespace(prompt=prompt, target_new=target, rephrase_prompt=None,
                                 locality_prompt=loc, locality_answer=loc_ans, case_id=None)


def test_wild_evaluate_both_decodings(tok):
    model = scripted_model(BLANK_FIRST)
    reqs = [rec("w1 q", "paris"), rec("w2 q", "paris paris")]
    off = wild_evaluate(model, tok, reqs, contexts=("none",), decoding="official", progress=False)
    rob = wild_evaluate(model, tok, reqs, contexts=("none",), decoding="robust", progress=False)
    assert off["scores"]["none"]["rel_em"] == 0.0 and off["scores"]["none"]["rel_contains"] == 0.0
    assert rob["scores"]["none"]["rel_em"] == pytest.approx(50.0)
    assert rob["scores"]["none"]["rel_contains"] == pytest.approx(50.0)
    assert off["settings"]["wild_decoding"] == "official" and not off["settings"]["stop_after_first_token"]
    assert rob["settings"]["stop_after_first_token"] and not rob["settings"]["qa_chat_template"]
    assert off["settings"]["decoding"] == "greedy"  # the old key keeps its meaning
    with pytest.raises(ValueError, match="decoding"):
        wild_evaluate(model, tok, reqs, decoding="both", progress=False)


def test_official_decoding_is_unchanged(tok):
    """Official = the bare template and stop strings from the first token, chat template or not."""
    model = tiny_model(11)
    qs = ["the capital of france is", "q : w1 w2 ?", "rome is the capital of italy , a city"]
    reqs = [rec(q, "paris") for q in qs]
    # today's answers, computed from scratch: whole continuation, cut at the first stop string
    raw = greedy_generate(model, tok, [QA_TEMPLATE.format(question=q) for q in qs], max_new_tokens=8,
                          stop_strings=(), raw=True)
    expected = [truncate_at_stop(t) for t in raw]
    tok.chat_template = CHAT_TEMPLATE
    out = wild_evaluate(model, tok, reqs, contexts=("qa",), decoding="official", max_new_tokens=8,
                        progress=False)
    assert [r["qa"]["rel"]["answer"] for r in out["records"]] == expected
    assert [r["qa"]["rel"]["input"] for r in out["records"]] == [QA_TEMPLATE.format(question=q) for q in qs]
    robust = wild_evaluate(model, tok, reqs, contexts=("qa",), max_new_tokens=8, progress=False)
    assert robust["settings"]["wild_decoding"] == "robust" and robust["settings"]["qa_chat_template"]
    assert robust["records"][0]["qa"]["rel"]["input"] == format_prompt(qs[0], "qa", tok, "robust")


def test_format_prompt():
    assert format_prompt("Who?", "qa") == "Please answer the question:\n\nQ: Who?\nA:"
    assert format_prompt("Who?", "none") == "Who?"
    assert QA_TEMPLATE.format(question="x") == format_prompt("x", "qa")
    with pytest.raises(ValueError, match="context"):
        format_prompt("Who?", "chatml")


def test_chat_context_uses_the_chat_template_with_one_bos(tok):
    with pytest.raises(ValueError, match="chat template"):
        format_prompt("Who?", "chat", tok)
    tok.chat_template = CHAT_TEMPLATE
    try:
        text = format_prompt("Who?", "chat", tok)
        assert not text.startswith("<s>")  # the tokenizer adds BOS itself
        user = QA_TEMPLATE.format(question="Who?")
        assert text.startswith(f"system : {CHAT_SYSTEM_PROMPT} ; user : {user}")
        assert text.endswith("assistant :")
        assert tok(text).input_ids.count(1) == 1
    finally:
        tok.chat_template = None


def test_format_prompt_robust_qa_uses_chat_template(tok):
    q = "Who?"
    assert format_prompt(q, "qa", tok, "robust") == QA_TEMPLATE.format(question=q)  # no chat template
    tok.chat_template = CHAT_TEMPLATE
    text = format_prompt(q, "qa", tok, "robust")
    assert text == f"user : {QA_TEMPLATE.format(question=q)} ; assistant :"  # no system turn, one BOS
    assert format_prompt(q, "qa", tok, "official") == QA_TEMPLATE.format(question=q)
    assert format_prompt(q, "none", tok, "robust") == q
    assert format_prompt(q, "chat", tok, "robust") == format_prompt(q, "chat", tok)
    with pytest.raises(ValueError, match="decoding"):
        format_prompt(q, "qa", tok, "greedy")


def test_default_and_resolved_decodings(tok):
    assert default_decoding(tok) == "official" and resolve_decodings("both", tok) == ["official", "robust"]
    tok.chat_template = CHAT_TEMPLATE
    assert default_decoding(tok) == "robust"
    assert resolve_decodings(None, tok) == ["robust"]
    assert resolve_decodings("both", tok) == ["robust", "official"]
    assert resolve_decodings(["official", "official"], tok) == ["official"]
    with pytest.raises(ValueError, match="decoding"):
        resolve_decodings("beam", tok)
    with pytest.raises(ValueError):
        resolve_decodings([], tok)
