r"""Measure the embedded model on the shipped edit set: does it know each fact before the edit.

For every record of ``crispedit_lite/resources/smollm2_counterfacts.json`` this measures the base
model's teacher-forced probability of the whole answer, :math:`\prod_t p(y_t \mid x, y_{<t})` with
``y = " " + answer``, for the true object (``ground_truth``) and the counterfactual (``target_new``)
after ``prompt`` and after ``rephrase_prompt``, and of ``locality_ground_truth`` after
``locality_prompt``, plus the greedy continuations (8 tokens). Records with a ``question`` (the
QA form of the prompt) also get the greedy answer to it, asked through the chat template (20
tokens), and whether that answer mentions ``question_answer``.

A record passes when the greedy continuations of ``prompt`` and of ``locality_prompt`` start with
the true answers (whole words) and ``target_new`` is less likely than ``ground_truth``. The set
passes when every record does, and: case ids are unique, no ``locality_prompt`` is the ``prompt``
of a record (a batch edit of the whole set cannot legitimately change a locality answer), and no
``target_new`` is the true answer or locality answer of any record.

    python tools/verify_edit_set.py            # table + per-relation summary + JSON report
    python tools/verify_edit_set.py --write    # also store measurements in records lacking them
    python tools/verify_edit_set.py --refresh  # overwrite every stored measurement (atomic)

The report (``smollm2_counterfacts_report.json`` beside the set) holds the per-relation summary,
the failing records and the largest gap between stored and fresh probabilities. About five
minutes on one CPU core once the model is cached; exit status 1 if a check fails.
The question check is strict: the answer must appear verbatim ("German" does not count for
"Germany").
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from importlib import resources
from pathlib import Path
from typing import Any

import torch
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parent))
from edit_set_measure import answer_probs, chat_prompt, greedy_many, mentions, starts  # noqa: E402

from crispedit_lite.atomic import write_json_atomic  # noqa: E402
from crispedit_lite.models import EMBEDDED_MODELS, load_model  # noqa: E402

NAME = "smollm2-135m-instruct"
RES = Path(str(resources.files("crispedit_lite") / "resources"))
PATH = RES / "smollm2_counterfacts.json"
REPORT = RES / "smollm2_counterfacts_report.json"
PROBS = ("p_ground_truth", "p_target_new", "p_rephrase_ground_truth", "p_rephrase_target_new",
         "p_locality")


def measure_all(model: Any, tok: Any, records: list[dict], progress: bool = True) -> list[dict]:
    """All base-model measurements of every record (batched; see the module docstring)."""
    pairs = {
        "p_ground_truth": [(r["prompt"], r["ground_truth"]) for r in records],
        "p_target_new": [(r["prompt"], r["target_new"]) for r in records],
        "p_rephrase_ground_truth": [(r["rephrase_prompt"], r["ground_truth"]) for r in records],
        "p_rephrase_target_new": [(r["rephrase_prompt"], r["target_new"]) for r in records],
        "p_locality": [(r["locality_prompt"], r["locality_ground_truth"]) for r in records],
    }
    flat = [p for k in PROBS for p in pairs[k]]
    probs = answer_probs(model, tok, flat, progress=progress)
    n = len(records)
    out: list[dict] = [{k: probs[j * n + i] for j, k in enumerate(PROBS)} for i in range(n)]
    for key, field in [("greedy_prompt", "prompt"), ("greedy_rephrase", "rephrase_prompt"),
                       ("greedy_locality", "locality_prompt")]:
        for m, g in zip(out, greedy_many(model, tok, [r[field] for r in records],
                                         progress=progress), strict=True):
            m[key] = g
    asked = [i for i, r in enumerate(records) if r.get("question")]
    answers = greedy_many(model, tok, [chat_prompt(tok, records[i]["question"]) for i in asked],
                          n=20, progress=progress)
    for i, g in zip(asked, answers, strict=True):
        out[i]["greedy_question"] = g
        out[i]["question_known"] = mentions(g, records[i]["question_answer"])
    return out


def passes(r: dict, m: dict) -> bool:
    """The selection rule: both facts known, and the counterfactual less likely than the truth."""
    return (starts(m["greedy_prompt"], r["ground_truth"])
            and starts(m["greedy_locality"], r["locality_ground_truth"])
            and m["p_target_new"] < m["p_ground_truth"])


def set_problems(records: list[dict]) -> list[str]:
    """Set-wide rules (ids, locality prompts never edited, targets never a true answer)."""
    problems = []
    ids = [r["case_id"] for r in records]
    if len(set(ids)) != len(ids):
        problems.append("case ids are not unique")
    prompts = {r["prompt"] for r in records}
    answers = {a.lower() for r in records for a in (r["ground_truth"], r["locality_ground_truth"])}
    for r in records:
        if r["locality_prompt"] in prompts:
            problems.append(f"record {r['case_id']}: locality prompt {r['locality_prompt']!r} is "
                            f"edited by another record")
        if r["target_new"].lower() in answers:
            problems.append(f"record {r['case_id']}: target {r['target_new']!r} is a true answer "
                            f"elsewhere in the set")
    return problems


def summary(records: list[dict], meas: list[dict]) -> dict[str, dict[str, Any]]:
    """Per relation: records, greedy accuracies and mean probabilities.

    Accuracy on prompt / paraphrase / neighbourhood (greedy continuation starts with the answer),
    on the question (chat answer mentions it), and mean p(true) and p(new) after the prompt.
    """
    groups: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        groups[r["relation"]].append(i)
    groups["all"] = list(range(len(records)))
    table = {}
    for rel, idx in groups.items():
        q = [meas[i]["question_known"] for i in idx if "question_known" in meas[i]]
        table[rel] = {
            "records": len(idx),
            "acc_prompt": sum(starts(meas[i]["greedy_prompt"], records[i]["ground_truth"])
                              for i in idx) / len(idx),
            "acc_rephrase": sum(starts(meas[i]["greedy_rephrase"], records[i]["ground_truth"])
                                for i in idx) / len(idx),
            "acc_locality": sum(starts(meas[i]["greedy_locality"],
                                       records[i]["locality_ground_truth"]) for i in idx) / len(idx),
            "with_question": len(q),
            "acc_question": sum(q) / len(q) if q else None,
            "mean_p_true": sum(meas[i]["p_ground_truth"] for i in idx) / len(idx),
            "mean_p_new": sum(meas[i]["p_target_new"] for i in idx) / len(idx),
        }
    return table


def print_summary(table: dict[str, dict[str, Any]]) -> None:
    """Print the per-relation summary table."""
    print(f"{'relation':<20} {'n':>4} {'prompt':>7} {'reph':>6} {'neigh':>6} {'nq':>4} "
          f"{'QA':>5} {'P(true)':>8} {'P(new)':>8}")
    for rel, s in table.items():
        print(f"{rel:<20} {s['records']:>4} {s['acc_prompt']:7.2f} {s['acc_rephrase']:6.2f} "
              f"{s['acc_locality']:6.2f} {s['with_question']:>4} "
              f"{'-' if s['acc_question'] is None else format(s['acc_question'], '.2f'):>5} "
              f"{s['mean_p_true']:8.4f} {s['mean_p_new']:8.4f}")


def stored(m: dict) -> dict:
    """Measurements as stored in a record (probabilities rounded to 4 decimals)."""
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in m.items()}


def atomic_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented UTF-8 JSON to ``path`` atomically (``crispedit_lite.atomic``)."""
    write_json_atomic(path, obj, ensure_ascii=False)


def measured_meta() -> dict[str, str]:
    """Model digest, dtype and library versions of a measurement."""
    return {"model": NAME, "gguf_sha256": EMBEDDED_MODELS[NAME].gguf_sha256, "dtype": "float32",
            "torch": torch.__version__, "transformers": transformers.__version__,
            "command": "python tools/verify_edit_set.py --write"}


def main(argv: list[str] | None = None) -> int:
    """Measure, print, report, optionally write; return 1 if a check fails."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--path", type=Path, default=PATH)
    ap.add_argument("--report", type=Path, default=REPORT)
    ap.add_argument("--write", action="store_true", help="measure records that have no base_model")
    ap.add_argument("--refresh", action="store_true", help="overwrite every base_model")
    ap.add_argument("--quiet", action="store_true", help="no per-record lines, no progress bars")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    data = json.loads(args.path.read_text(encoding="utf-8"))
    records = data["records"]
    model, tok = load_model(NAME, dtype=torch.float32)
    meas = measure_all(model, tok, records, progress=not args.quiet)
    failed = [r["case_id"] for r, m in zip(records, meas) if not passes(r, m)]
    gap = max((abs(r["base_model"][k] - m[k]) for r, m in zip(records, meas)
               if "base_model" in r for k in PROBS), default=None)
    if not args.quiet:
        print(f"{'id':>3} {'p_true':>6} {'p_new':>6} {'p_reph':>6} {'p_loc':>6} ok  QA  "
              "prompt -> truth / new")
        for r, m in zip(records, meas):
            qa = {True: "yes", False: "no ", None: " - "}[m.get("question_known")]
            print(f"{r['case_id']:>3} {m['p_ground_truth']:6.3f} {m['p_target_new']:6.3f} "
                  f"{m['p_rephrase_ground_truth']:6.3f} {m['p_locality']:6.3f} "
                  f"{'NO ' if r['case_id'] in failed else 'yes'} {qa} {r['prompt']!r} -> "
                  f"{r['ground_truth']!r} / {r['target_new']!r}")
    table = summary(records, meas)
    print_summary(table)
    problems = set_problems(records)
    for p in problems:
        print("set rule:", p)
    n = len(records)
    print(f"{n - len(failed)}/{n} records pass (greedy answers to prompt and locality prompt are "
          f"right, p(target_new) < p(ground_truth)); {len(problems)} set-rule problems; largest "
          f"|stored - fresh| probability {gap if gap is None else format(gap, '.2e')}")
    atomic_json(args.report, {
        "set": args.path.name, "records": n, "passed": n - len(failed), "failed": failed,
        "set_problems": problems, "max_stored_vs_fresh": gap, "measured": measured_meta(),
        "per_relation": {k: {kk: round(v, 4) if isinstance(v, float) else v
                             for kk, v in s.items()} for k, s in table.items()},
    })
    print(f"wrote {args.report}")
    if args.write or args.refresh:
        for r, m in zip(records, meas):
            if args.refresh or "base_model" not in r:
                r["base_model"] = stored(m)
        data["meta"]["measured"] = measured_meta()
        atomic_json(args.path, data)
        print(f"wrote {args.path}")
    return 1 if failed or problems else 0


if __name__ == "__main__":
    sys.exit(main())
