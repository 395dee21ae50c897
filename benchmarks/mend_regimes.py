r"""MEND on the embedded SmolLM2 in its two regimes, on the subsets of chapter 6's CPU Table 1.

The subsets are those of ``benchmarks/cpu_table1.py --n-edits 40 --seeds 0 1 2``: the bundled set
shuffled with ``random.Random(seed)``, the first ``--n-edits`` records. The editor is the shipped one
(``crispedit_lite/resources/mend_smollm2_135m.safetensors``, trained on subjects that no record here
edits).

* **single** (does MEND edit?): every record is edited on the *base* model alone (``edit`` with
  ``method="mend"`` and one request), evaluated (teacher-forced and probability families of that
  record; KL to the base model and perplexity on the first ``--single-proxy`` held-out capability
  texts, 2 by default, to keep 120 evaluations affordable on a CPU), then undone
  (``EditResult.restore``). The row is the mean over the records.
* **sequential** (the paper's protocol): the records are edited one at a time on the same model in
  ``mend_seq``'s order, nothing restored. After 1, 2, 5, 10, 20, ... edits the edits applied so far are
  evaluated (their reliability: how many earlier edits survive) with KL and perplexity: the collapse
  curve. ``--long N`` continues the same sequence with the training split's requests up to ``N`` edits,
  tracking the first subset's edits and the capability proxies.

Usage::

    python benchmarks/mend_regimes.py --n-edits 40 --seeds 0 1 2

Writes ``crispedit_lite/resources/results/mend-regimes-smollm2.json`` (package data) and prints a table.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from crispedit_lite.atomic import write_json_atomic
from crispedit_lite.data import load_edits
from crispedit_lite.editing import cpu_config, edit
from crispedit_lite.editing.loops.sequential import chunk_requests
from crispedit_lite.evaluation import default_proxy_texts, evaluate_run, token_logprobs
from crispedit_lite.models import load_model

RESULTS = Path(__file__).resolve().parents[1] / "crispedit_lite/resources/results"  # package data
OUT = RESULTS / "mend-regimes-smollm2.json"
EVALS = ("teacher_forced", "proxies")


FAMILIES, KEYS = (("tf", "teacher_forced"), ("prob", "probability")), ("rel", "gen", "loc")


def scores(ev: dict) -> dict:
    """TF / PROB rel-gen-loc, KL and perplexity of one evaluation."""
    s, p = ev["metrics"]["side_by_side"], ev["metrics"]["proxies"]
    out = {f"{fam}_{k}": s[name][k] for fam, name in FAMILIES for k in KEYS}
    return {**out, "kl": p["kl_to_base"], "ppl": p["perplexity"]}


def mean(rows: list[dict], keys) -> dict:
    """Mean of each key over the rows (None values skipped)."""
    out = {}
    for k in keys:
        vals = [r[k] for r in rows if r.get(k) is not None]
        out[k] = sum(vals) / len(vals) if vals else None
    return out


EDITOR = {"editor": "shipped"}


def config(seed: int):
    """MEND with the chosen editor file."""
    return cpu_config("mend", seed=seed, mend_editor=EDITOR["editor"])


def proxies(model, tok, texts, base_lp) -> dict:
    """KL to the base model and perplexity on ``texts`` from one forward pass (max 128 tokens per text)."""
    lp = token_logprobs(model, tok, texts, max_length=128)
    kl = sum(float((b.exp() * (b - x)).sum()) for b, x in zip(base_lp, lp)) / sum(len(x) for x in lp)
    nll, n = 0.0, 0
    for text, x in zip(texts, lp):
        ids = torch.tensor(list(tok(text).input_ids)[:128])
        nll -= float(x[:-1].gather(1, ids[1:, None]).sum())
        n += len(ids) - 1
    return {"kl": kl, "ppl": math.exp(nll / n)}


def single(model, tok, requests, seed, texts) -> dict:
    """Each record alone on the base model, evaluated (TF, PROB; KL and PPL on ``texts``), restored."""
    base_lp = token_logprobs(model, tok, texts, max_length=128)
    base = proxies(model, tok, texts, base_lp)
    rows = []
    for r in tqdm(requests, desc=f"single, subset {seed}", leave=False):
        res = edit(model, tok, [r], config(seed), progress=False)
        s = evaluate_run(model, tok, [r], ("teacher_forced",), progress=False)["metrics"]["side_by_side"]
        step = res.details["per_step"][0]
        fams = {f"{fam}_{k}": s[name][k] for fam, name in FAMILIES for k in KEYS}
        rows.append({"case_id": r.case_id, **fams,
                     **proxies(model, tok, texts, base_lp), "nll_before": step["nll_before"],
                     "nll_after": step["nll_after"], "delta_norm": sum(step["delta_norm"].values()),
                     "max_relative_weight_change": max(float((model.get_parameter(n).detach() - w).norm()
                                                             / w.norm()) for n, w in res.original.items())})
        res.restore(model)
    keys = [k for k in rows[0] if k != "case_id"]
    return {"proxy_texts": len(texts), "base_proxies": base, "mean": mean(rows, keys), "records": rows}


def sequential(model, tok, requests, base, proxy, seed, extra=(), marks=(1, 2, 5, 10, 20, 40)) -> dict:
    """The records one at a time in mend_seq's order, never restored; evaluated at the marks."""
    order = [c[0] for c in chunk_requests(list(requests), 1, seed)] + list(extra)
    marks = sorted({m for m in marks if m <= len(order)} | {len(requests), len(order)}
                   | set(range(2 * len(requests), len(order), len(requests))))  # every subset length on
    first = order[:len(requests)]
    curve, steps, t = [], [], time.perf_counter()
    w0 = {}
    for k, r in enumerate(tqdm(order, desc=f"sequential, subset {seed}", leave=False), 1):
        res = edit(model, tok, [r], config(seed), progress=False)
        w0 = w0 or {k: v.clone() for k, v in res.original.items()}  # the base weights of the edited matrices
        steps.append({"k": k, "case_id": r.case_id, **{x: res.details["per_step"][0][x]
                                                         for x in ("nll_before", "nll_after")}})
        if k in marks:
            so_far = first[:min(k, len(first))]
            ev = evaluate_run(model, tok, so_far, EVALS, base=base, proxy_texts=proxy, progress=False)
            change = {n: float((model.get_parameter(n).detach() - w).norm() / w.norm())
                      for n, w in w0.items()}
            curve.append({"edits_applied": k, "evaluated": len(so_far), **scores(ev),
                          "relative_weight_change": change,
                          "max_relative_weight_change": max(change.values()),
                          "seconds": round(time.perf_counter() - t, 1)})
    return {"order": [r.case_id for r in order], "curve": curve, "steps": steps}


def main(argv=None) -> int:
    """Both regimes on every subset; a table; the JSON (atomically, after every subset)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n-edits", type=int, default=40)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--n-proxy", type=int, default=8)
    ap.add_argument("--regimes", default="single,sequential")
    ap.add_argument("--single-proxy", type=int, default=2,
                    help="held-out texts for the KL and perplexity of each single edit (the first ones)")
    ap.add_argument("--long", type=int, default=0, help="continue subset 0's sequence to this many edits")
    ap.add_argument("--editor", default="shipped", help="a trained editor file (default: the shipped one)")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args(argv)
    argv = list(sys.argv[1:] if argv is None else argv)
    regimes = args.regimes.split(",")
    EDITOR["editor"] = args.editor
    torch.manual_seed(0)
    model, tok = load_model("smollm2-135m-instruct")
    proxy = default_proxy_texts(args.n_proxy, seed=0)
    pool = list(load_edits("smollm2-counterfacts"))
    train = [r for r in load_edits("smollm2-mend-train") if r.extra["split"] == "train"]
    record = {"command": "python benchmarks/mend_regimes.py " + " ".join(argv),
              "model": "smollm2-135m-instruct",
              "editor": args.editor, "n_edits": args.n_edits, "seeds": args.seeds, "n_proxy": args.n_proxy,
              "subsets": {}, "threads": torch.get_num_threads()}
    started = time.time()
    for seed in args.seeds:
        requests = list(pool)
        random.Random(seed).shuffle(requests)  # cpu_table1's subsets
        requests = requests[:args.n_edits]
        base = evaluate_run(model, tok, requests, EVALS, proxy_texts=proxy, progress=False)
        sub = {"case_ids": [r.case_id for r in requests], "base": scores(base)}
        if "single" in regimes:
            sub["single"] = single(model, tok, requests, seed, proxy[:args.single_proxy])
        if "sequential" in regimes:
            pristine = {k: v.detach().clone() for k, v in model.state_dict().items()}
            extra = train[:max(0, args.long - len(requests))] if seed == args.seeds[0] else []
            sub["sequential"] = sequential(model, tok, requests, base, proxy, seed, extra)
            model.load_state_dict(pristine)
        record["subsets"][str(seed)] = sub
        record["wall_s"] = round(time.time() - started, 1)
        record["created"] = time.strftime("%Y-%m-%d %H:%M")
        write_json_atomic(args.out, record)
        b = sub["base"]
        print(f"subset {seed}: base TF {b['tf_rel']:.1f} PROB {b['prob_rel']:.1f} ppl {b['ppl']:.2f}")
        for regime in ("single", "sequential"):
            if regime not in sub:
                continue
            m = sub["single"]["mean"] if regime == "single" else next(
                c for c in sub["sequential"]["curve"] if c["edits_applied"] == len(requests))
            ref = sub["single"]["base_proxies"]["ppl"] if regime == "single" else b["ppl"]
            print(f"  {regime:10s} TF Rel {m['tf_rel']:5.1f} Gen {m['tf_gen']:5.1f} Spec {m['tf_loc']:5.1f} "
                  f"PROB Rel {m['prob_rel']:5.1f} Gen {m['prob_gen']:5.1f} Loc {m['prob_loc']:5.1f} | "
                  f"KL {m['kl']:.4f} dPPL {100 * (m['ppl'] / ref - 1):+.2f}%", flush=True)
        if "sequential" in sub:
            for c in sub["sequential"]["curve"]:
                print(f"    after {c['edits_applied']:4d} edits: TF Rel of the first {c['evaluated']:3d} "
                      f"{c['tf_rel']:5.1f}, PROB Rel {c['prob_rel']:5.1f}, KL {c['kl']:.4f}, "
                      f"dPPL {100 * (c['ppl'] / b['ppl'] - 1):+.2f}%, "
                      f"max |W - W0| / |W0| {c['max_relative_weight_change']:.3f}", flush=True)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
