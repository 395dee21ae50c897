"""Draw MEND on SmolLM2: the training curve of the shipped editor and the two editing regimes.

Reads ``crispedit_lite/resources/mend_smollm2_135m_train.json`` (written by the training command) and
``crispedit_lite/resources/results/mend-regimes-smollm2.json`` (``benchmarks/mend_regimes.py``) and writes
``book/figures/mend_smollm2.svg``: (a) edit success and KL on the validation edits during training,
(b) teacher-forced reliability of the edits applied so far and (c) KL to the base model, against the
number of edits applied in sequence, beside the single-edit regime's means.

Usage::

    python benchmarks/mend_plot.py
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from crispedit_lite.atomic import atomic_path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CURVE = ROOT / "crispedit_lite" / "resources" / "mend_smollm2_135m_train.json"
REGIMES = ROOT / "crispedit_lite" / "resources" / "results" / "mend-regimes-smollm2.json"
OUT = ROOT / "book" / "figures" / "mend_smollm2.svg"


def main() -> int:
    """Three panels; write the SVG."""
    train = json.loads(CURVE.read_text())
    regimes = json.loads(REGIMES.read_text())
    fig, ax = plt.subplots(1, 3, figsize=(13, 3.6))
    tr, val = train["curve"]["train"], train["curve"]["val"]
    ax[0].plot([r["step"] for r in tr], [r["edit_acc"] for r in tr], color="C0", alpha=0.5,
               label="edit success, training edits (25-edit means)")
    ax[0].plot([r["step"] for r in val], [r["edit_acc"] for r in val], "o-", color="C0",
               label="edit success, validation edits")
    ax[0].set_xlabel("training edits")
    ax[0].set_ylabel("share of outer texts fully right")
    ax[0].set_ylim(-0.02, 1.02)
    twin = ax[0].twinx()
    twin.plot([r["step"] for r in val], [r["kl"] for r in val], "s--", color="C3", label="KL, validation")
    twin.set_ylabel("KL on locality text (nats)", color="C3")
    ax[0].set_title("(a) training the editor network")
    ax[0].legend(loc="lower right", fontsize=7)
    for seed, sub in regimes["subsets"].items():
        if "sequential" not in sub:
            continue
        curve = sub["sequential"]["curve"]
        k = [c["edits_applied"] for c in curve]
        ax[1].plot(k, [c["tf_rel"] for c in curve], "o-", label=f"in sequence, subset {seed}")
        ax[2].plot(k, [c["kl"] for c in curve], "o-", label=f"in sequence, subset {seed}")
    singles = [s["single"]["mean"] for s in regimes["subsets"].values() if "single" in s]
    if singles:
        rel = sum(s["tf_rel"] for s in singles) / len(singles)
        kl = sum(s["kl"] for s in singles) / len(singles)
        ax[1].axhline(rel, color="k", ls=":", label=f"one edit at a time, restored ({rel:.0f})")
        ax[2].axhline(kl, color="k", ls=":", label=f"one edit, restored ({kl:.3f})")
    base = [s["base"]["tf_rel"] for s in regimes["subsets"].values()]
    ax[1].axhline(sum(base) / len(base), color="grey", ls="--", label="unedited model")
    for a, title, ylab in ((ax[1], "(b) earlier edits kept", "TF Rel of the edits so far, at most 40 (%)"),
                           (ax[2], "(c) damage to the model", "KL to the base model (nats)")):
        a.set_xscale("log")
        a.set_xlabel("edits applied in sequence")
        a.set_ylabel(ylab)
        a.set_title(title)
        a.legend(fontsize=7)
    ax[2].set_yscale("log")
    fig.tight_layout()
    with atomic_path(OUT) as tmp:
        fig.savefig(tmp, format="svg")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
