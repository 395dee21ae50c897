"""crispedit_lite.evaluation.wild: Rel/Gen/Loc scores and records, the judge, the contains fallback, the
pre-edit locality answers and bad records (on the tiny QA Llama; the embedded SmolLM2 when slow)."""

from __future__ import annotations

import types

import pytest

from crispedit_lite.evaluation import (
    contains_match,
    format_prompt,
    greedy_generate,
    locality_agreement,
    pre_edit_locality,
    wild_evaluate,
)
from tests.helpers import constant_model, tiny_model


def rec(prompt, target, rephrase=None, loc=None, loc_ans=None, case_id=0):
    return types.SimpleNamespace(prompt=prompt, target_new=target, rephrase_prompt=rephrase,
                                 locality_prompt=loc, locality_answer=loc_ans, subject="x",
                                 ground_truth="<|endoftext|>", case_id=case_id)


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
