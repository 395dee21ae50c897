"""Write the training split of MEND's editor network on SmolLM2: counterfactual edits on held-out subjects.

The edit set that chapters 6-8 evaluate (``smollm2-counterfacts``, 194 records) is built from the
candidate facts of ``tools/edit_candidates.py``. This script takes every candidate fact whose subject
is **not** the subject of an evaluation record and is not named in any evaluation locality prompt,
and writes ``--per-fact`` counterfactual requests per fact:

* prompt and paraphrase: two different templates of the relation (``prompt``, ``rephrase`` and the
  ``more`` cloze templates, minus the misdescribing ones of ``EXCLUDE``), drawn at random;
* target: a random object of the relation's counterfactual pool that is not one of the fact's answers;
* locality: the main prompt and true answer of another fact of the same part (another subject).

Subjects are split into ``train`` and ``val`` parts (``--val-fraction`` of the subjects). Unlike the
evaluation set, these facts are not filtered by what SmolLM2 knows (MEND's training edits need not be
known facts; ZsRE's are not). The records, the seed and a SHA-256 digest of the records go to
``crispedit_lite/resources/smollm2_mend_train.json`` (``load_edits("smollm2-mend-train")``).

Usage::

    python tools/mend_train_split.py            # seed 0, 4 requests per fact
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tools")]

from edit_candidates import EXCLUDE, RELATIONS  # noqa: E402

from crispedit_lite.data import read_records  # noqa: E402

OUT = ROOT / "crispedit_lite" / "resources" / "smollm2_mend_train.json"


def records_digest(records: list[dict]) -> str:
    """SHA-256 of the records as canonical JSON (sorted keys, UTF-8)."""
    text = json.dumps(records, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _sentence(text: str) -> str:
    """Capitalise the first letter (a prompt that starts with "the Louvre ...")."""
    return text[:1].upper() + text[1:]


def held_out_facts(eval_records: list[dict]) -> tuple[list[tuple[str, str, list[str]]], int]:
    """``[(relation, subject, answers)]`` whose subject no evaluation record edits or names in locality."""
    subjects = {r["subject"].lower() for r in eval_records}
    locality = [r.get("locality_prompt", "") for r in eval_records]
    facts, dropped = [], 0
    for rel, spec in RELATIONS.items():
        for subject, answers in spec.facts:
            named = any(re.search(r"\b" + re.escape(subject) + r"\b", loc, re.I) for loc in locality)
            if subject.lower() in subjects or named:
                dropped += 1
                continue
            facts.append((rel, subject, answers))
    return facts, dropped


def build(seed: int, per_fact: int, val_fraction: float) -> dict:
    """The split: ``{"meta", "records"}``."""
    rng = random.Random(seed)
    eval_records = read_records("smollm2-counterfacts")
    facts, dropped = held_out_facts(eval_records)
    subjects = sorted({s for _, s, _ in facts})
    rng.shuffle(subjects)
    val_subjects = set(subjects[: max(1, round(val_fraction * len(subjects)))])
    parts = {"train": [f for f in facts if f[1] not in val_subjects],
             "val": [f for f in facts if f[1] in val_subjects]}
    records = []
    for part, part_facts in parts.items():
        for rel, subject, answers in part_facts:
            spec = RELATIONS[rel]
            formatted = [t.format(subject) for t in (spec.prompt, spec.rephrase, *spec.more)]
            templates = [_sentence(t) for t in dict.fromkeys(formatted) if t not in EXCLUDE]
            taken = {a.lower() for a in answers}
            pool = [t for t in spec.targets if t.lower() not in taken]
            others = [f for f in part_facts if f[1] != subject]
            for target in rng.sample(pool, min(per_fact, len(pool))):
                prompt, paraphrase = rng.sample(templates, 2)
                loc_rel, loc_subject, loc_answers = rng.choice(others)
                records.append({
                    "case_id": f"mend-train-{len(records)}", "split": part, "relation": rel,
                    "subject": subject, "prompt": prompt, "rephrase_prompt": paraphrase,
                    "target_new": target, "ground_truth": answers[0], "answers": answers,
                    "locality_prompt": _sentence(RELATIONS[loc_rel].prompt.format(loc_subject)),
                    "locality_ground_truth": loc_answers[0]})
    counts = {p: sum(r["split"] == p for r in records) for p in parts}
    by_relation = {rel: sum(r["relation"] == rel for r in records) for rel in RELATIONS}
    meta = {
        "name": "smollm2-mend-train",
        "license": "Apache-2.0 (written by the crispedit-lite project)",
        "description": "Counterfactual edit requests for training MEND's editor network on SmolLM2. "
                       "Subjects are disjoint from the evaluation set smollm2-counterfacts (its edited "
                       "subjects and the subjects its locality prompts name); train and val parts have "
                       "disjoint subjects.",
        "fields": "case_id, split, relation, subject, prompt, rephrase_prompt, target_new, ground_truth, "
                  "answers, locality_prompt, locality_ground_truth",
        "seed": seed, "per_fact": per_fact, "val_fraction": val_fraction,
        "n_facts": len(facts), "n_candidate_facts_dropped": dropped,
        "n_subjects": {p: len({f[1] for f in fs}) for p, fs in parts.items()},
        "n_records": counts, "records_by_relation": by_relation,
        "records_sha256": records_digest(records),
        "command": f"python tools/mend_train_split.py --seed {seed} --per-fact {per_fact} "
                   f"--val-fraction {val_fraction}",
    }
    return {"meta": meta, "records": records}


def main(argv: list[str] | None = None) -> int:
    """Write the split (atomically) and print its size and digest."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--per-fact", type=int, default=4)
    ap.add_argument("--val-fraction", type=float, default=0.1)
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args(argv)
    split = build(args.seed, args.per_fact, args.val_fraction)
    out = Path(args.out)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(split, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(out)
    m = split["meta"]
    print(f"{m['n_records']} records from {m['n_facts']} facts ({m['n_candidate_facts_dropped']} dropped), "
          f"sha256 {m['records_sha256']} -> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
