"""crispedit_lite.evaluation.proxies: perplexity and KL to the base model by hand, probe accuracy.

The lm-eval capability tasks are in ``test_harness.py``.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from crispedit_lite.evaluation import (
    kl_to_base,
    perplexity,
    probe_accuracy,
    select_known_probes,
    token_logprobs,
)
from tests.helpers import constant_model, tiny_model

TEXTS = ["the capital of france is paris .", "rome is a city", "w1 w2 w3 w4 w5 w6 w7 w8 w9 w10 , london"]


def test_perplexity_is_exp_of_token_weighted_ce(tok):
    model = tiny_model(5)
    nll, count = 0.0, 0
    for t in TEXTS:
        ids = torch.tensor([tok(t).input_ids])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0]
        nll += float(F.cross_entropy(logits[:-1], ids[0, 1:], reduction="sum"))
        count += ids.shape[1] - 1
    expected = float(torch.exp(torch.tensor(nll / count)))
    assert perplexity(model, tok, TEXTS, batch_size=2) == pytest.approx(expected, rel=1e-5)
    assert perplexity(model, tok, TEXTS, batch_size=1) == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="text 1"):
        perplexity(model, tok, ["a b", "  "])


def test_kl_zero_for_identical_and_positive_after_perturbation(tok):
    base = tiny_model(6)
    assert kl_to_base(base, tok, TEXTS, base=base) == pytest.approx(0.0, abs=1e-6)
    edited = copy.deepcopy(base)
    assert kl_to_base(edited, tok, TEXTS, base=base, batch_size=2) == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():
        edited.model.layers[1].mlp.down_proj.weight.add_(0.5 * torch.randn_like(
            edited.model.layers[1].mlp.down_proj.weight))
    kl = kl_to_base(edited, tok, TEXTS, base=base, batch_size=2)
    assert kl > 1e-4
    # stored base log-probs give the same number as the base model
    stored = token_logprobs(base, tok, TEXTS)
    assert [s.shape[0] for s in stored] == [len(tok(t).input_ids) for t in TEXTS]
    assert kl_to_base(edited, tok, TEXTS, base=stored, batch_size=3) == pytest.approx(kl, rel=1e-5)
    # and by hand for one text
    ids = torch.tensor([tok(TEXTS[0]).input_ids])
    with torch.no_grad():
        p = F.log_softmax(base(input_ids=ids).logits[0], -1)
        q = F.log_softmax(edited(input_ids=ids).logits[0], -1)
    by_hand = float((p.exp() * (p - q)).sum(-1).mean())
    assert kl_to_base(edited, tok, TEXTS[:1], base=base) == pytest.approx(by_hand, rel=1e-5)
    with pytest.raises(ValueError, match="2 base log-prob tensors for 3 texts"):
        kl_to_base(edited, tok, TEXTS, base=stored[:2])


def test_probe_accuracy_and_selection(tok):
    model = constant_model("paris")
    probes = [("capital of france ?", "Paris"), ("capital of italy ?", "Rome"), ("city ?", "the paris")]
    res = probe_accuracy(model, tok, probes, max_new_tokens=1)
    assert res["accuracy"] == pytest.approx(200.0 / 3) and res["n"] == 3
    assert [r["answer"] for r in res["answers"]] == ["paris"] * 3 and res["scorer"] == "exact_match"
    assert select_known_probes(model, tok, probes, max_new_tokens=1) == [probes[0], probes[2]]
    lenient = probe_accuracy(model, tok, [("city ?", "Paris"), ("q ?", "Rome")], max_new_tokens=2,
                             scorer="contains", context="none")
    assert lenient["accuracy"] == 50.0 and lenient["answers"][0]["answer"] == "paris paris"
    with pytest.raises(ValueError, match="scorer"):
        probe_accuracy(model, tok, probes, scorer="bleu")
    with pytest.raises(ValueError, match="probe 1"):
        probe_accuracy(model, tok, [("q", "a"), ("q only",)])
