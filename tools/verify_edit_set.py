r"""Measure the embedded model on the shipped edit set: does it know each fact before the edit.

For every record of ``crispedit_lite/resources/smollm2_counterfacts.json`` this prints the base
model's teacher-forced probability of the whole answer, :math:`\prod_t p(y_t \mid x, y_{<t})` with
``y = " " + answer``, for the true object (``ground_truth``) and the counterfactual (``target_new``)
after ``prompt``, of the true object after ``rephrase_prompt``, and of ``locality_ground_truth``
after ``locality_prompt``, plus the greedy continuations. A record passes when the greedy answer to
``prompt`` and to ``locality_prompt`` starts with the true answer and ``target_new`` is less likely
than ``ground_truth``.

    python tools/verify_edit_set.py            # print the table, exit 1 if a record fails
    python tools/verify_edit_set.py --write    # also store the measurements in the JSON (atomic)

Runs in about a minute on 2 CPU cores (after the one-off download of the model).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from importlib import resources
from pathlib import Path

import torch
import transformers

from crispedit_lite.models import EMBEDDED_MODELS, load_model

NAME = "smollm2-135m-instruct"
PATH = Path(str(resources.files("crispedit_lite") / "resources" / "smollm2_counterfacts.json"))


@torch.no_grad()
def answer_prob(model, tok, prompt: str, answer: str) -> float:
    """Teacher-forced probability of ``" " + answer`` after ``prompt`` (all answer tokens)."""
    p = tok(prompt)["input_ids"]
    a = tok(prompt + " " + answer.strip())["input_ids"][len(p):]
    logp = model(torch.tensor([p + a])).logits[0].float().log_softmax(-1)
    return float(sum(logp[len(p) - 1 + k, t] for k, t in enumerate(a)).exp())


@torch.no_grad()
def greedy(model, tok, prompt: str, n: int = 8) -> str:
    """Greedy continuation of ``prompt`` (``n`` new tokens, special tokens dropped)."""
    ids = tok(prompt, return_tensors="pt").input_ids
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n,
                         do_sample=False, pad_token_id=tok.pad_token_id)
    return tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


def starts(text: str, answer: str) -> bool:
    """Whether ``text`` begins with ``answer`` (case-insensitive, surrounding spaces ignored)."""
    return text.strip().lower().startswith(answer.strip().lower())


def measure(model, tok, r: dict) -> dict:
    """All base-model measurements of one record."""
    return {
        "p_ground_truth": answer_prob(model, tok, r["prompt"], r["ground_truth"]),
        "p_target_new": answer_prob(model, tok, r["prompt"], r["target_new"]),
        "p_rephrase_ground_truth": answer_prob(model, tok, r["rephrase_prompt"], r["ground_truth"]),
        "p_rephrase_target_new": answer_prob(model, tok, r["rephrase_prompt"], r["target_new"]),
        "p_locality": answer_prob(model, tok, r["locality_prompt"], r["locality_ground_truth"]),
        "greedy_prompt": greedy(model, tok, r["prompt"]),
        "greedy_rephrase": greedy(model, tok, r["rephrase_prompt"]),
        "greedy_locality": greedy(model, tok, r["locality_prompt"]),
    }


def passes(r: dict, m: dict) -> bool:
    """The selection rule: both facts known, and the counterfactual less likely than the truth."""
    return (starts(m["greedy_prompt"], r["ground_truth"])
            and starts(m["greedy_locality"], r["locality_ground_truth"])
            and m["p_target_new"] < m["p_ground_truth"])


def main(argv: list[str] | None = None) -> int:
    """Measure, print, optionally write; return 1 if a record fails the selection rule."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--path", type=Path, default=PATH)
    ap.add_argument("--write", action="store_true", help="store the measurements in the JSON")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    data = json.loads(args.path.read_text(encoding="utf-8"))
    model, tok = load_model(NAME, dtype=torch.float32)
    failed = 0
    print(f"{'id':>3} {'p_true':>6} {'p_new':>6} {'p_reph':>6} {'p_loc':>6} ok  "
          "prompt -> truth / new")
    for r in data["records"]:
        m = measure(model, tok, r)
        ok = passes(r, m)
        failed += not ok
        print(f"{r['case_id']:>3} {m['p_ground_truth']:6.3f} {m['p_target_new']:6.3f} "
              f"{m['p_rephrase_ground_truth']:6.3f} {m['p_locality']:6.3f} "
              f"{'yes' if ok else 'NO '} {r['prompt']!r} -> {r['ground_truth']!r} / "
              f"{r['target_new']!r}")
        if args.write:
            r["base_model"] = {k: round(v, 4) if isinstance(v, float) else v for k, v in m.items()}
    n = len(data["records"])
    print(f"{n - failed}/{n} records pass (greedy answers to prompt and locality prompt are right, "
          f"p(target_new) < p(ground_truth))")
    if args.write:
        data["meta"]["measured"] = {
            "model": NAME, "gguf_sha256": EMBEDDED_MODELS[NAME].gguf_sha256, "dtype": "float32",
            "torch": torch.__version__, "transformers": transformers.__version__,
            "command": "python tools/verify_edit_set.py --write",
        }
        fd, tmp = tempfile.mkstemp(dir=args.path.parent, suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, ensure_ascii=False)
            f.write("\n")
        os.replace(tmp, args.path)
        print(f"wrote {args.path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
