r"""Chapter 6's two CrispEdit sweeps on the embedded SmolLM2: the energy threshold and the capability size.

* **gamma** (cf. the paper's Table 8): CrispEdit at each ``--gammas`` value, ``n = --n-capability``;
* **n** (cf. Table 7): CrispEdit on the first ``n`` capability texts for each ``--n-caps``, at
  ``gamma = --gamma``; ``n = 0`` is FT (nothing protected), run once with the same settings.

Every run edits the chapter's edits (the first ``--n-edits`` records of the bundled set) from the same
base weights, trains to the paper's rule (epoch loss < 0.01, capped at ``--epochs``) with the chapter's
learning rate and batch size, and is scored with teacher-forced accuracy and the capability proxies (KL
to the base model, perplexity on held-out text). The defaults are the chapter's parameters, so the
chapter can plot this JSON beside its live comparison.

Usage (about five minutes on 2 cores)::

    python benchmarks/ch06_sweeps.py

Writes ``crispedit_lite/resources/results/ch06-sweeps-smollm2.json`` atomically (package data:
the chapter reads it wherever it runs).
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
from crispedit_lite.editing import cpu_config
from crispedit_lite.evaluation import default_proxy_texts, evaluate_run
from crispedit_lite.models import load_model
from crispedit_lite.teaching.sweeps import run_sweeps

RESULTS = Path(__file__).resolve().parents[1] / "crispedit_lite/resources/results"  # package data
OUT = RESULTS / "ch06-sweeps-smollm2.json"


def main(argv: list[str] | None = None) -> int:
    """Run both sweeps; print them; write the JSON."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n-edits", type=int, default=12)
    ap.add_argument("--gamma", type=float, default=0.7)
    ap.add_argument("--gammas", type=float, nargs="+", default=[0.5, 0.7, 0.9, 0.99])
    ap.add_argument("--n-capability", type=int, default=32)
    ap.add_argument("--n-caps", type=int, nargs="+", default=[2, 8, 32])
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--n-proxy", type=int, default=8)
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args(argv)
    argv = list(sys.argv[1:] if argv is None else argv)
    started = time.time()
    model, tok = load_model("smollm2-135m-instruct")
    requests = list(load_edits("smollm2-counterfacts"))[:args.n_edits]
    proxy = default_proxy_texts(args.n_proxy, seed=0)
    base = evaluate_run(model, tok, requests, ("teacher_forced", "proxies"), proxy_texts=proxy,
                        proxy_max_length=128, progress=False)

    def config(method: str, **changes):
        kw = dict(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, gamma=args.gamma,
                  n_capability=args.n_capability, capability_max_length=128, capability_source="offline",
                  kfac_labels="true", eigh_dtype="float32", seed=0)
        return cpu_config(method, **{**kw, **changes})

    rows = run_sweeps(model, tok, requests, config=config, base=base, proxy_texts=proxy,
                      capability=lambda n: capability_texts("offline", n, seed=0), gamma=args.gamma,
                      n_capability=args.n_capability, gammas=args.gammas, n_caps=args.n_caps)
    for r in rows:
        print(f"{r['sweep']}={r['value']}: TF Rel {r['TF Rel']:.1f} KL {r['KL']:.5f} "
              f"editable {r['editable %']:.2f} % loss {r['final loss']:.4f} "
              f"({r['steps']} steps, {r['seconds']} s)")
    record = {"command": "python benchmarks/ch06_sweeps.py " + " ".join(argv),
              "model": "smollm2-135m-instruct", "edit_set": "smollm2-counterfacts",
              "n_edits": args.n_edits, "gamma": args.gamma, "gammas": args.gammas,
              "n_capability": args.n_capability, "n_caps": args.n_caps, "epochs": args.epochs,
              "batch_size": args.batch_size, "lr": args.lr, "n_proxy": args.n_proxy,
              "capability_max_length": 128, "kfac_labels": "true", "eigh_dtype": "float32", "seed": 0,
              "base": {"TF Rel": base["metrics"]["teacher_forced"]["scores"]["rel"],
                       "PPL": float(base["metrics"]["proxies"]["perplexity"])},
              "rows": rows, "wall_s": round(time.time() - started, 1),
              "threads": torch.get_num_threads(), "created": time.strftime("%Y-%m-%d %H:%M")}
    print(f"wrote {write_json_atomic(args.out, record)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
