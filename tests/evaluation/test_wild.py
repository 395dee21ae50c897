"""WILD evaluation: normalisation, stop strings, batched greedy decoding, Rel/Gen/Loc bookkeeping."""

from __future__ import annotations

import types

import pytest
import torch
from torch import nn

from crispedit_lite.evaluation import (
    CHAT_SYSTEM_PROMPT,
    QA_TEMPLATE,
    contains_match,
    exact_match,
    format_prompt,
    greedy_generate,
    locality_agreement,
    normalize_answer,
    pre_edit_locality,
    truncate_at_stop,
    wild_evaluate,
)

WORDS = ["<pad>", "<s>", "</s>", "<unk>", ".", "\n", "?", ":", ",", "please", "answer", "the", "question",
         "q", "a", "an", "paris", "london", "rome", "is", "capital", "of", "france", "italy", "city"]
WORDS += [f"w{i}" for i in range(60)]


def tiny_tokenizer():
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(WORDS)}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.normalizer = normalizers.Lowercase()
    tk.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split("\n", "isolated"),
        pre_tokenizers.WhitespaceSplit(),
        pre_tokenizers.Punctuation(),
    ])
    tk.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tk.decoder = decoders.WordPiece(prefix="##")
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>",
                                  pad_token="<pad>", unk_token="<unk>")
    tok.padding_side = "right"
    return tok


def tiny_model(seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=len(WORDS), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      bos_token_id=1, eos_token_id=2, pad_token_id=0)
    torch.manual_seed(seed)
    return LlamaForCausalLM(cfg).eval()


def constant_model(word: str, seed: int = 0):
    """A tiny Llama whose head always prefers ``word`` (zero weights, one-hot bias)."""
    model = tiny_model(seed)
    head = nn.Linear(32, len(WORDS), bias=True)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        head.bias[WORDS.index(word)] = 10.0
    model.lm_head = head
    return model


def rec(prompt, target, rephrase=None, loc=None, loc_ans=None, case_id=0):
    return types.SimpleNamespace(prompt=prompt, target_new=target, rephrase_prompt=rephrase,
                                 locality_prompt=loc, locality_answer=loc_ans, subject="x",
                                 ground_truth="<|endoftext|>", case_id=case_id)


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


# --- text ---------------------------------------------------------------------------------------

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


def test_format_prompt():
    assert format_prompt("Who?", "qa") == "Please answer the question:\n\nQ: Who?\nA:"
    assert format_prompt("Who?", "none") == "Who?"
    assert QA_TEMPLATE.format(question="x") == format_prompt("x", "qa")
    with pytest.raises(ValueError, match="context"):
        format_prompt("Who?", "chatml")


CHAT_TEMPLATE = ("{{ bos_token }}{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} ; {% endfor %}"
                 "{% if add_generation_prompt %}assistant :{% endif %}")


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


# --- generation ---------------------------------------------------------------------------------

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


# --- wild_evaluate --------------------------------------------------------------------------------

def test_locality_agreement_logic():
    assert locality_agreement(["The Paris", "rome", ""], ["paris.", "london", ""]) == [1.0, 0.0, 1.0]
    with pytest.raises(ValueError):
        locality_agreement(["a"], [])


def test_wild_evaluate_scores_and_records(tok):
    model = constant_model("paris")
    reqs = [rec("capital of france ?", "Paris", "the capital of france is ?", "capital of italy ?", "Rome",
                7),
            rec("capital of italy ?", "London", None, ["city ?", "w1 ?"], ["paris", "w2"], 8)]
    pre = {"qa": {"capital of italy ?": "paris", "city ?": "paris", "w1 ?": "w3"},
           "none": {"capital of italy ?": "paris", "city ?": "paris", "w1 ?": "w3"}}
    out = wild_evaluate(model, tok, reqs, max_new_tokens=1, pre_edit_locality=pre, progress=False)
    for c in ("qa", "none"):
        s = out["scores"][c]
        assert s["rel"] == pytest.approx(50.0) and s["rel_em"] == pytest.approx(50.0)
        assert s["gen"] == pytest.approx(100.0) and s["n_gen"] == 1
        assert s["loc"] == pytest.approx(100.0 / 3) and s["n_loc"] == 3
        assert s["loc_agreement"] == pytest.approx(200.0 / 3)
    r0 = out["records"][0]
    assert r0["case_id"] == 7 and r0["qa"]["rel"]["answer"] == "paris"
    assert r0["qa"]["rel"]["input"] == format_prompt("capital of france ?", "qa")
    assert r0["none"]["rel"]["input"] == "capital of france ?"
    assert out["records"][1]["qa"]["gen"] is None and len(out["records"][1]["qa"]["loc"]) == 2
    assert out["settings"]["scorer"] == "exact_match" and out["settings"]["max_new_tokens"] == 1


def test_wild_evaluate_with_judge_gets_raw_question(tok):
    seen = []

    def judge(question, gold, prediction):
        seen.append((question, gold, prediction))
        return 1.0 if gold.lower() == "london" else 0.0  # disagrees with EM on purpose

    reqs = [rec("capital of france ?", "Paris"), rec("capital of italy ?", "London")]
    out = wild_evaluate(constant_model("paris"), tok, reqs, contexts=("qa",), judge=judge,
                        max_new_tokens=1, progress=False)
    s = out["scores"]["qa"]
    assert s["rel"] == pytest.approx(50.0) and s["rel_em"] == pytest.approx(50.0)
    assert out["records"][1]["qa"]["rel"]["score"] == 1.0 and out["records"][1]["qa"]["rel"]["em"] == 0.0
    assert ("capital of france ?", "Paris", "paris") in seen  # raw question, not the template
    assert s["gen"] is None and s["loc"] is None and s["loc_agreement"] is None


def test_wild_contains_fallback(tok):
    reqs = [rec("capital of france ?", "paris paris"), rec("capital of italy ?", "London")]
    out = wild_evaluate(constant_model("paris"), tok, reqs, contexts=("none",), max_new_tokens=3,
                        fallback="contains", progress=False)
    s = out["scores"]["none"]
    assert out["records"][0]["none"]["rel"]["answer"] == "paris paris paris"
    assert s["rel"] == pytest.approx(50.0) and s["rel_contains"] == pytest.approx(50.0) and s["rel_em"] == 0.0
    assert out["settings"]["scorer"] == "contains"
    with pytest.raises(ValueError, match="fallback"):
        wild_evaluate(constant_model("paris"), tok, reqs, fallback="f1", progress=False)


def test_pre_edit_locality_helper_matches_wild(tok):
    model = tiny_model(3)
    reqs = [rec("paris", "rome", None, "the capital of france is", "paris"),
            rec("rome", "paris", None, ["city", "the capital of france is"], None)]
    pre = pre_edit_locality(model, tok, reqs, contexts=("none",), max_new_tokens=6)
    assert set(pre["none"]) == {"the capital of france is", "city"}
    out = wild_evaluate(model, tok, reqs, contexts=("none",), max_new_tokens=6, pre_edit_locality=pre,
                        progress=False)
    assert out["scores"]["none"]["loc_agreement"] == pytest.approx(100.0)  # same model: unchanged
    assert out["scores"]["none"]["n_loc"] == 1  # only one locality prompt has a dataset answer
    with pytest.raises(ValueError, match="context 'qa'"):
        wild_evaluate(model, tok, reqs, contexts=("qa",), pre_edit_locality=pre, progress=False)


def test_wild_evaluate_bad_records(tok):
    model = constant_model("paris")
    with pytest.raises(ValueError, match=r"record 1: field 'target_new'"):
        wild_evaluate(model, tok, [rec("a ?", "b"), rec("c ?", "")], progress=False)
    with pytest.raises(ValueError, match="locality_answer"):
        wild_evaluate(model, tok, [rec("a ?", "b", None, ["x", "y"], ["1"])], progress=False)
    with pytest.raises(ValueError, match="no requests"):
        wild_evaluate(model, tok, [], progress=False)


@pytest.mark.slow
def test_embedded_smollm2_chat_context():
    """On SmolLM2-135M-Instruct: batched = one by one with a real BPE tokenizer and chat template."""
    from crispedit_lite.models import load_model

    model, tok = load_model("smollm2-135m-instruct")
    qs = ["What is the capital of France?", "Who wrote Romeo and Juliet?", "What is the capital of Italy?"]
    prompts = [format_prompt(q, "chat", tok) for q in qs]
    batched = greedy_generate(model, tok, prompts, batch_size=3)
    assert batched == [greedy_generate(model, tok, [p])[0] for p in prompts]
    assert contains_match(batched[0], "Paris") == 1.0 and tok.padding_side == "right"
    reqs = [rec(qs[0], "Lyon", "Which city is the capital of France?", qs[2], "Rome")]
    pre = pre_edit_locality(model, tok, reqs, contexts=("chat",))
    out = wild_evaluate(model, tok, reqs, contexts=("chat",), pre_edit_locality=pre, progress=False)
    assert out["scores"]["chat"]["rel"] == 0.0 and out["scores"]["chat"]["loc_agreement"] == 100.0
    assert out["scores"]["chat"]["loc_contains"] == 100.0
