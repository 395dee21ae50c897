"""Capability: perplexity and KL by hand, probe accuracy, lm-eval configuration and errors."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from test_evaluation_wild import constant_model, tiny_model, tiny_tokenizer

from crispedit_lite.evaluation import (
    PAPER_TASKS,
    HarnessTask,
    extract_harness_metrics,
    harness_config,
    kl_to_base,
    perplexity,
    probe_accuracy,
    run_harness,
    select_known_probes,
    token_logprobs,
)
from crispedit_lite.evaluation import harness as harness_mod

TEXTS = ["the capital of france is paris .", "rome is a city", "w1 w2 w3 w4 w5 w6 w7 w8 w9 w10 , london"]


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


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


# --- lm-eval harness ------------------------------------------------------------------------------

def test_harness_config_is_the_papers():
    cfgs = harness_config()
    assert [(c["tasks"][0], c["num_fewshot"]) for c in cfgs] == [
        ("mmlu", 5), ("gsm8k_cot", 8), ("ifeval", 0), ("arc_challenge", 25), ("truthfulqa_mc2", 0)]
    assert all(c["limit"] == 200 and c["apply_chat_template"] and c["fewshot_as_multiturn"] for c in cfgs)
    assert {c["tasks"][0]: c["batch_size"] for c in cfgs}["arc_challenge"] == 1
    plain = harness_config(["ifeval"], apply_chat_template=False, limit=None, batch_size=4)
    assert plain == [{"tasks": ["ifeval"], "num_fewshot": 0, "limit": None, "apply_chat_template": False,
                      "fewshot_as_multiturn": False, "batch_size": 4}]
    assert harness_config([HarnessTask("hellaswag", 10, "acc_norm,none")])[0]["num_fewshot"] == 10
    with pytest.raises(ValueError, match="unknown capability task 'mmlu_pro'"):
        harness_config(["mmlu_pro"])
    with pytest.raises(ValueError, match="limit"):
        harness_config(limit=0)


def fake_results():
    return {"results": {
        "mmlu": {"alias": "mmlu", "acc,none": 0.655, "acc_stderr,none": 0.01},
        "gsm8k_cot": {"exact_match,strict-match": 0.75, "exact_match_stderr,strict-match": 0.03,
                      "exact_match,flexible-extract": 0.78},
        "ifeval": {"prompt_level_strict_acc,none": 0.6, "inst_level_strict_acc,none": 0.693,
                   "inst_level_strict_acc_stderr,none": "N/A"},
        "arc_challenge": {"acc,none": 0.5, "acc_norm,none": 0.55},
        "truthfulqa_mc2": {"acc,none": 0.51},
    }}


def test_extract_harness_metrics():
    m = extract_harness_metrics(fake_results())
    assert {k: round(v["score"], 6) for k, v in m.items()} == {
        "mmlu": 65.5, "gsm8k_cot": 75.0, "ifeval": 69.3, "arc_challenge": 55.0, "truthfulqa_mc2": 51.0}
    assert m["mmlu"]["stderr"] == pytest.approx(1.0) and m["ifeval"]["stderr"] is None
    assert m["gsm8k_cot"]["all"]["exact_match,flexible-extract"] == 0.78
    assert {t.name for t in PAPER_TASKS} == set(m)
    broken = fake_results()
    del broken["results"]["arc_challenge"]["acc_norm,none"]
    with pytest.raises(ValueError, match=r"no metric 'acc_norm,none'; present: \['acc,none'\]"):
        extract_harness_metrics(broken)
    with pytest.raises(ValueError, match="no task 'ifeval'"):
        extract_harness_metrics({"results": {}}, ["ifeval"])


def test_run_harness_wraps_unreachable_data(monkeypatch, tok):
    calls = []

    class FakeHFLM:
        def __init__(self, **kwargs):
            calls.append(("hflm", kwargs))

    def fake_evaluate(**kwargs):
        calls.append(("eval", kwargs))
        try:
            raise FileNotFoundError("Dataset allenai/ai2_arc is not cached")
        except FileNotFoundError as e:
            raise ConnectionError("Couldn't reach 'allenai/ai2_arc' on the Hub (OfflineModeIsEnabled)") from e

    monkeypatch.setattr(harness_mod, "_lm_eval_api", lambda: (fake_evaluate, FakeHFLM))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(RuntimeError, match=r"task 'arc_challenge'.*offline mode is on.*HF_DATASETS_OFFLINE"):
        run_harness(tiny_model(0), tok, ["arc_challenge"], limit=2, task_manager=object())
    ev = calls[-1][1]
    assert ev["num_fewshot"] == 25 and ev["limit"] == 2 and ev["apply_chat_template"]
    assert ev["fewshot_as_multiturn"] and calls[0][1]["batch_size"] == 1


def test_run_harness_returns_scores(monkeypatch, tok):
    def fake_evaluate(**kwargs):
        assert kwargs["task_manager"] is tm
        name = kwargs["tasks"][0]
        return {"results": {name: fake_results()["results"][name]}}

    monkeypatch.setattr(harness_mod, "_lm_eval_api", lambda: (fake_evaluate, lambda **kw: object()))
    tm = object()  # a real TaskManager indexes every lm-eval task (tens of seconds)
    out = run_harness(tiny_model(0), tok, ["ifeval", "truthfulqa_mc2"], task_manager=tm)
    assert out["scores"]["ifeval"]["score"] == pytest.approx(69.3)
    assert out["settings"]["limit"] == 200 and set(out["raw"]) == {"ifeval", "truthfulqa_mc2"}


TASK_YAML = """task: tiny_mc
dataset_path: json
dataset_kwargs:
  data_files:
    train: {data}
    test: {data}
output_type: multiple_choice
training_split: train
test_split: test
doc_to_text: "q : {{{{question}}}} a :"
doc_to_target: "{{{{label}}}}"
doc_to_choice: "{{{{choices}}}}"
metric_list:
  - metric: acc
  - metric: acc_norm
metadata:
  version: 1.0
"""


@pytest.mark.slow
def test_real_lm_eval_local_task_and_offline_error(tmp_path):
    """lm-eval itself (about a minute): a local multiple-choice task runs end to end through HFLM with
    the chat template and multi-turn few-shot; offline, a hub task fails with a clear message."""
    root = Path(__file__).resolve().parents[1]
    rows = [{"question": f"capital of {c} ?", "choices": ["paris", "rome", "london"], "label": i % 3}
            for i, c in enumerate(["france", "italy", "england"] * 2)]
    (tmp_path / "data.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "tiny_mc.yaml").write_text(TASK_YAML.format(data=tmp_path / "data.jsonl"))
    script = textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, "tests")
        from lm_eval.tasks import TaskManager
        from test_evaluation_wild import CHAT_TEMPLATE, tiny_model, tiny_tokenizer
        from crispedit_lite.evaluation import HarnessTask, run_harness
        tok = tiny_tokenizer()
        tok.chat_template = CHAT_TEMPLATE
        tm = TaskManager(include_path={str(tmp_path / "tasks")!r}, include_defaults=False)
        out = run_harness(tiny_model(0), tok, [HarnessTask("tiny_mc", 2, "acc_norm,none", 2)], limit=4,
                          task_manager=tm)
        print("SCORES:", json.dumps(out["scores"]))
        try:
            run_harness(tiny_model(0), tok, ["arc_challenge"], limit=2)
        except RuntimeError as e:
            print("MESSAGE:", e)
    """)
    env = dict(os.environ, HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1",
               HF_DATASETS_CACHE=str(tmp_path / "hf_datasets"))
    proc = subprocess.run([sys.executable, "-c", script], cwd=root, env=env, capture_output=True, text=True,
                          timeout=400)
    assert "SCORES:" in proc.stdout, proc.stderr[-3000:]
    scores = json.loads(proc.stdout.split("SCORES:")[1].splitlines()[0])["tiny_mc"]
    assert scores["metric"] == "acc_norm,none" and scores["num_fewshot"] == 2
    assert scores["score"] in (0.0, 25.0, 50.0, 75.0, 100.0)  # 4 examples
    assert "MESSAGE: capability task 'arc_challenge'" in proc.stdout, proc.stderr[-3000:]
    assert "offline mode is on" in proc.stdout
