#!/usr/bin/env python
"""CrispEdit at real model shapes: K-FAC, eigh, projection variants, step time, a 3,000-edit schedule.

Randomly initialised LLaMA-3-8B / Qwen-2.5-1.5B-shaped models (timings only; random weights say nothing
about accuracy, and give unrealistic curvature spectra). See benchmarks/README.md for every field.

    python benchmarks/scale.py --preset llama3-8b qwen2.5-1.5b          # on a GPU (~3-5 min on an H200)
    OMP_NUM_THREADS=1 python benchmarks/scale.py --preset tiny --device cpu [--quick]   # CPU smoke run

This file is the command line and the JSON record; the sections live beside it: ``scale_common.py``
(presets, timer, model), ``scale_kfac.py`` (build, kfac), ``scale_eigh.py`` (eigh and the energy rule),
``scale_project.py`` (projection forms), ``scale_step.py`` (step, schedule), ``scale_report.py``
(hardware, summary).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import platform
import re
import sys
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "crispedit_lite" / "resources" / "results"  # package data

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the scale_* modules beside this file

from scale_common import NOTE_SPECTRA, PRESETS, SECTIONS, WEIGHTS, Bench, log  # noqa: E402
from scale_eigh import section_eigh  # noqa: E402
from scale_kfac import section_build, section_kfac  # noqa: E402
from scale_project import section_project  # noqa: E402
from scale_report import hardware, summary  # noqa: E402
from scale_step import section_schedule, section_step  # noqa: E402

from crispedit_lite.atomic import write_json_atomic  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", nargs="+", default=["llama3-8b", "qwen2.5-1.5b"], choices=list(PRESETS))
    ap.add_argument("--device", default="auto", help="auto (cuda if available), cuda or cpu")
    ap.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help=f"comma-separated subset of {SECTIONS} (dependencies run silently)",
    )
    ap.add_argument("--gammas", default="0.7,0.9", help="energy thresholds (paper: 0.7 ZsRE, 0.9 CF/Wiki)")
    ap.add_argument("--alpha", type=float, default=1.0, help="power-law exponent of the synthetic spectrum")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--quick", action="store_true", help="1 warm-up, 2 repeats, fewer batches (smoke test)")
    ap.add_argument("--full", action="store_true", help="also run the whole 2,350-step schedule (minutes)")
    ap.add_argument(
        "--out", default=None,
        help="JSON path (default crispedit_lite/resources/results/scale-<device>-<date>.json)"
    )
    args = ap.parse_args(argv)

    dev = torch.device(
        "cuda"
        if args.device == "auto" and torch.cuda.is_available()
        else ("cpu" if args.device == "auto" else args.device)
    )
    cuda = dev.type == "cuda"
    dtype = torch.bfloat16 if cuda else torch.float32
    warmup, repeats = (1, 2) if args.quick else (args.warmup, args.repeats)
    wanted = [s.strip() for s in args.sections.split(",") if s.strip()]
    bad = [s for s in wanted if s not in SECTIONS]
    if bad:
        ap.error(f"unknown sections {bad}; choose from {SECTIONS}")
    need = set(wanted)
    if need & {"project", "step"}:
        need.add("eigh")
    if need & {"kfac", "step"} or "eigh" in need:
        need.add("build")
    gammas = [float(g) for g in args.gammas.split(",")]
    hw = hardware(dev)
    slug = re.sub(r"[^a-z0-9]+", "-", (hw.get("gpu") or "cpu").lower()).strip("-")
    date = _dt.datetime.now(_dt.timezone.utc)
    out = Path(args.out) if args.out else RESULTS / f"scale-{slug}-{date:%Y%m%d}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    res = {
        "command": " ".join([Path(sys.executable).name] + sys.argv)
        if argv is None
        else "scale.py " + " ".join(argv),
        "date": date.isoformat(timespec="seconds"),
        "hardware": hw,
        "weights": WEIGHTS,
        "settings": {
            "sections": wanted,
            "gammas": gammas,
            "alpha": args.alpha,
            "warmup": warmup,
            "repeats": repeats,
            "dtype": str(dtype),
            "full": args.full,
        },
        "notes": [
            NOTE_SPECTRA,
            "every *_s field is a median wall time with the device synchronised; "
            "schedule times are extrapolated unless under full_run",
        ],
        "presets": {},
    }

    def save():
        write_json_atomic(out, res, default=str)  # strict JSON; a reader never sees half a file

    log(
        f"device {dev} ({hw.get('gpu', platform.processor() or 'cpu')}), torch {torch.__version__}; "
        f"writing {out}"
    )
    save()
    rc = 0
    for name in args.preset:
        p = PRESETS[name]
        pres = res["presets"].setdefault(name, {})
        ctx = {
            "p": p,
            "device": dev,
            "cuda": cuda,
            "dtype": dtype,
            "gammas": gammas,
            "alpha": args.alpha,
            "quick": args.quick,
            "full": args.full,
            "bench": Bench(dev, warmup, repeats),
        }
        log(f"preset {name}")
        for sec in SECTIONS:
            if sec not in need:
                continue
            t0 = time.perf_counter()
            try:
                if sec == "build":
                    r = section_build(ctx)
                elif sec == "kfac":
                    r = section_kfac(ctx)
                elif sec == "eigh":
                    r = section_eigh(ctx)
                elif sec == "project":
                    r = section_project(ctx)
                elif sec == "step":
                    r = section_step(ctx)
                else:
                    r = section_schedule(ctx, pres)
            except Exception as exc:  # keep going: a partial JSON is still useful
                traceback.print_exc()
                pres[sec] = {"error": f"{type(exc).__name__}: {exc}"}
                rc = 1
                save()
                if sec in ("build", "eigh"):
                    break
                continue
            r["section_wall_s"] = time.perf_counter() - t0
            if sec in wanted:
                pres[sec] = r
            log(f"{name}: {sec} done in {r['section_wall_s']:.1f} s")
            save()
        summary(name, {k: v for k, v in pres.items() if "error" not in v})
        for k in ("model", "factors", "projectors", "synthetic"):
            ctx.pop(k, None)
        if cuda:
            torch.cuda.empty_cache()
    save()
    log(f"wrote {out}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
