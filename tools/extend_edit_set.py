r"""Grow the shipped edit set with facts the embedded model knows (``tools/edit_candidates.py``).

1. Screen every candidate fact: the greedy continuation (6 tokens) of its cloze prompt must start
   with one of its accepted answers (whole words); that answer becomes ``ground_truth``. A fact
   the first template misses is tried with the relation's other templates in turn.
2. Per relation, hold a few known facts out as neighbourhood (locality) prompts; the others become
   records. No record prompt is a locality prompt anywhere in the set.
3. Give each record a counterfactual ``target_new`` from the relation's pool that is no accepted
   answer of any known fact nor any answer of the kept records, then measure every candidate
   record with ``tools/verify_edit_set.py``'s measurements and keep those that pass its rule
   (greedy prompt and locality answers right, :math:`p(\text{new}) < p(\text{true})`).
4. Write the kept records after the first ``--keep`` records of the set (unchanged), ids
   continuing from there, atomically.

    python tools/extend_edit_set.py            # about ten minutes on one CPU core
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from edit_candidates import EXCLUDE, RELATIONS  # noqa: E402
from edit_set_measure import greedy_many, starts  # noqa: E402
from verify_edit_set import (  # noqa: E402
    NAME,
    PATH,
    atomic_json,
    measure_all,
    measured_meta,
    passes,
    stored,
)

from crispedit_lite.models import load_model  # noqa: E402


def cap(text: str) -> str:
    """Upper-case the first character (``"the Louvre is"`` -> ``"The Louvre is"``)."""
    return text[:1].upper() + text[1:]


def screen(model: Any, tok: Any, kept: list[dict]) -> dict[str, list[dict]]:
    """Known facts per relation: ``{"subject", "prompt", "rephrase", "answer", "aliases"}``.

    Template ``t`` of a relation (``prompt``, ``rephrase``, ``*more``) is tried only on the facts
    that no earlier template got right.
    """
    taken = {r["prompt"] for r in kept} | {r["locality_prompt"] for r in kept} | EXCLUDE
    old_targets = {r["target_new"].lower() for r in kept}
    found: dict[tuple[str, str], dict] = {}
    for rel, spec in RELATIONS.items():
        subjects = [s for s, _ in spec.facts]
        if len(set(subjects)) != len(subjects):
            raise ValueError(f"tools/edit_candidates.py: relation {rel!r} lists a subject twice")
    rounds = max(2 + len(spec.more) for spec in RELATIONS.values())
    for t in range(rounds):
        todo = []
        for rel, spec in RELATIONS.items():
            templates = [spec.prompt, spec.rephrase, *spec.more]
            if t >= len(templates):
                continue
            for s, answers in spec.facts:
                prompt = cap(templates[t].format(s))
                if (rel, s) not in found and prompt not in taken:
                    todo.append((rel, s, answers, prompt, spec.prompt if t == 1 else spec.rephrase))
        outs = greedy_many(model, tok, [x[3] for x in todo], n=6, progress=True)
        for (rel, s, answers, prompt, reph), g in zip(todo, outs, strict=True):
            hit = next((a for a in answers if starts(g, a)), None)
            if hit is not None and not {a.lower() for a in answers} & old_targets:
                found[rel, s] = {"subject": s, "prompt": prompt, "rephrase": cap(reph.format(s)),
                                 "answer": hit, "aliases": answers}
    return {rel: [found[rel, s] for s, _ in spec.facts if (rel, s) in found]
            for rel, spec in RELATIONS.items()}


def candidates(known: dict[str, list[dict]], kept: list[dict]) -> list[dict]:
    """Records (without measurements) for every relation with at least three known facts."""
    forbidden = {a.lower() for facts in known.values() for f in facts for a in f["aliases"]}
    forbidden |= {r[k].lower() for r in kept for k in ("ground_truth", "locality_ground_truth")}
    out = []
    for rel, facts in known.items():
        if len(facts) < 3:
            continue
        spec = RELATIONS[rel]
        k = max(1, min(4, len(facts) // 5))
        neighbours, subjects = facts[-k:], facts[:-k]
        pool = [t for t in spec.targets if t.lower() not in forbidden]
        if not pool:
            continue
        for j, f in enumerate(subjects):
            order = neighbours[j % k:] + neighbours[:j % k]
            loc = next((n for n in order if n["answer"] != f["answer"]), order[0])
            out.append({
                "relation": rel, "subject": f["subject"], "prompt": f["prompt"],
                "ground_truth": f["answer"], "target_new": pool[j % len(pool)],
                "rephrase_prompt": f["rephrase"],
                "locality_prompt": loc["prompt"], "locality_ground_truth": loc["answer"],
                "question": spec.question.format(f["subject"]), "question_answer": f["answer"],
            })
    return out


def main(argv: list[str] | None = None) -> int:
    """Screen, build, measure, keep the passing records, write the set."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--path", type=Path, default=PATH)
    ap.add_argument("--keep", type=int, default=42, help="leading records kept unchanged")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    data = json.loads(args.path.read_text(encoding="utf-8"))
    kept = data["records"][:args.keep]
    model, tok = load_model(NAME, dtype=torch.float32)
    known = screen(model, tok, kept)
    print({rel: len(f) for rel, f in known.items()})
    cands = candidates(known, kept)
    meas = measure_all(model, tok, cands, progress=True)
    new = []
    for c, m in zip(cands, meas, strict=True):
        if passes(c, m):
            new.append({"case_id": len(kept) + len(new), **c, "base_model": stored(m)})
        else:
            print("dropped:", c["prompt"], "->", repr(m["greedy_prompt"]), "/",
                  c["locality_prompt"], "->", repr(m["greedy_locality"]))
    data["records"] = kept + new
    meta = data["meta"]
    meta["fields"] = ("case_id, relation, subject, prompt, ground_truth, target_new, "
                      "rephrase_prompt, locality_prompt, locality_ground_truth, question, "
                      "question_answer, base_model (question and question_answer only from "
                      f"case_id {len(kept)} on)")
    meta["measured"] = {**measured_meta(), "command": "python tools/extend_edit_set.py"}
    atomic_json(args.path, data)
    rels = {r["relation"] for r in data["records"]}
    print(f"{len(cands)} candidates, {len(new)} kept; the set has {len(data['records'])} records "
          f"over {len(rels)} relations; wrote {args.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
