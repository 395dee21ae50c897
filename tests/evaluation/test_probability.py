"""crispedit_lite.evaluation.probability, the ROME/MEMIT test: hand-computed log-probs, a rigged model, joint
vs per-token-mean rule."""

from __future__ import annotations

import types

import pytest

from crispedit_lite.evaluation import format_prompt, probability_evaluate, sequence_logprobs
from tests.helpers import constant_model, teacher_forced_by_hand, tiny_model


def rec(prompt, new, old=None, rephrase=None, loc=None, loc_ans=None):
    return types.SimpleNamespace(prompt=prompt, target_new=new, ground_truth=old, rephrase_prompt=rephrase,
                                 locality_prompt=loc, locality_answer=loc_ans, case_id=None)


def logp_by_hand(model, tok, prompt, target):
    """Summed log-prob = -(mean NLL computed by hand) x number of target tokens."""
    n = len(tok(prompt + " " + target).input_ids) - len(tok(prompt).input_ids)
    return -teacher_forced_by_hand(model, tok, prompt, target)[1] * n, n


def test_sequence_logprobs_match_hand_sum(tok):
    model = tiny_model(5)
    prompts = ["the capital of france is", "q : w1 ?", "paris"]
    targets = ["paris", "rome is a city", "w5 w6 w7"]
    lps, counts = sequence_logprobs(model, tok, prompts, targets, batch_size=2)
    for p, t, lp, c in zip(prompts, targets, lps, counts):
        ref, n = logp_by_hand(model, tok, p, t)
        assert c == n and lp == pytest.approx(ref, rel=1e-5)


def test_rigged_model_prefers_new_object(tok):
    model = constant_model("paris")  # P(paris) ~ 1 after any prefix
    reqs = [rec("capital of france ?", "paris", "london", "the capital of france is", "city ?", "rome"),
            rec("capital of italy ?", "london", "paris", None, ["city ?", "w1 ?"], ["paris", "rome"])]
    out = probability_evaluate(model, tok, reqs)
    s = out["scores"]
    assert s["rel"] == pytest.approx(50.0) and s["n_rel"] == 2  # P(new) > P(old) only in record 0
    assert s["gen"] == pytest.approx(100.0) and s["n_gen"] == 1
    # neighbourhood: P(true) > P(new)? record 0: rome vs paris no; record 1: paris vs london yes, rome no
    assert s["loc"] == pytest.approx(100.0 / 3) and s["n_loc"] == 3
    assert s["rel_token_mean"] == s["rel"]  # one-token objects: both rules agree
    margin = 10.0  # one-hot bias of 10 on "paris", all other logits 0
    assert s["rel_margin"] == pytest.approx(0.0, abs=1e-4)  # +10 and -10
    assert out["records"][0]["rel"]["logp_preferred"] - out["records"][0]["rel"]["logp_other"] == \
        pytest.approx(margin, rel=1e-4)
    assert out["records"][1]["gen"] is None and len(out["records"][1]["loc"]) == 2


def test_joint_and_token_mean_rules_differ_on_length(tok):
    # new = "paris paris rome" (two likely tokens, one unlikely) vs old = "rome" (one unlikely token):
    # joint: log P(new) ~ -10 - 2*eps < log P(old) ~ -10 -> 0; token mean: ~-3.3 > -10 -> 1
    model = constant_model("paris")
    out = probability_evaluate(model, tok, [rec("q ?", "paris paris rome", "rome")])
    assert out["scores"]["rel"] == 0.0 and out["scores"]["rel_token_mean"] == 100.0


def test_qa_context_and_missing_fields(tok):
    model = tiny_model(6)
    reqs = [rec("capital of france ?", "rome", "paris", loc="city ?", loc_ans="paris"),
            rec("capital of italy ?", "paris")]  # no ground_truth: no Rel term
    out = probability_evaluate(model, tok, reqs, context="qa")
    assert out["scores"]["n_rel"] == 1 and out["scores"]["n_gen"] == 0 and out["scores"]["gen"] is None
    entry = out["records"][0]["rel"]
    assert entry["prompt"] == "capital of france ?"
    new, _ = logp_by_hand(model, tok, format_prompt("capital of france ?", "qa"), "rome")
    assert entry["logp_preferred"] == pytest.approx(new, rel=1e-5)
    with pytest.raises(ValueError, match="context"):
        probability_evaluate(model, tok, reqs, context="chat")
    with pytest.raises(ValueError, match="no requests"):
        probability_evaluate(model, tok, [])
