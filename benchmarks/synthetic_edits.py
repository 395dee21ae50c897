"""Write N synthetic counterfactual edits (CounterFact 3k format) for timing runs on random weights.

Random-weight models know no facts, so the content is irrelevant: only the token counts matter
(they are close to ZsRE/CounterFact prompts: 6-12 words, 1-3 word targets).

    python benchmarks/synthetic_edits.py 100 > edits.json
"""

import json
import random
import sys

FIRST = ["Ada", "Bruno", "Chiara", "Dmitri", "Elena", "Farid", "Greta", "Hiro", "Ines", "Jonas"]
LAST = ["Okafor", "Lindqvist", "Moreau", "Tanaka", "Silva", "Novak", "Haddad", "Kowalski"]
RELATIONS = [("{} was born in the city of", "{} is a native of", ["Lyon", "Osaka", "Porto", "Graz"]),
             ("The native language of {} is", "{} grew up speaking", ["Finnish", "Tamil", "Basque"]),
             ("{} works in the field of", "The profession of {} is", ["geology", "opera", "law"]),
             ("{} is a citizen of", "The nationality of {} is", ["Chile", "Ghana", "Norway"])]


def make(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        subject = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
        prompt, rephrase, targets = rng.choice(RELATIONS)
        out.append({"case_id": i, "subject": subject, "prompt": prompt.format(subject),
                    "target_new": rng.choice(targets), "ground_truth": "<|endoftext|>",
                    "rephrase_prompt": rephrase.format(subject),
                    "locality_prompt": "The capital of France is", "locality_ground_truth": "Paris"})
    return out


if __name__ == "__main__":
    print(json.dumps(make(int(sys.argv[1]) if len(sys.argv) > 1 else 100), indent=1))
