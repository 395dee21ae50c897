"""crispedit_lite.data.edits, edit requests and dataset loaders: round trips per format, malformed records,
sources."""

from __future__ import annotations

import hashlib
import json

import pytest

from crispedit_lite.data import (
    BUILTIN_EDIT_SETS,
    EditRequest,
    load_edits,
    parse_records,
    read_records,
)

# One record per format, copied in shape from the files the paper used (dossier §8.2).
ZSRE = {
    "subject": "Watts Humphrey",
    "src": "What university did Watts Humphrey attend?",
    "pred": "Trinity College",
    "rephrase": "What university did Watts Humphrey take part in?",
    "alt": "University of Michigan",
    "answers": ["Illinois Institute of Technology"],
    "loc": "nq question: who played desmond doss father in hacksaw ridge",
    "loc_ans": "Hugo Weaving",
    "cond": "Trinity College >> University of Michigan || "
            "What university did Watts Humphrey attend?",
}
COUNTERFACT = {
    "case_id": 1884,
    "prompt": "Reedy Glacier is in",
    "target_new": "Asia",
    "subject": "Reedy Glacier",
    "ground_truth": "Antarctica",
    "rephrase_prompt": "Reedy Glacier is located in the continent",
    "locality_prompt": "Mount Erebus, in",
    "locality_ground_truth": "Antarctica",
}
WIKI_3K = {
    "prompt": "Who was the doctoral advisor of Benjamin Wah?",
    "target_new": "Chittoor V. Ramamoorthy",
    "subject": "Benjamin Wah",
    "rephrase_prompt": "Who served as Benjamin Wah's doctoral advisor?",
    "locality_prompt": "Who was the doctoral advisor of Benjamin Fain?",
    "locality_ground_truth": "Vitaly Ginzburg",
}
WIKI_UPSTREAM = {
    "subject": "Benjamin Wah",
    "update": "Who was the doctoral advisor of Benjamin Wah?",
    "ans": "Chittoor V. Ramamoorthy",
    "rephrase": "Who served as Benjamin Wah's doctoral advisor?",
    "loc": "Who was the doctoral advisor of Benjamin Fain?",
    "loc_ans": "Vitaly Ginzburg",
    "mhop": "Where did the doctoral advisor of Benjamin Wah study?",
    "mhop_ans": "Stanford University",
}
ROME = {
    "case_id": 0,
    "pararel_idx": 2796,
    "requested_rewrite": {
        "prompt": "The mother tongue of {} is",
        "relation_id": "P103",
        "target_new": {"str": "English", "id": "Q1860"},
        "target_true": {"str": "French", "id": "Q150"},
        "subject": "Danielle Darrieux",
    },
    "paraphrase_prompts": [
        "Shayna does this and Yossel goes still. Danielle Darrieux is a native speaker of",
        "Danielle Darrieux, a native"],
    "neighborhood_prompts": ["The mother tongue of Léon Blum is",
                             "Michel Rocard is a native speaker of"],
    "attribute_prompts": ["J.R.R. Tolkien is a native speaker of"],
    "generation_prompts": ["Danielle Darrieux's mother tongue is"],
}


def write(tmp_path, records, name="edits.json"):
    path = tmp_path / name
    path.write_text(json.dumps(records))
    return path


def test_zsre_round_trip(tmp_path):
    (r,) = load_edits(write(tmp_path, [ZSRE]), format="zsre")
    assert (r.prompt, r.target_new, r.subject) == (ZSRE["src"], ZSRE["alt"], ZSRE["subject"])
    assert r.rephrase_prompt == ZSRE["rephrase"]
    # the official code: loc[13:].capitalize() + "?"
    assert r.locality_prompt == "Who played desmond doss father in hacksaw ridge?"
    assert r.locality_prompt == ZSRE["loc"][13:].capitalize() + "?"
    assert r.locality_answer == "Hugo Weaving"
    assert r.ground_truth == "Illinois Institute of Technology"
    assert r.case_id == 0 and r.extra["pred"] == "Trinity College"


def test_counterfact_and_wiki_3k_round_trip(tmp_path):
    a, b = load_edits(write(tmp_path, [COUNTERFACT, WIKI_3K]))
    assert a == EditRequest("Reedy Glacier is in", "Asia", "Reedy Glacier",
                            COUNTERFACT["rephrase_prompt"], "Mount Erebus, in", "Antarctica",
                            "Antarctica", 1884, {})
    assert b.prompt == WIKI_3K["prompt"] and b.locality_answer == "Vitaly Ginzburg"
    assert b.case_id == 1 and b.ground_truth is None
    (c,) = load_edits(write(tmp_path, [WIKI_3K]), format="wikibigedit")
    assert c == b.__class__(**{**b.to_dict(), "case_id": 0})


def test_wikibigedit_upstream_fields(tmp_path):
    (r,) = load_edits(write(tmp_path, [WIKI_UPSTREAM]), format="wikibigedit")
    assert (r.prompt, r.target_new) == (WIKI_UPSTREAM["update"], WIKI_UPSTREAM["ans"])
    assert (r.rephrase_prompt, r.locality_prompt, r.locality_answer) == (
        WIKI_UPSTREAM["rephrase"], WIKI_UPSTREAM["loc"], WIKI_UPSTREAM["loc_ans"])
    assert r.extra["mhop_ans"] == "Stanford University"
    assert load_edits(write(tmp_path, [WIKI_UPSTREAM]))[0] == r  # auto-detected


def test_rome_round_trip(tmp_path):
    (r,) = load_edits(write(tmp_path, [ROME]))
    assert r.prompt == "The mother tongue of Danielle Darrieux is"
    assert (r.target_new, r.ground_truth, r.locality_answer) == ("English", "French", "French")
    assert r.rephrase_prompt == ROME["paraphrase_prompts"][0]
    assert r.locality_prompt == "The mother tongue of Léon Blum is"
    assert r.extra["neighborhood_prompts"] == ROME["neighborhood_prompts"]
    assert r.extra["attribute_prompts"] == ROME["attribute_prompts"]


def test_jsonl_and_wrapped_object(tmp_path):
    lines = tmp_path / "edits.jsonl"
    lines.write_text("\n".join(json.dumps(r) for r in [COUNTERFACT, WIKI_3K]) + "\n")
    assert len(load_edits(lines)) == 2
    wrapped = write(tmp_path, {"meta": {"x": 1}, "records": [COUNTERFACT]}, "wrapped.json")
    assert load_edits(wrapped)[0].case_id == 1884


def test_limit_and_seed(tmp_path):
    recs = [{**COUNTERFACT, "case_id": i} for i in range(20)]
    path = write(tmp_path, recs)
    assert [r.case_id for r in load_edits(path, limit=3)] == [0, 1, 2]
    a = [r.case_id for r in load_edits(path, limit=5, seed=7)]
    assert a == [r.case_id for r in load_edits(path, limit=5, seed=7)]
    assert a != [0, 1, 2, 3, 4] and len(set(a)) == 5
    with pytest.raises(ValueError, match="limit"):
        load_edits(path, limit=-1)


@pytest.mark.parametrize(
    "record, fmt, message",
    [
        ({k: v for k, v in ZSRE.items() if k != "alt"}, "zsre",
         r"record 1: field 'alt' is missing \(ZsRE MEND format expects subject, src, alt, "
         r"rephrase, loc, loc_ans\)"),
        ({**ZSRE, "src": ""}, "zsre", r"record 1: field 'src' must be a non-empty string"),
        ({**COUNTERFACT, "target_new": 3}, "counterfact",
         r"record 1: field 'target_new' must be a non-empty string, got 3"),
        ({k: v for k, v in COUNTERFACT.items() if k != "locality_prompt"}, "auto",
         r"record 1: field 'locality_prompt' is missing \(CounterFact"),
        ({**ROME, "requested_rewrite": {**ROME["requested_rewrite"], "prompt": "No placeholder"}},
         "rome", r"record 1: field 'requested_rewrite.prompt' has no '\{\}' placeholder"),
        ({**ROME, "requested_rewrite": {**ROME["requested_rewrite"], "target_new": {}}}, "rome",
         r"record 1: field 'requested_rewrite.target_new.str' is missing"),
        ({**ROME, "paraphrase_prompts": []}, "rome",
         r"record 1: field 'paraphrase_prompts' must be a non-empty list of strings"),
        ({"question": "?", "answer": "!"}, "auto", r"record 1: cannot tell the format"),
        (["not", "a", "dict"], "auto", r"record 1: expected a JSON object, got list"),
    ],
)
def test_malformed_records_name_index_and_field(tmp_path, record, fmt, message):
    good = {"zsre": ZSRE, "rome": ROME}.get(fmt, COUNTERFACT)
    with pytest.raises(ValueError, match=message):
        load_edits(write(tmp_path, [good, record]), format=fmt)


def test_bad_format_and_sources(tmp_path):
    with pytest.raises(ValueError, match="format must be one of"):
        parse_records([COUNTERFACT], format="mquake")
    with pytest.raises(ValueError, match="is not a file, a URL"):
        load_edits(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json\n")
    with pytest.raises(ValueError, match="line 1 is not JSON"):
        load_edits(bad)
    with pytest.raises(ValueError, match="'records' or 'data' list"):
        load_edits(write(tmp_path, {"meta": 1}, "obj.json"))


def test_edit_request_validates():
    with pytest.raises(ValueError, match="prompt must be a non-empty string"):
        EditRequest("  ", "Paris")
    with pytest.raises(ValueError, match="target_new must be a non-empty string"):
        EditRequest("The capital of France is", "")
    r = EditRequest("p", "t", case_id=3)
    assert json.loads(json.dumps(r.to_dict()))["case_id"] == 3


def test_url_source_error_is_clear():
    # port 9 (discard) on localhost: refused at once, no external network involved
    with pytest.raises(OSError, match="could not download edit records from http://127.0.0.1:9/"):
        read_records("http://127.0.0.1:9/edits.json")


def test_hub_source_error_is_clear(monkeypatch):
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True, raising=False)
    with pytest.raises(OSError, match="could not load the Hugging Face dataset 'someone/no-such"):
        read_records("hf:someone/no-such-edits")


# sha256 of json.dumps(records[:42], sort_keys=True, ensure_ascii=False): the first shipped
# version of the set, before it grew; chapters pick subsets of it by seed, so it must not change.
OLD_RECORDS_SHA256 = "9740683f79bbaa3cb6cf1f20fe3cbfd8555204cc909fe13dcf7a5919eaf75986"
FIELDS = ("relation", "subject", "prompt", "ground_truth", "target_new", "rephrase_prompt",
          "locality_prompt", "locality_ground_truth")
PROBS = ("p_ground_truth", "p_target_new", "p_rephrase_ground_truth", "p_rephrase_target_new",
         "p_locality")


def _shipped():
    return read_records("smollm2-counterfacts")


def _schema_problems(r):
    """Everything wrong with one shipped record (an empty list when it is well formed)."""
    bad = [f for f in ("case_id", *FIELDS, "base_model") if f not in r]
    bad += [f for f in FIELDS if f in r and (not isinstance(r[f], str) or not r[f].strip())]
    if bad:
        return bad
    if r["subject"].lower() not in r["prompt"].lower():
        bad.append("subject not in prompt")
    if r["target_new"].strip().lower() == r["ground_truth"].strip().lower():
        bad.append("target equals truth")
    if r["rephrase_prompt"] == r["prompt"] or r["locality_prompt"] == r["prompt"]:
        bad.append("paraphrase or neighbourhood prompt is the prompt")
    base = r["base_model"]
    if not all(isinstance(base.get(k), float) and 0 <= base[k] <= 1 for k in PROBS):
        bad.append("base_model probabilities")
    elif not base["p_ground_truth"] > base["p_target_new"]:
        bad.append("p(target_new) >= p(ground_truth)")
    if ("question" in r) != ("question_answer" in r):
        bad.append("question without question_answer or the reverse")
    elif "question" in r:
        q, a = r["question"], r["question_answer"]
        if not (isinstance(q, str) and q.strip().endswith("?") and isinstance(a, str) and a.strip()):
            bad.append("question must be a non-empty string ending in '?' with an answer")
        elif a != r["ground_truth"]:
            bad.append("question_answer differs from ground_truth")
    return bad


def test_builtin_edit_set_schema():
    records = _shipped()
    assert len(records) >= 100
    assert len({r["relation"] for r in records}) >= 10
    assert [r["case_id"] for r in records] == list(range(len(records)))
    problems = {r["case_id"]: _schema_problems(r) for r in records}
    assert not {k: v for k, v in problems.items() if v}
    # every record added after the first 42 has its question form
    assert all("question" in r for r in records[42:])
    # the checks catch a broken record
    good = records[-1]
    for broken in ({**good, "target_new": good["ground_truth"].upper()},
                   {**good, "subject": "Atlantis"}, {**good, "relation": " "},
                   {**good, "question": "no question mark"},
                   {k: v for k, v in good.items() if k != "question_answer"},
                   {**good, "base_model": {**good["base_model"], "p_target_new": 1.0}}):
        assert _schema_problems(broken)


def test_builtin_edit_set_keeps_the_first_42_records():
    old = _shipped()[:42]
    digest = hashlib.sha256(json.dumps(old, sort_keys=True, ensure_ascii=False).encode())
    assert digest.hexdigest() == OLD_RECORDS_SHA256
    assert old[0]["prompt"] == "The capital of France is" and old[41]["subject"] == "the Beatles"


def test_builtin_edit_set_set_rules():
    records = _shipped()
    # no locality prompt is itself edited, so a batch edit of the whole set cannot change it
    assert not {r["locality_prompt"] for r in records} & {r["prompt"] for r in records}
    # no counterfactual target is a true (or locality) answer anywhere in the set
    answers = {r[k].lower() for r in records for k in ("ground_truth", "locality_ground_truth")}
    assert not {r["target_new"].lower() for r in records} & answers
    assert len({r["prompt"] for r in records}) == len(records)


def test_builtin_edit_set_loads():
    requests = load_edits("smollm2-counterfacts")
    raw = _shipped()
    assert len(requests) == len(raw) >= 100
    assert {"smollm2-counterfacts", "smollm2-stream", "smollm2-mend-train"} <= set(BUILTIN_EDIT_SETS)
    for r, rec in zip(requests, raw):
        assert (r.prompt, r.target_new, r.ground_truth, r.locality_answer) == (
            rec["prompt"], rec["target_new"], rec["ground_truth"], rec["locality_ground_truth"])
        assert r.extra["relation"] == rec["relation"]
        assert r.extra.get("question") == rec.get("question")
        assert r.extra.get("question_answer") == rec.get("question_answer")
    assert len({r.case_id for r in requests}) == len(requests)
    a = load_edits("smollm2-counterfacts", limit=12, seed=0)
    assert [r.case_id for r in a] == [r.case_id for r in load_edits("smollm2-counterfacts",
                                                                      limit=12, seed=0)]
    assert len({r.case_id for r in a}) == 12


def _tools():
    import sys

    from tests.helpers import ROOT

    sys.path.insert(0, str(ROOT / "tools"))
    import edit_set_measure
    import verify_edit_set

    return edit_set_measure, verify_edit_set


def test_verify_edit_set_rules_without_a_model():
    measure, verify = _tools()
    assert measure.starts(" Hg.\n\nThe", "Hg") and not measure.starts(" Hg.", "H")
    assert measure.starts(" New York City is", "new york") and not measure.starts(" Paris", "Rome")
    assert measure.mentions("The capital of Japan is Tokyo.", "Tokyo")
    assert not measure.mentions("The capital is Tokyoite.", "Tokyo")
    r = {"case_id": 0, "relation": "capital", "prompt": "The capital of Japan is",
         "ground_truth": "Tokyo", "target_new": "Ankara", "rephrase_prompt": "x",
         "locality_prompt": "The capital of Norway is", "locality_ground_truth": "Oslo",
         "question": "What is the capital of Japan?", "question_answer": "Tokyo"}
    m = {"p_ground_truth": 0.7, "p_target_new": 0.01, "greedy_prompt": " Tokyo.",
         "greedy_rephrase": " Kyoto", "greedy_locality": " Oslo.", "question_known": True}
    assert verify.passes(r, m)
    assert not verify.passes(r, {**m, "greedy_prompt": " Kyoto."})
    assert not verify.passes(r, {**m, "greedy_locality": " Bergen"})
    assert not verify.passes(r, {**m, "p_target_new": 0.8})
    assert verify.set_problems([r]) == []
    clash = {**r, "case_id": 1, "prompt": "The capital of Norway is", "ground_truth": "Oslo",
             "target_new": "Tokyo", "locality_prompt": "The capital of Peru is"}
    problems = verify.set_problems([r, clash])
    assert any("locality prompt" in p for p in problems)
    assert any("'Tokyo' is a true answer" in p for p in problems)
    assert verify.set_problems([r, {**r, "prompt": "p"}]) == ["case ids are not unique"]
    table = verify.summary([r, {**r, "case_id": 1, "relation": "currency"}],
                           [m, {**m, "greedy_rephrase": " Tokyo", "p_ground_truth": 0.5}])
    assert table["capital"]["acc_rephrase"] == 0.0 and table["currency"]["acc_rephrase"] == 1.0
    assert table["all"]["records"] == 2 and table["all"]["acc_rephrase"] == 0.5
    assert abs(table["all"]["mean_p_true"] - 0.6) < 1e-12 and table["all"]["acc_question"] == 1.0


@pytest.mark.slow
def test_builtin_edit_set_measurements_reproduce():
    """Recorded base-model probabilities (tools/verify_edit_set.py) match a fresh measurement."""
    import torch

    from crispedit_lite.data.batches import tokenize_edits
    from crispedit_lite.models import load_model

    model, tok = load_model("smollm2-135m-instruct")
    requests = load_edits("smollm2-counterfacts")
    for field, prompt_of in [("p_ground_truth", lambda r: r.prompt),
                             ("p_locality", lambda r: r.locality_prompt)]:
        answers = [r.ground_truth if field == "p_ground_truth" else r.locality_answer
                   for r in requests]
        batch = tokenize_edits([(prompt_of(r), a) for r, a in zip(requests, answers)], tok)
        with torch.no_grad():
            logp = model(input_ids=batch["input_ids"],
                         attention_mask=batch["attention_mask"]).logits.log_softmax(-1)
        labels = batch["labels"][:, 1:]
        tok_logp = logp[:, :-1].gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        p = (tok_logp * (labels != -100)).sum(1).exp()
        recorded = torch.tensor([r.extra["base_model"][field] for r in requests])
        assert torch.allclose(p, recorded, atol=2e-3), (field, (p - recorded).abs().max())


def test_repeated_edits_are_found_by_prompt_and_target():
    from crispedit_lite.data.edits import drop_duplicates

    a, b = EditRequest("p", "x", case_id=0), EditRequest("q", "x", case_id=1)
    kept, dropped = drop_duplicates([a, b, EditRequest(" p ", "x", case_id=2), b, EditRequest("p", "y")])
    assert [r.case_id for r in kept] == [0, 1, None] and dropped == [(2, 0), (3, 1)]


def test_deeply_nested_json_is_a_clear_error(tmp_path):
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValueError, match="deep.json: JSON nested too deeply to be edit records"):
        load_edits(str(tmp_path / "deep.json"))
# --- the long-horizon stream (smollm2-stream, tools/make_edit_stream.py) --------------------------------


def _stream_records():
    return read_records("smollm2-stream")


def test_stream_is_large_complete_and_counterfactual():
    requests = load_edits("smollm2-stream")
    assert len(requests) >= 2000
    assert [r.case_id for r in requests] == list(range(len(requests)))
    for r, raw in zip(requests, _stream_records(), strict=True):
        assert r.rephrase_prompt and r.locality_prompt and r.locality_answer and r.ground_truth
        assert r.extra["relation"] in ("city country", "US city state")
        assert r.extra["known"] in (True, False)  # the base model's greedy answer starts with ground_truth
        if not r.extra["known"]:
            assert r.ground_truth == raw["answers"][0]
        answers = {a.lower().removeprefix("the ") for a in raw["answers"]}
        assert r.target_new.lower().removeprefix("the ") not in answers
        assert r.locality_answer != r.target_new
        assert r.extra["base_model"]["p_target_new"] <= r.extra["base_model"]["p_ground_truth"]  # 4 digits
    assert sum(r.extra["known"] for r in requests) > len(requests) / 2
    prompts = {r.prompt for r in requests}
    assert not prompts & {r.locality_prompt for r in requests}  # neighbours are never edited
    assert len({r.subject for r in requests}) == len(requests)  # one edit per subject


def test_stream_is_pinned_by_its_digest(monkeypatch):
    from crispedit_lite.data import edits
    from tests.helpers import ROOT

    path = ROOT / "crispedit_lite" / "resources" / "smollm2_stream.json"
    assert path.stat().st_size < 2_000_000
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["meta"]["records_sha256"] == edits.BUILTIN_DIGESTS["smollm2-stream"]
    assert edits.records_digest(data["records"]) == edits.BUILTIN_DIGESTS["smollm2-stream"]
    monkeypatch.setitem(edits.BUILTIN_DIGESTS, "smollm2-stream", "0" * 64)
    with pytest.raises(ValueError, match="is not the pinned"):
        read_records("smollm2-stream")


def _norm(subject: str) -> str:
    return subject.lower().removeprefix("the ")


def test_stream_subjects_are_disjoint_from_the_evaluation_set_and_from_mend_training():
    """No stream subject is edited by chapter 6's set, nor is a candidate fact (the pool of MEND's split)."""
    import sys

    from tests.helpers import ROOT

    sys.path.insert(0, str(ROOT / "tools"))
    from edit_candidates import RELATIONS

    stream = {_norm(r["subject"]) for r in _stream_records()}
    candidates = {_norm(s) for spec in RELATIONS.values() for s, _ in spec.facts}
    evaluation = {_norm(r["subject"]) for r in read_records("smollm2-counterfacts")}
    assert stream and not stream & candidates and not stream & evaluation
    if "smollm2-mend-train" in BUILTIN_EDIT_SETS:  # MEND's training split, where it ships
        assert not stream & {_norm(r["subject"]) for r in read_records("smollm2-mend-train")}
