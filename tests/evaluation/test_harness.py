"""crispedit_lite.evaluation.harness: the paper's lm-eval tasks, metric extraction, errors, a real local task.

lm-eval is faked except in the slow test, which runs it on a local multiple-choice task in a subprocess
started at the repository root (so ``tests.helpers`` imports there).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from crispedit_lite.evaluation import (
    PAPER_TASKS,
    HarnessTask,
    extract_harness_metrics,
    harness_config,
    run_harness,
)
from crispedit_lite.evaluation import harness as harness_mod
from tests.helpers import ROOT, tiny_model


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
    rows = [{"question": f"capital of {c} ?", "choices": ["paris", "rome", "london"], "label": i % 3}
            for i, c in enumerate(["france", "italy", "england"] * 2)]
    (tmp_path / "data.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "tiny_mc.yaml").write_text(TASK_YAML.format(data=tmp_path / "data.jsonl"))
    script = textwrap.dedent(f"""
        import json
        from lm_eval.tasks import TaskManager
        from tests.helpers import CHAT_TEMPLATE, qa_tokenizer, tiny_model
        from crispedit_lite.evaluation import HarnessTask, run_harness
        tok = qa_tokenizer()
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
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=400)
    assert "SCORES:" in proc.stdout, proc.stderr[-3000:]
    scores = json.loads(proc.stdout.split("SCORES:")[1].splitlines()[0])["tiny_mc"]
    assert scores["metric"] == "acc_norm,none" and scores["num_fewshot"] == 2
    assert scores["score"] in (0.0, 25.0, 50.0, 75.0, 100.0)  # 4 examples
    assert "MESSAGE: capability task 'arc_challenge'" in proc.stdout, proc.stderr[-3000:]
    assert "offline mode is on" in proc.stdout
