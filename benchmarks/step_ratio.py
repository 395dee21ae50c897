r"""CrispEdit step vs plain FT step, measured side by side in one run, per projection form.

One optimiser step = FT-M forward + backward through the edited ``down_proj`` layers + the optimiser
update (with the projection, for CrispEdit). Every form is timed on the same batch, interleaved
round-robin so that machine load affects them alike; the table reports the median step time and its
ratio to plain FT's (``crispedit_over_ft``).

Forms: ``ft`` (plain Adam), ``reference`` (the paper's ProjectedAdam with the four-product
KroneckerProjector), ``guarded`` (the same ProjectedAdam with the float32 staircase-block form where it
is cheaper and passes its precision check: what ``edit()`` uses by default), ``fast_auto`` /
``fast_lowrank`` / ``fast_blocks`` (the same iterates through
FastProjector fed by per-token factors), ``eigenbasis`` (a variant, not the paper's optimiser: Adam in
the rotated masked coordinates) and ``reparam`` (the eigenbasis variant as a re-parameterised layer).

Usage::

    python benchmarks/step_ratio.py                                  # embedded SmolLM2 on the CPU
    python benchmarks/step_ratio.py --model random:llama3-8b-shape --device cuda --dtype bfloat16 \
        --tokenizer DIR --batch 32 --seq 32                          # random weights, real shapes

Writes ``crispedit_lite/resources/results/step-ratio-<device>-<model>-<date>.json``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from crispedit_lite.atomic import write_json_atomic
from crispedit_lite.data import load_edits
from crispedit_lite.data.batches import tokenize_capability, tokenize_edits
from crispedit_lite.data.capability import capability_texts
from crispedit_lite.editing.loops.trainer import ft_m_loss
from crispedit_lite.fastproject import (
    EigenbasisProjectedAdam,
    FastProjector,
    TokenFactorCapture,
    attach_eigenbasis,
    merge_eigenbasis,
)
from crispedit_lite.fastproject.guard import guarded_projector
from crispedit_lite.kfac import collect_kfac
from crispedit_lite.models import default_layers, resolve_edit_modules
from crispedit_lite.optim import ProjectedAdam
from crispedit_lite.projector import KroneckerProjector
from crispedit_lite.reproduction.experiment import DTYPES, load_for_experiment

FORMS = ("ft", "reference", "guarded", "fast_auto", "fast_lowrank", "fast_blocks", "eigenbasis", "reparam")


RESULTS = Path(__file__).resolve().parents[1] / "crispedit_lite/resources/results"  # package data


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_form(form, model, names, projectors, lr=5e-4):
    """``(optimizer, cleanup)`` for one form; cleanup undoes hooks / re-parameterisation."""
    mods = {n: model.get_submodule(n) for n in names}
    for p in model.parameters():
        p.requires_grad_(False)
    if form == "reparam":
        new = attach_eigenbasis(model, {n: projectors[n] for n in names})
        return torch.optim.Adam([m.delta for m in new.values()], lr=lr), lambda: merge_eigenbasis(model)
    params = {n: m.weight.requires_grad_(True) for n, m in mods.items()}
    if form == "ft":
        return torch.optim.Adam(params.values(), lr=lr), lambda: None
    if form == "reference":
        return ProjectedAdam(params.values(), {params[n]: projectors[n] for n in names}, lr=lr), lambda: None
    if form == "guarded":  # what edit() uses by default (EditConfig.projection = "fast")
        guarded = {params[n]: guarded_projector(projectors[n])[0] for n in names}
        return ProjectedAdam(params.values(), guarded, lr=lr), lambda: None
    if form == "eigenbasis":
        return EigenbasisProjectedAdam(params.values(), {params[n]: projectors[n] for n in names},
                                       lr=lr), lambda: None
    cap = TokenFactorCapture(mods)
    fast = {params[n]: FastProjector.from_projector(projectors[n], method=form.split("_", 1)[1],
                                                    capture=cap, name=n) for n in names}
    return ProjectedAdam(params.values(), fast, lr=lr), cap.remove


def main(argv=None) -> int:
    """Measure and print the table; write the JSON."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--tokenizer", default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    ap.add_argument("--gamma", type=float, default=0.7)
    ap.add_argument("--batch", type=int, default=8, help="edits per step")
    ap.add_argument("--n-capability", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--forms", default=",".join(FORMS))
    ap.add_argument("--layers", default=None, help="comma-separated (default: the model's preset)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    forms = [f for f in args.forms.split(",") if f]
    bad = [f for f in forms if f not in FORMS]
    if bad:
        ap.error(f"--forms: unknown {bad}; known: {','.join(FORMS)}")
    device = torch.device(args.device)
    model, tok = load_for_experiment(args.model, args.tokenizer, args.device, args.dtype)
    layers = [int(i) for i in args.layers.split(",")] if args.layers else default_layers(model)
    names = resolve_edit_modules(model, "model.layers.{i}.mlp.down_proj", layers)
    requests = load_edits("smollm2-counterfacts", limit=args.batch, seed=0)
    batch = tokenize_edits(requests, tok)
    texts = list(capability_texts("offline", n=args.n_capability, seed=0))
    t = time.perf_counter()
    factors = collect_kfac(model, names, tokenize_capability(texts, tok, max_length=128), progress=False)
    kfac_s = time.perf_counter() - t
    print(f"K-FAC on {len(texts)} texts: {kfac_s:.1f} s", flush=True)
    projectors = {n: KroneckerProjector.from_kfac(factors[n], args.gamma).to(device) for n in names}
    base = {n: model.get_submodule(n).weight.detach().clone() for n in names}
    times: dict[str, list[float]] = {f: [] for f in forms}
    from tqdm.auto import tqdm

    for rep in tqdm(range(args.repeats + 1), desc="interleaved steps"):  # round 0 warms up every form
        for form in forms:
            opt, cleanup = build_form(form, model, names, projectors)  # fresh: each step is a first step
            _sync(device)
            t = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            ft_m_loss(model, batch).backward()
            opt.step()
            _sync(device)
            if rep:
                times[form].append(time.perf_counter() - t)
            cleanup()
            with torch.no_grad():  # every form starts each step from the base weights
                for n in names:
                    model.get_submodule(n).weight.copy_(base[n])
    ft = statistics.median(times["ft"]) if "ft" in times else None  # None: FT not timed (strict JSON)
    rows = [{"form": f, "median_s": statistics.median(v), "min_s": min(v),
             "crispedit_over_ft": None if ft is None else statistics.median(v) / ft}
            for f, v in times.items()]
    print(f"{args.model} on {device} ({args.dtype}), {len(names)} edited layers, batch {args.batch}, "
          f"gamma {args.gamma}, {args.repeats} interleaved repeats, torch threads {torch.get_num_threads()}")
    print(f"{'form':14s} {'median s':>9s} {'min s':>8s} {'/ FT':>6s}")
    for r in rows:
        ratio = "-" if r["crispedit_over_ft"] is None else f"{r['crispedit_over_ft']:.2f}"
        print(f"{r['form']:14s} {r['median_s']:9.3f} {r['min_s']:8.3f} {ratio:>6s}")
    command = " ".join(["python benchmarks/step_ratio.py", *(sys.argv[1:] if argv is None else argv)])
    record = {"benchmark": "step_ratio", "command": command, "model": args.model, "device": str(device),
              "dtype": args.dtype,
              "weights": "random init" if args.model.startswith("random:") else "pretrained",
              "layers": names, "batch": args.batch, "gamma": args.gamma, "repeats": args.repeats,
              "threads": torch.get_num_threads(), "kfac_s": round(kfac_s, 3), "rows": rows,
              "editable_fraction": {n: projectors[n].editable_fraction for n in names},
              "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                          "torch": torch.__version__},
              "created": time.strftime("%Y-%m-%d %H:%M:%S")}
    out = Path(args.out or RESULTS /
               f"step-ratio-{device.type}-{args.model.replace(':', '-').replace('/', '-')}-"
               f"{time.strftime('%Y-%m-%d')}.json")
    k = 1
    while args.out is None and out.exists():  # a default name never replaces an earlier result
        k += 1
        out = out.with_name(out.name.split(".json")[0].rsplit("-run", 1)[0] + f"-run{k}.json")
    print(f"wrote {write_json_atomic(out, record)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
