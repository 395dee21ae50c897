"""crispedit_lite.evaluation.teacher_forced, Rel / Gen / Spec: hand computation, padding independence,
CounterFact NLL rule."""

from __future__ import annotations

import types

import pytest

from crispedit_lite.evaluation import (
    score_targets,
    target_nll,
    target_token_accuracy,
    teacher_forced_evaluate,
)
from tests.helpers import constant_model, teacher_forced_by_hand, tiny_model


def rec(prompt, target, rephrase=None, loc=None, loc_ans=None):
    return types.SimpleNamespace(prompt=prompt, target_new=target, rephrase_prompt=rephrase,
                                 locality_prompt=loc, locality_answer=loc_ans, case_id=None)


PAIRS = [("the capital of france is", "paris"), ("q : w1 w2 w3 ?", "rome is a city of italy"),
         ("paris", "w5 w6"), ("rome is the capital of", "italy , france paris london")]


def test_matches_hand_computation_in_mixed_length_batches(tok):
    model = tiny_model(4)
    prompts, targets = zip(*PAIRS)
    accs, nlls = score_targets(model, tok, prompts, targets, batch_size=3)
    for (p, t), a, n in zip(PAIRS, accs, nlls):
        ha, hn = teacher_forced_by_hand(model, tok, p, t)
        assert a == pytest.approx(ha)
        assert n == pytest.approx(hn, rel=1e-5)
    assert target_token_accuracy(model, tok, prompts, targets, batch_size=1) == pytest.approx(accs)
    assert target_nll(model, tok, prompts, targets, batch_size=4) == pytest.approx(nlls, rel=1e-5)


def test_rigged_model_accuracy(tok):
    model = constant_model("paris")  # always predicts "paris"
    accs, _ = score_targets(model, tok, ["q ?", "q ?", "q ?"], ["paris paris", "paris london", "rome"])
    assert accs == pytest.approx([1.0, 0.5, 0.0])
    # a target stored with a leading space (CounterFact style) is the same target
    assert score_targets(model, tok, ["q ? "], [" paris london"]) == score_targets(model, tok, ["q ?"],
                                                                                   ["paris london"])


def test_teacher_forced_evaluate_zsre_style(tok):
    model = constant_model("paris")
    reqs = [rec("q ?", "paris", "capital ?", "city ?", "paris"),
            rec("a ?", "london", None, "city ?", "rome paris")]
    out = teacher_forced_evaluate(model, tok, reqs)
    s = out["scores"]
    assert s["rel"] == pytest.approx(50.0) and s["gen"] == pytest.approx(100.0) and s["n_gen"] == 1
    assert s["spec"] == pytest.approx(75.0) and s["n_spec"] == 2
    assert out["records"][1]["gen"] is None and out["records"][1]["spec"] == pytest.approx(0.5)


def test_counterfact_nll_comparison(tok):
    model = constant_model("paris")
    # true object "paris" is likelier than the new object "london" on both neighbourhood prompts
    reqs = [rec("q ?", "london", None, ["city ?", "w1 is"], "paris"),
            rec("q ?", "paris", None, ["city ?"], ["london"])]
    out = teacher_forced_evaluate(model, tok, reqs, specificity="nll_comparison")
    assert [r["spec"] for r in out["records"]] == [1.0, 0.0]
    assert out["scores"]["spec"] == pytest.approx(200.0 / 3)
    with pytest.raises(ValueError, match="specificity"):
        teacher_forced_evaluate(model, tok, reqs, specificity="kl")


def test_bad_input(tok):
    model = constant_model("paris")
    with pytest.raises(ValueError, match=r"record 0: field 'locality_answer'"):
        teacher_forced_evaluate(model, tok, [rec("q ?", "paris", None, "city ?", None)])
    with pytest.raises(ValueError, match=r"record 0: field 'prompt'"):
        teacher_forced_evaluate(model, tok, [rec(None, "paris")])
    with pytest.raises(ValueError, match="2 prompts vs 1 targets"):
        score_targets(model, tok, ["a", "b"], ["c"])
