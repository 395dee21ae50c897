"""crispedit_lite.evaluation.locality, against the pre-edit model: base answers kept in the "before" record,
agreement 1 / < 1."""

from __future__ import annotations

import json
import types

import pytest

import crispedit_lite.evaluation.wild as wild_module
from crispedit_lite.evaluation import base_answers, evaluate_run
from tests.helpers import CHAT_TEMPLATE, qa_tokenizer, tiny_model

REQS = [types.SimpleNamespace(prompt="capital of france ?", target_new="rome", ground_truth="paris",
                              rephrase_prompt="the capital of france is", locality_prompt=["city ?", "w3 ?"],
                              locality_answer=["paris", "london"], case_id=0)]


def fake_generation(monkeypatch, answers: dict[str, str]):
    """Replace decoding by a lookup on the question inside the prompt (the model is never run)."""
    def fake(model, tokenizer, prompts, **kwargs):
        return [next((a for q, a in answers.items() if q in p), "w9") for p in prompts]

    monkeypatch.setattr(wild_module, "greedy_generate", fake)


def run(model, tok, base=None, **kw):
    return evaluate_run(model, tok, REQS, ("wild", "teacher_forced"), base=base, progress=False,
                        contexts=("qa", "none"), **kw)


def test_agreement_one_when_unchanged_below_one_when_a_neighbour_changes(monkeypatch):
    tok, model = qa_tokenizer(), tiny_model(2)
    fake_generation(monkeypatch, {"city ?": "paris", "w3 ?": "w4", "france": "paris"})
    before = run(model, tok)
    assert before["metrics"]["wild"]["scores"]["qa"]["loc_agreement"] is None  # nothing to compare with
    same = run(model, tok, base=before)
    assert same["metrics"]["wild"]["scores"]["qa"]["loc_agreement"] == pytest.approx(100.0)
    fake_generation(monkeypatch, {"city ?": "paris", "w3 ?": "rome", "france": "rome"})  # one neighbour moved
    after = run(model, tok, base=before)
    for c in ("qa", "none"):
        s = after["metrics"]["wild"]["scores"][c]
        assert s["loc_agreement"] == pytest.approx(50.0) and s["rel_em"] == pytest.approx(100.0)
        assert s["loc_em"] == pytest.approx(50.0)  # absolute: "paris" right, "rome" != "london"
        assert s["loc_agreement_nonempty"] == pytest.approx(50.0)
    row = after["metrics"]["side_by_side"]["wild_official_qa_em"]
    assert row["loc"] == pytest.approx(50.0) and row["rel"] == pytest.approx(100.0)
    rows = set(after["metrics"]["side_by_side"])
    assert rows >= {"teacher_forced", "probability", "wild_official_none_contains"}


def test_base_answers_survive_a_json_round_trip(monkeypatch):
    tok, model = qa_tokenizer(), tiny_model(2)
    fake_generation(monkeypatch, {"city ?": "paris", "w3 ?": "w4"})
    before = run(model, tok)
    on_disk = {"metrics": json.loads(json.dumps(before["metrics"]))}  # what a results file keeps
    assert base_answers(on_disk) == base_answers(before)
    fake_generation(monkeypatch, {"city ?": "rome", "w3 ?": "w4"})
    after = run(model, tok, base=on_disk)
    assert after["metrics"]["wild"]["scores"]["none"]["loc_agreement"] == pytest.approx(50.0)
    assert base_answers(None) == {}
    with pytest.raises(ValueError, match="decoding 'official'"):
        base_answers({"metrics": {"wild": {"base_answers": {"official": ["paris"]}}}})


def test_both_decodings_reported_with_their_own_base_answers(monkeypatch):
    tok, model = qa_tokenizer(), tiny_model(2)
    tok.chat_template = CHAT_TEMPLATE
    seen = []

    def fake(model, tokenizer, prompts, stop_after_first_token=False, **kwargs):
        seen.append(stop_after_first_token)
        return ["paris" if stop_after_first_token else "" for _ in prompts]

    monkeypatch.setattr(wild_module, "greedy_generate", fake)
    before = run(model, tok, wild_decoding="both")
    wild = before["metrics"]["wild"]
    assert wild["decoding"] == "robust" and set(wild["by_decoding"]) == {"robust", "official"}
    assert wild["scores"] == wild["by_decoding"]["robust"]["scores"]
    assert set(wild["base_answers"]) == {"robust", "official"}
    assert wild["base_answers"]["official"]["qa"]["city ?"] == ""
    assert wild["base_answers"]["robust"]["qa"]["city ?"] == "paris"
    assert set(before["generations_by_decoding"]) == {"robust", "official"} and True in seen and False in seen
    after = run(model, tok, base=before, wild_decoding="both")
    for d in ("robust", "official"):
        assert after["metrics"]["wild"]["by_decoding"][d]["scores"]["qa"]["loc_agreement"] == 100.0
    assert after["metrics"]["side_by_side"]["wild_official_qa_contains"]["rel"] == 0.0
    official = after["metrics"]["wild"]["by_decoding"]["official"]["scores"]["qa"]
    assert official["loc_agreement_nonempty"] is None  # "" == "" everywhere: nothing real to compare
    assert official["n_loc_agreement"] == 2 and official["n_loc_agreement_nonempty"] == 0
