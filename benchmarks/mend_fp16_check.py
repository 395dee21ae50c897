r"""Does storing MEND's low-rank factors in float16 change its edits? Both files of the editor side by side.

The shipped editor (``crispedit_lite/resources/mend_smollm2_135m.safetensors``) stores the network's
:math:`U, V` factors in float16 (the small tensors stay float32). This script edits the same requests
from the base SmolLM2 with the float32 file the training wrote and with the shipped float16 file, and
reports per request the relative difference of the weight changes,
:math:`\lVert\Delta W_{16}-\Delta W_{32}\rVert_F/\lVert\Delta W_{32}\rVert_F` (worst matrix), and of
the new target's log-probability after the edit.

Usage::

    python benchmarks/mend_fp16_check.py --fp32 runs/mend-smollm2/best.safetensors --n 20

Writes ``crispedit_lite/resources/results/mend-fp16-check-smollm2.json`` (package data).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from crispedit_lite.atomic import write_json_atomic
from crispedit_lite.data import load_edits
from crispedit_lite.editing import cpu_config, edit
from crispedit_lite.editing.loops.mend import SHIPPED_EDITORS, file_sha256
from crispedit_lite.evaluation import sequence_logprobs
from crispedit_lite.models import load_model

RESULTS = Path(__file__).resolve().parents[1] / "crispedit_lite/resources/results"  # package data
OUT = RESULTS / "mend-fp16-check-smollm2.json"


def main(argv=None) -> int:
    """Edit with both files; print the worst differences; write the JSON."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fp32", required=True, help="the float32 editor file of the training run")
    ap.add_argument("--n", type=int, default=20, help="requests of each set (validation split, edit set)")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args(argv)
    argv = list(sys.argv[1:] if argv is None else argv)
    model, tok = load_model("smollm2-135m-instruct")
    val = [r for r in load_edits("smollm2-mend-train") if r.extra["split"] == "val"][:args.n]
    evalset = load_edits("smollm2-counterfacts", limit=args.n, seed=0)
    rows = []
    for r in val + evalset:
        deltas, logp = {}, {}
        for name, editor in (("fp32", args.fp32), ("fp16", "shipped")):
            cfg = cpu_config("mend", mend_editor=editor)
            res = edit(model, tok, [r], cfg, progress=False)
            deltas[name] = {key: model.get_parameter(key).detach() - w for key, w in res.original.items()}
            logp[name] = sequence_logprobs(model, tok, [r.prompt], [r.target_new])[0][0]
            res.restore(model)
        rel = max(float((deltas["fp16"][k] - deltas["fp32"][k]).norm() / deltas["fp32"][k].norm())
                  for k in deltas["fp32"])
        rows.append({"case_id": r.case_id, "max_rel_delta_diff": rel, "logp_new_fp32": logp["fp32"],
                     "logp_new_fp16": logp["fp16"], "logp_diff": logp["fp16"] - logp["fp32"]})
    worst = max(rows, key=lambda x: x["max_rel_delta_diff"])
    worst_lp = max(abs(x["logp_diff"]) for x in rows)
    entry = SHIPPED_EDITORS["smollm2-135m-instruct"]
    record = {"command": "python benchmarks/mend_fp16_check.py " + " ".join(argv),
              "fp32_sha256": file_sha256(args.fp32), "fp16_sha256": entry["sha256"],
              "n_requests": len(rows), "max_rel_delta_diff": worst["max_rel_delta_diff"],
              "max_abs_logp_diff_nats": worst_lp, "rows": rows, "torch": torch.__version__,
              "created": time.strftime("%Y-%m-%d %H:%M")}
    write_json_atomic(args.out, record)
    print(f"{len(rows)} edits: worst relative |dW16 - dW32| / |dW32| = {worst['max_rel_delta_diff']:.2e}; "
          f"worst |log p16(new) - log p32(new)| = {worst_lp:.2e} nats; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
