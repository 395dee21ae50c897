r"""Chapter 7's section 7.7 on SmolLM2: MEMIT in chunks, with and without the cache of earlier keys.

MEMIT-Chunked edits each chunk as a fresh batch of the model the earlier chunks left; MEMIT-Seq adds the
earlier chunks' keys to the protected statistics. Both edit the chapter's edits (the first
``--n-chunks * --chunk-size`` records of the bundled set, in the library's seeded chunk order) on
MEMIT's layers of the model's preset, with the covariance of the chapter's capability texts; after every
chunk every edit is scored teacher-forced and the KL to the base model is measured on held-out text
(:func:`crispedit_lite.teaching.chunk_scores.memit_chunk_runs`). The defaults are the chapter's
parameters, so the chapter reads this JSON instead of spending minutes of its build on the two runs.

Usage (about five minutes on 2 cores: 298 s with evaluation)::

    python benchmarks/ch07_memit_chunks.py

Writes ``crispedit_lite/resources/results/ch07-memit-chunks-smollm2.json`` atomically (package data: the
chapter reads it wherever it runs).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from crispedit_lite.atomic import write_json_atomic
from crispedit_lite.data import load_edits
from crispedit_lite.data.capability import capability_texts
from crispedit_lite.evaluation import token_logprobs
from crispedit_lite.evaluation.runner import default_proxy_texts
from crispedit_lite.models import load_model
from crispedit_lite.teaching.chunk_scores import memit_chunk_runs

RESULTS = Path(__file__).resolve().parents[1] / "crispedit_lite/resources/results"  # package data
OUT = RESULTS / "ch07-memit-chunks-smollm2.json"


def main(argv: list[str] | None = None) -> int:
    """Run both editors chunk by chunk; print the retention matrices; write the JSON."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n-chunks", type=int, default=3)
    ap.add_argument("--chunk-size", type=int, default=4)
    ap.add_argument("--n-capability", type=int, default=32)
    ap.add_argument("--capability-max-length", type=int, default=128)
    ap.add_argument("--n-proxy", type=int, default=6)
    ap.add_argument("--proxy-max-length", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args(argv)
    argv = list(sys.argv[1:] if argv is None else argv)
    started = time.time()
    torch.manual_seed(args.seed)
    model, tok = load_model("smollm2-135m-instruct")
    requests = load_edits("smollm2-counterfacts", limit=args.n_chunks * args.chunk_size, seed=args.seed)
    cap = capability_texts("offline", args.n_capability, seed=args.seed)
    proxy = default_proxy_texts(args.n_proxy, seed=args.seed)
    base_lp = token_logprobs(model, tok, proxy, max_length=args.proxy_max_length)
    runs = memit_chunk_runs(model, tok, requests, cap, chunk_size=args.chunk_size,
                            n_capability=args.n_capability, capability_max_length=args.capability_max_length,
                            seed=args.seed, proxy_texts=proxy, base_logprobs=base_lp,
                            proxy_max_length=args.proxy_max_length)
    for label, rel in runs["rel"].items():
        print(f"{label}: {runs['seconds'][label]:.0f} s; retention matrix "
              "(row: after chunk k, column: chunk j)")
        for row in rel:
            print("   ", [round(x, 1) for x in row])
        print("    KL to base per chunk:", [round(x, 5) for x in runs["kl"][label]])
    record = {"benchmark": "memit_chunks",
              "command": "python benchmarks/ch07_memit_chunks.py " + " ".join(argv),
              "model": "smollm2-135m-instruct", "edit_set": "smollm2-counterfacts", "seed": args.seed,
              "n_chunks": args.n_chunks, "chunk_size": args.chunk_size, "n_capability": args.n_capability,
              "capability_max_length": args.capability_max_length, "capability_source": "offline",
              "n_proxy": args.n_proxy, "proxy_max_length": args.proxy_max_length, **runs,
              "wall_s": round(time.time() - started, 1), "threads": torch.get_num_threads(),
              "created": time.strftime("%Y-%m-%d %H:%M")}
    print(f"wrote {write_json_atomic(args.out, record)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
