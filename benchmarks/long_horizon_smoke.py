"""A long-horizon smoke test at a real shape: a few chunks of CrispEdit-Seq through ``edit(..., carry=)``.

Each chunk is one call of :func:`crispedit_lite.editing.edit` that continues the same sequential run
(the ``carry`` dict holds the capability statistics and the K-FAC of the earlier chunks), as
``benchmarks/long_horizon.py`` streams thousands of edits. On randomly initialised weights only the
timings, the peak memory and the growth of ``carry`` mean anything. Prints one line per chunk and
writes a JSON:

    python benchmarks/long_horizon_smoke.py --model random:llama3-8b-shape --tokenizer DIR \\
        --data edits.json --chunks 3 --chunk-size 20 --device cuda --dtype bfloat16 --out smoke.json
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from crispedit_lite.atomic import write_json_atomic
from crispedit_lite.data.capability import capability_texts
from crispedit_lite.editing import edit, paper_config
from crispedit_lite.reproduction.experiment import load_for_experiment, load_requests


def _peak_gib(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    return round(torch.cuda.max_memory_allocated(device) / 2**30, 2)


def _carry_size(carry: dict) -> dict[str, int]:
    """Tensors held in ``carry`` (count and MiB), to see whether the state grows chunk by chunk."""
    tensors: list[torch.Tensor] = []

    def walk(x):
        if isinstance(x, torch.Tensor):
            tensors.append(x)
        elif isinstance(x, dict):
            for v in x.values():
                walk(v)
        elif isinstance(x, (list, tuple)):
            for v in x:
                walk(v)

    walk(carry)
    size = sum(t.numel() * t.element_size() for t in tensors)
    return {"tensors": len(tensors), "mib": round(size / 2**20, 3)}


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="random:llama3-8b-shape")
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--chunks", type=int, default=3)
    ap.add_argument("--chunk-size", type=int, default=20)
    ap.add_argument("--n-capability", type=int, default=30)
    ap.add_argument("--capability-max-length", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--layers", default=None, help="comma-separated (default: the paper's 19-23)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    dev = torch.device(args.device)
    changes = dict(n_capability=args.n_capability, capability_source="offline", chunk_size=args.chunk_size)
    for key in ("capability_max_length", "epochs"):
        if getattr(args, key) is not None:
            changes[key] = getattr(args, key)
    if args.layers:
        changes["layers"] = tuple(int(i) for i in args.layers.split(","))
    cfg = paper_config("crispedit_seq", "zsre", **changes)
    t = time.perf_counter()
    model, tok = load_for_experiment(args.model, args.tokenizer, args.device, args.dtype)
    load_s = time.perf_counter() - t
    requests = load_requests(args.data, n_edits=args.chunks * args.chunk_size)
    texts = list(capability_texts("offline", n=args.n_capability, seed=0))
    carry: dict = {}
    rows = []
    print(f"long-horizon smoke: {args.model}, {args.chunks} chunks of {args.chunk_size} edits, "
          f"crispedit_seq, load {load_s:.1f} s", flush=True)
    for k in range(args.chunks):
        chunk = requests[k * args.chunk_size:(k + 1) * args.chunk_size]
        if not chunk:
            break
        t = time.perf_counter()
        result = edit(model, tok, chunk, cfg, capability_texts=texts, carry=carry, progress=False)
        peak = _peak_gib(dev)
        logs = list(result.logs)
        row = {"chunk": k, "edits": len(chunk), "edit_s": round(time.perf_counter() - t, 2), "peak_gib": peak,
               "steps": sum(log.steps for log in logs) if logs else None,
               "final_loss": logs[-1].epoch_losses[-1] if logs and logs[-1].epoch_losses else None,
               "carry": _carry_size(carry)}
        rows.append(row)
        print(f"chunk {k}: {row['edit_s']} s, peak {peak} GiB, steps {row['steps']}, "
              f"final loss {row['final_loss']}, carry {row['carry']}", flush=True)
    write_json_atomic(args.out, {"command": "python benchmarks/long_horizon_smoke.py " + " ".join(argv),
                                 "model": args.model, "device": str(dev), "dtype": args.dtype,
                                 "config": cfg.to_dict(), "load_s": round(load_s, 2), "rows": rows,
                                 "note": "random-init weights: timings, memory and carry size only"},
                      sort_keys=True)
    print(f"wrote {args.out}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
