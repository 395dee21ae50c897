r"""How much this library's closed-form runs depart from the official code, measured on the embedded SmolLM2.

Three measurements, one JSON:

* **covariance**: the relative Frobenius gap :math:`\lVert C - A\rVert_F/\lVert A\rVert_F` between
  MEMIT's every-token covariance :math:`C` (``cf_covariance="every_token"``) and the K-FAC input
  factor :math:`A` (each text's last token left out) on identical texts, per closed-form layer, for
  several text lengths;
* **templates**: MEMIT's weight change with greedy context templates against top-5 sampled ones
  (two seeds): :math:`\lVert\Delta_a-\Delta_b\rVert_F/\lVert\Delta_b\rVert_F` per pair, and the
  teacher-forced reliability of each;
* **precision**: the fraction of one update that adding it to bfloat16 or float16 weights loses to
  rounding (:func:`crispedit_lite.editing.precision.rounding_loss`), for MEMIT's and AlphaEdit's
  batch updates and one UltraEdit turn at the official step size (and at the CPU table's).

Usage (a quarter of an hour on 2 cores; the capability statistics are cached)::

    python benchmarks/closed_form_deviations.py

Writes ``crispedit_lite/resources/results/closed-form-deviations-smollm2.json`` atomically.
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
from crispedit_lite.editing import cpu_config, edit
from crispedit_lite.editing.editors.memit import CLOSED_FORM_PRESETS
from crispedit_lite.editing.kfac_cache import capability_factors
from crispedit_lite.editing.loops.covariance import input_second_moment
from crispedit_lite.editing.precision import rounding_loss
from crispedit_lite.evaluation import teacher_forced_evaluate
from crispedit_lite.models import load_model

RESULTS = Path(__file__).resolve().parents[1] / "crispedit_lite/resources/results"  # package data
OUT = RESULTS / "closed-form-deviations-smollm2.json"
MODEL = "smollm2-135m-instruct"


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return round(float(torch.linalg.norm(a.double() - b.double()) / torch.linalg.norm(b.double())), 5)


def covariance_gaps(model, tok, modules, texts, lengths, seed) -> list[dict]:
    """Per length: token counts and ``||C - A|| / ||A||`` per layer."""
    rows = []
    for length in lengths:
        factors, info = capability_factors(model, tok, modules, texts, max_length=length, labels="true",
                                           seed=seed, progress=False)
        C, cinfo = input_second_moment(model, tok, modules, texts, max_length=length)
        gaps = {m: _rel(C[m], factors[m].A) for m in modules}
        rows.append({"max_length": length, "n_texts": len(texts), "kfac_tokens": info["n_tokens"],
                     "every_tokens": cinfo["n_tokens"], "gap": gaps})
        print(f"length {length}: {cinfo['n_tokens']} tokens; ||C - A|| / ||A|| "
              f"{min(gaps.values()):.4f} .. {max(gaps.values()):.4f}", flush=True)
    return rows


def deltas(model, res) -> dict[str, torch.Tensor]:
    """The weight change of an edit, per module (float64)."""
    return {m: model.get_submodule(m).weight.detach().double() - res.original[f"{m}.weight"].double()
            for m in res.modules}


def losses(res, delta) -> dict[str, dict[str, float]]:
    """What bfloat16 / float16 weights would lose of each module's update."""
    out = {}
    for dtype in (torch.bfloat16, torch.float16):
        per = {m: rounding_loss(res.original[f"{m}.weight"].to(dtype), d) for m, d in delta.items()}
        out[str(dtype).removeprefix("torch.")] = {"max": round(max(per.values()), 5),
                                                  "min": round(min(per.values()), 5)}
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the three measurements; print them; write the JSON."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n-edits", type=int, default=8)
    ap.add_argument("--lengths", type=int, nargs="+", default=[32, 128])
    ap.add_argument("--template-seeds", type=int, nargs=2, default=[0, 1])
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args(argv)
    argv = list(sys.argv[1:] if argv is None else argv)
    started = time.time()
    torch.manual_seed(0)
    model, tok = load_model(MODEL)
    base_cfg = cpu_config("memit")
    texts = list(capability_texts(base_cfg.capability_source, n=base_cfg.n_capability, seed=0))
    layers = CLOSED_FORM_PRESETS[MODEL]["layers"]
    modules = [base_cfg.module_pattern.format(i=i) for i in layers]
    record = {"command": "python benchmarks/closed_form_deviations.py " + " ".join(argv), "model": MODEL,
              "n_edits": args.n_edits, "capability": f"offline stand-in, {len(texts)} texts"}
    record["covariance"] = covariance_gaps(model, tok, modules, texts, args.lengths, 0)

    requests = list(load_edits("smollm2-counterfacts"))[:args.n_edits]
    runs, templates = {}, {}
    variants = [("greedy", {}), *((f"sampled seed {s}", {"cf_templates": "sampled", "cf_template_seed": s})
                                  for s in args.template_seeds)]
    for name, extra in variants:
        res = edit(model, tok, requests, cpu_config("memit", **extra), capability_texts=texts, progress=False)
        tf = teacher_forced_evaluate(model, tok, requests)
        runs[name] = (res, deltas(model, res), 100 * sum(r["rel"] for r in tf["records"]) / len(requests))
        templates[name] = res.details["context_templates"][1]
        res.restore(model)
        print(f"memit, {name} templates: TF Rel {runs[name][2]:.1f}; {templates[name]}", flush=True)
    names = [n for n, _ in variants]
    pairs = {}
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            pairs[f"{a} vs {b}"] = {m: _rel(runs[a][1][m], runs[b][1][m]) for m in modules}
            print(f"||dW({a}) - dW({b})|| / ||dW({b})||: {pairs[f'{a} vs {b}']}", flush=True)
    record["templates"] = {"prefixes": templates, "tf_rel": {n: round(runs[n][2], 2) for n in names},
                           "delta_gap": pairs}

    precision = {"memit": losses(runs["greedy"][0], runs["greedy"][1])}
    res = edit(model, tok, requests, cpu_config("alphaedit"), capability_texts=texts, progress=False)
    precision["alphaedit"] = losses(res, deltas(model, res))
    res.restore(model)
    for lr in (1e-6, 1e-4):  # one turn: every edit in one chunk
        cfg = cpu_config("ultraedit", ultra_lr=lr, chunk_size=args.n_edits)
        res = edit(model, tok, requests, cfg, progress=False)
        precision[f"ultraedit lr {lr:g}"] = losses(res, deltas(model, res))
        res.restore(model)
    for name, v in precision.items():
        print(f"{name}: lost to rounding, bfloat16 {v['bfloat16']}, float16 {v['float16']}", flush=True)
    record["precision"] = precision
    record.update(wall_s=round(time.time() - started, 1), threads=torch.get_num_threads(),
                  created=time.strftime("%Y-%m-%d %H:%M"))
    print(f"wrote {write_json_atomic(args.out, record)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
