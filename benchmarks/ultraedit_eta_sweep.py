r"""UltraEdit's step size on the embedded SmolLM2: the tables of the book page ``book/ultraedit.md``.

UltraEdit's pseudo-values scale with :math:`\eta\lVert\hat{\mathbf a}_t\rVert^2`, so the official
:math:`\eta=10^{-6}` (tuned on LLaMA-3-8B) need not carry over to a 576-wide model. This script runs
:func:`crispedit_lite.reproduction.experiment.run_experiment` (the function behind
``python -m crispedit_lite edit``) with ``cpu_config("ultraedit", ultra_lr=eta)`` for every
``--etas`` value on ``--n-edits`` edits (one turn of ``chunk_size`` 8), and for every ``--etas-long``
value on ``--n-edits-long`` edits (several turns, so that the lifelong statistics see more than one),
scored teacher-forced and with the capability proxies (KL to the base model, perplexity).

Usage (a few minutes on 2 cores)::

    python benchmarks/ultraedit_eta_sweep.py

Writes ``crispedit_lite/resources/results/ultraedit-eta-sweep-smollm2.json`` atomically, then the page's
tables,
``book/_generated/ultraedit_eta_sweep.md``, from that JSON with every other include of the book pages
(:func:`crispedit_lite.teaching.book_tables.write_all`; ``--tables-only`` rewrites them from the
committed JSON without editing).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "crispedit_lite" / "resources" / "results" / "ultraedit-eta-sweep-smollm2.json"


def one_run(eta: float, n_edits: int) -> dict:
    """One UltraEdit run at step size ``eta``: before/after teacher-forced scores, KL, perplexity."""
    from crispedit_lite.editing import cpu_config
    from crispedit_lite.reproduction.experiment import run_experiment

    with tempfile.TemporaryDirectory() as tmp:
        rec = run_experiment(
            cpu_config("ultraedit", ultra_lr=eta),
            n_edits=n_edits,
            evals=("teacher_forced", "proxies"),
            results_dir=tmp,
            progress=False,
            command=f"ultraedit_eta_sweep: eta={eta:g}, n_edits={n_edits}",
        )
    before, after = rec["metrics"]["before"], rec["metrics"]["after"]
    details = rec["edit"]["details"]
    return {
        "eta": eta,
        "n_edits": n_edits,
        "chunks": details["schedule"]["n_chunks"],
        "layers": len(rec["edit"]["modules"]),
        "key_rows": sum(c["n_rows"] for c in details["per_chunk"]),
        "before": {k: float(before["teacher_forced"]["scores"][k]) for k in ("rel", "gen", "spec")},
        "after": {k: float(after["teacher_forced"]["scores"][k]) for k in ("rel", "gen", "spec")},
        "kl": float(after["proxies"]["kl_to_base"]),
        "ppl_before": float(before["proxies"]["perplexity"]),
        "ppl": float(after["proxies"]["perplexity"]),
        "edit_s": round(float(rec["timings"].get("total_s", 0.0)), 2),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the sweeps (unless ``--tables-only``); write the JSON and the page's tables."""
    from crispedit_lite.reproduction.results import write_json_atomic
    from crispedit_lite.teaching.book_tables import write_all

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n-edits", type=int, default=8)
    ap.add_argument("--etas", type=float, nargs="+", default=[1e-6, 1e-5, 1e-4, 1e-3, 1e-2])
    ap.add_argument("--n-edits-long", type=int, default=40)
    ap.add_argument("--etas-long", type=float, nargs="+", default=[1e-6, 1e-5, 1e-4])
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--tables-only", action="store_true", help="only rewrite the tables from --out")
    args = ap.parse_args(argv)
    argv = list(sys.argv[1:] if argv is None else argv)
    if not args.tables_only:
        import torch
        from tqdm.auto import tqdm

        started = time.time()
        plan = [(e, args.n_edits) for e in args.etas] + [(e, args.n_edits_long) for e in args.etas_long]
        rows = []
        for eta, n in tqdm(plan, desc="UltraEdit runs"):
            rows.append(one_run(eta, n))
            r = rows[-1]
            print(
                f"eta={eta:g} n={n}: TF Rel {r['before']['rel']:.1f} -> {r['after']['rel']:.1f}, "
                f"KL {r['kl']:.2e}, PPL {r['ppl']:.2f}",
                flush=True,
            )
        record = {
            "command": " ".join(["python benchmarks/ultraedit_eta_sweep.py", *argv]).strip(),
            "model": "smollm2-135m-instruct",
            "edit_set": "smollm2-counterfacts",
            "preset": "cpu_config('ultraedit', ultra_lr=eta)",
            "rows": rows,
            "wall_s": round(time.time() - started, 1),
            "threads": torch.get_num_threads(),
            "created": time.strftime("%Y-%m-%d %H:%M"),
        }
        print(f"wrote {write_json_atomic(args.out, record)}")
    for path in write_all(ROOT):  # every include of the book pages, from the committed JSON
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
