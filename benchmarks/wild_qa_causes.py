#!/usr/bin/env python
"""Why WILD reliability in the QA context is 0 on SmolLM2-135M-Instruct: each cause, counted.

For the unedited model (gold = the fact it knows, ``ground_truth``) and for a quick FT edit (25
epochs) of ``--n-edits`` bundled counterfactuals (a seeded subset; gold = ``target_new``), every Rel
/ Gen / Loc prompt is decoded once, greedily, in three inputs: the bare QA template (the paper's),
the QA template inside the chat template (the robust decoding's QA context) and the prompt alone (no
context). Decoding stops at the first stop string *after* the first non-blank character and the text
is kept raw, so both stop rules' answers are read off one continuation (greedy decoding is prefix-
deterministic): official = ``truncate_at_stop(raw)``, robust = ``truncate_at_stop(raw,
after_first_token=True)``.

Each bare-QA item falls in exactly one class:

* ``em``: the official answer is right (SQuAD exact match);
* ``eos_first``: the model ends at once (empty continuation);
* ``stop_first``: the continuation opens with a stop string (a newline, or a ``"."``), which the
  official rule cuts to ``""``;
* ``contains_not_em``: the answer holds the gold as a word but is longer than it;
* ``wrong``: a non-empty answer without the gold (for the edited model, ``wrong_old`` when it still
  gives the pre-edit object: the edit did not carry over to the template).

Next to it: what the robust stop rule recovers on the bare template, what the chat template recovers,
the same question without a context, and the ROME/MEMIT probability test P(gold) > P(other) on the
raw prompt and inside the QA template (does the edit carry over to the template without decoding?).

    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 .venv/bin/python benchmarks/wild_qa_causes.py   # ~1-2 CPU min
"""

from __future__ import annotations

import argparse
import copy
import datetime as _dt
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "crispedit_lite" / "resources" / "results"  # package data

from crispedit_lite.atomic import write_json_atomic  # noqa: E402
from crispedit_lite.data import load_edits  # noqa: E402
from crispedit_lite.editing import cpu_config, edit  # noqa: E402
from crispedit_lite.evaluation import (  # noqa: E402
    contains_match,
    exact_match,
    format_prompt,
    greedy_generate,
    probability_evaluate,
    target_token_accuracy,
    truncate_at_stop,
)
from crispedit_lite.models import load_model  # noqa: E402
from crispedit_lite.reproduction.results import environment_info  # noqa: E402

CLASSES = ("em", "eos_first", "stop_first", "contains_not_em", "wrong_old", "wrong")
INPUTS = {"qa_bare": ("qa", "official"), "qa_chat": ("qa", "robust"), "none": ("none", "official")}


def items_of(requests: list[Any], edited: bool) -> list[dict[str, Any]]:
    """(kind, question, gold, other) for Rel, Gen and Loc of every request."""
    out = []
    for r in requests:
        gold, other = (r.target_new, r.ground_truth) if edited else (r.ground_truth, r.target_new)
        out.append({"kind": "rel", "question": r.prompt, "gold": gold, "other": other})
        out.append({"kind": "gen", "question": r.rephrase_prompt, "gold": gold, "other": other})
        out.append({"kind": "loc", "question": r.locality_prompt, "gold": r.locality_answer, "other": None})
    return out


def classify(raw: str, gold: str, other: str | None) -> str:
    """The class of one bare-QA continuation (see the module docstring)."""
    official = truncate_at_stop(raw)
    if exact_match(official, gold):
        return "em"
    if raw == "":
        return "eos_first"
    if official == "":
        return "stop_first"
    if contains_match(official, gold):
        return "contains_not_em"
    if other and contains_match(official, other):
        return "wrong_old"
    return "wrong"


def decode_all(model: Any, tok: Any, items: list[dict[str, Any]], max_new_tokens: int) -> None:
    """Fill each item with the raw continuation and both stop rules' answers, per input."""
    for name, (context, decoding) in INPUTS.items():
        prompts = [format_prompt(it["question"], context, tok, decoding) for it in items]
        raws = greedy_generate(model, tok, prompts, max_new_tokens=max_new_tokens, batch_size=16,
                               stop_after_first_token=True, raw=True, progress=True)
        for it, raw in zip(items, raws):
            it[name] = {"raw": raw, "official": truncate_at_stop(raw),
                        "robust": truncate_at_stop(raw, after_first_token=True)}


def pct(values: list[float]) -> float | None:
    return round(100.0 * sum(values) / len(values), 1) if values else None


def summarise(items: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    """Counts of the classes and the recovery rates for one kind (rel / gen / loc)."""
    sel = [it for it in items if it["kind"] == kind]
    row: dict[str, Any] = {"n": len(sel)}
    for c in CLASSES:
        row[c] = sum(it["class"] == c for it in sel)

    def rate(name: str, rule: str, scorer: Any, subset: list[dict[str, Any]] | None = None
             ) -> float | None:
        return pct([scorer(it[name][rule], it["gold"]) for it in (sel if subset is None else subset)])

    row["qa_bare_official_em"] = rate("qa_bare", "official", exact_match)
    row["qa_bare_official_contains"] = rate("qa_bare", "official", contains_match)
    row["qa_bare_robust_contains"] = rate("qa_bare", "robust", contains_match)
    row["qa_chat_robust_em"] = rate("qa_chat", "robust", exact_match)
    row["qa_chat_robust_contains"] = rate("qa_chat", "robust", contains_match)
    row["none_official_contains"] = rate("none", "official", contains_match)
    row["none_robust_contains"] = rate("none", "robust", contains_match)
    for c in ("eos_first", "stop_first"):  # of the items lost to this cause, how many each fix recovers
        lost = [it for it in sel if it["class"] == c]
        row[f"{c}_recovered_by_stop_rule"] = rate("qa_bare", "robust", contains_match, lost)
        row[f"{c}_recovered_by_chat_template"] = rate("qa_chat", "robust", contains_match, lost)
    return row


def teacher_forced_rows(model: Any, tok: Any, requests: list[Any], edited: bool) -> dict[str, Any]:
    """Teacher-forced token accuracy (%) of the gold on the raw prompt and inside the bare QA template."""
    out = {}
    for context in ("none", "qa"):
        row = {}
        for kind, field in (("rel", "prompt"), ("gen", "rephrase_prompt"), ("loc", "locality_prompt")):
            gold = [r.locality_answer if kind == "loc" else (r.target_new if edited else r.ground_truth)
                    for r in requests]
            prompts = [format_prompt(getattr(r, field), context) for r in requests]
            row[kind] = pct(target_token_accuracy(model, tok, prompts, gold))
        out[context] = row
    return out


def probability_rows(model: Any, tok: Any, requests: list[Any], edited: bool) -> dict[str, Any]:
    """P(gold) > P(other) on the raw prompt and inside the bare QA template."""
    out = {}
    for context in ("none", "qa"):
        s = probability_evaluate(model, tok, requests, context=context)["scores"]
        if edited:  # the edit's test: P(new) > P(old); locality: P(true) > P(new)
            out[context] = {"rel": s["rel"], "gen": s["gen"], "loc": s["loc"]}
        else:  # the unedited model should prefer the old object: report P(old) > P(new)
            out[context] = {"rel": 100.0 - s["rel"], "gen": 100.0 - s["gen"], "loc": s["loc"]}
    return out


def print_table(result: dict[str, Any]) -> None:
    cols = ["n", *CLASSES, "qa_bare_official_em", "qa_bare_robust_contains", "qa_chat_robust_em",
            "qa_chat_robust_contains", "none_official_contains"]
    short = ["n", "em", "eos", "stop", "cont", "old", "wrong", "QA EM", "QA+stop", "chat EM",
             "chat cont", "none cont"]
    print("\nbare-QA items: n and classes (counts); rates (%) per input (cont = gold as a word)")
    print(f"{'model':8} {'kind':4} " + " ".join(f"{s:>9}" for s in short))
    for model_name, block in result["models"].items():
        for kind, row in block["wild"].items():
            vals = ["-" if row[c] is None else f"{row[c]:g}" for c in cols]
            print(f"{model_name:8} {kind:4} " + " ".join(f"{v:>9}" for v in vals))
    for key, title in (("probability", "probability test (%): P(gold) > P(other)"),
                       ("teacher_forced", "teacher-forced token accuracy (%) of the gold")):
        print(f"\n{title}, on the raw prompt / in the bare QA template")
        for model_name, block in result["models"].items():
            p = block[key]
            cells = [f"{k}: {p['none'][k]:.1f} / {p['qa'][k]:.1f}" for k in ("rel", "gen", "loc")]
            print(f"{model_name:8} " + "  ".join(cells))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n-edits", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0, help="seeded subset of the bundled edits")
    ap.add_argument("--epochs", type=int, default=25, help="FT epochs (paper: 25, early stop 0.01)")
    ap.add_argument("--out", default=str(RESULTS / "wild-qa-causes-smollm2.json"))
    args = ap.parse_args()
    t0 = time.perf_counter()
    model, tok = load_model("smollm2-135m-instruct")
    requests = load_edits("smollm2-counterfacts", limit=args.n_edits, seed=args.seed)
    config = cpu_config("ft", epochs=args.epochs)  # 8 epochs leave the 8-edit loss at ~2.6
    timings: dict[str, float] = {}
    result: dict[str, Any] = {
        "what": "WILD QA-context zero on SmolLM2-135M-Instruct, by cause",
        "settings": {"model": "smollm2-135m-instruct", "edits": "smollm2-counterfacts",
                     "n_edits": len(requests), "case_ids": [r.case_id for r in requests],
                     "edit_config": config.to_dict(), "max_new_tokens": args.max_new_tokens,
                     "inputs": {k: {"context": c, "decoding": d} for k, (c, d) in INPUTS.items()},
                     "classes": list(CLASSES)},
        "models": {},
    }
    edited_model = copy.deepcopy(model)
    t = time.perf_counter()
    res = edit(edited_model, tok, requests, config, progress=True)
    timings["edit_s"] = time.perf_counter() - t
    result["edit"] = {k: v for k, v in res.to_dict().items() if k in ("modules", "train", "timings")}
    for name, net, edited in (("base", model, False), ("ft_edit", edited_model, True)):
        t = time.perf_counter()
        items = items_of(requests, edited)
        decode_all(net, tok, items, args.max_new_tokens)
        for it in items:
            it["class"] = classify(it["qa_bare"]["raw"], it["gold"], it["other"])
        result["models"][name] = {
            "gold": "target_new" if edited else "ground_truth",
            "wild": {k: summarise(items, k) for k in ("rel", "gen", "loc")},
            "probability": probability_rows(net, tok, requests, edited),
            "teacher_forced": teacher_forced_rows(net, tok, requests, edited),
            "items": items,
        }
        timings[f"{name}_eval_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t0
    result["timings"] = {k: round(v, 1) for k, v in timings.items()}
    result["environment"] = environment_info("cpu")
    result["date"] = _dt.date.today().isoformat()
    print_table(result)
    print(f"\ntimings: {result['timings']}")
    write_json_atomic(Path(args.out), result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
