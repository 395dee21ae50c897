"""crispedit_lite.evaluation.runner (evaluate_run): before/after bookkeeping (pre-edit answers, base
log-probs), metric layout."""

from __future__ import annotations

import copy
import json
import types

import pytest
import torch

from crispedit_lite.evaluation import evaluate_run
from tests.helpers import qa_tokenizer, tiny_model

TEXTS = ["the capital of france is paris .", "rome is a city of italy", "w1 w2 w3 w4 w5 w6 w7 w8"]


def rec(prompt, target, rephrase, loc, loc_ans):
    return types.SimpleNamespace(prompt=prompt, target_new=target, rephrase_prompt=rephrase,
                                 locality_prompt=loc, locality_answer=loc_ans, case_id=None)


def test_before_and_after(monkeypatch):
    tok = qa_tokenizer()
    model = tiny_model(7)
    reqs = [rec("capital of france ?", "rome", "the capital of france is", "city ?", "paris"),
            rec("capital of italy ?", "paris", "w1 w2 ?", "w3 ?", "london")]
    kw = dict(proxy_texts=TEXTS, probes=[("capital of france ?", "paris")], max_new_tokens=5, progress=False)
    before = evaluate_run(model, tok, reqs, base=None, **kw)
    assert set(before["metrics"]) == {"wild", "teacher_forced", "probability", "proxies", "side_by_side"}
    assert before["metrics"]["wild"]["decoding"] == "official"  # no chat template
    assert before["metrics"]["wild"]["base_answers"]["official"] == before["state"]["pre_edit_locality"]
    assert before["metrics"]["proxies"]["kl_to_base"] == 0.0
    assert set(before["state"]["pre_edit_locality"]["qa"]) == {"city ?", "w3 ?"}
    json.dumps(before["metrics"])  # JSON-ready
    json.dumps(before["generations"])
    same = evaluate_run(model, tok, reqs, base=before, **kw)
    assert same["metrics"]["wild"]["scores"]["qa"]["loc_agreement"] == pytest.approx(100.0)
    assert same["metrics"]["proxies"]["kl_to_base"] == pytest.approx(0.0, abs=1e-6)
    edited = copy.deepcopy(model)
    with torch.no_grad():
        for p in edited.model.layers[0].mlp.down_proj.parameters():
            p.add_(torch.randn_like(p))
    after = evaluate_run(edited, tok, reqs, base=before, **kw)
    assert after["metrics"]["proxies"]["kl_to_base"] > 0.0
    ppl_before = before["metrics"]["proxies"]["perplexity"]
    assert after["metrics"]["proxies"]["perplexity"] != pytest.approx(ppl_before)
    assert after["state"]["pre_edit_locality"] == before["state"]["pre_edit_locality"]
    assert "base_answers" not in after["metrics"]["wild"]  # only the unedited model's are kept
    assert "probe_accuracy" in after["metrics"]["proxies"]
    with pytest.raises(ValueError, match="unknown evaluation"):
        evaluate_run(model, tok, reqs, ["wild", "bleu"])
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ValueError, match="OPENAI_API_KEY"):
        evaluate_run(model, tok, reqs, ["wild"], judge=True)


def test_default_proxy_texts_are_held_out():
    from crispedit_lite.data.capability import capability_texts
    from crispedit_lite.evaluation import default_proxy_texts

    held_out = default_proxy_texts(seed=3)
    assert len(held_out) == 8 and not set(held_out) & set(capability_texts("offline", n=128, seed=3))
