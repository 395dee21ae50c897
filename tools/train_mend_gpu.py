"""Train MEND's editor network for LLaMA-3-8B-Instruct or Qwen-2.5-1.5B-Instruct on ZsRE (one GPU).

The settings are EasyEdit's MEND training configurations (``hparams/TRAINING/MEND/llama3-8B.yaml``;
``qwen2.5-7b.yaml`` for Qwen, which has the same 28-layer depth): gate/up/down_proj of the last three
layers (29-31 of 32, 25-27 of 28), rank 1920, one hidden layer, identity init, normalisation, combined
factors, edit_lr 1e-4, Adam lr 1e-6 and lr_lr 1e-4, c_edit 0.1, c_loc 1.0, accumulate 10 edits, gradient
clip 100, validation every 1,000 edits on 500 held-out edits; 100,000 edits (LLaMA) or 20,000 (Qwen). The
ZsRE file is EasyEdit's ``zsre_mend_train.json`` (MEND's ZsRE format: ``src, alt, rephrase, loc,
loc_ans, ...``); its NQ locality question and answer make the locality batch (``--capability none``), as
in the official ZsRE runs. The model is loaded in float32, as EasyEdit runs MEND (``half: False``); a
bf16 weight would round away most of a MEND step.

Usage::

    python tools/train_mend_gpu.py llama3-8b data/zsre_mend_train.json runs/mend-llama3-8b-zsre
    python tools/train_mend_gpu.py qwen2.5-1.5b data/zsre_mend_train.json runs/mend-qwen2.5-1.5b-zsre

Any further ``--flag`` of ``python -m crispedit_lite.editing.mend_train`` overrides the preset (later
flags win), e.g. ``--steps 2000`` for a first look. The run resumes from ``runs/...`` when interrupted.
Then edit with ``--method mend_seq`` and ``CONFIG: {extra: {mend: {editor: runs/.../best.safetensors}}}``
(``reproduce/table1_*_mend.yaml``).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

COMMON = ["--format", "zsre", "--capability", "none", "--device", "cuda", "--dtype", "float32",
          "--rank", "1920", "--n-hidden", "1", "--init", "id", "--norm", "true", "--combine", "true",
          "--edit-lr", "1e-4", "--lr", "1e-6", "--lr-lr", "1e-4", "--c-edit", "0.1", "--c-loc", "1.0",
          "--accumulate", "10", "--grad-clip", "100", "--val-every", "1000", "--val-size", "500",
          "--outer", "paraphrase"]
PRESETS = {
    "llama3-8b": ["--model", "meta-llama/Meta-Llama-3-8B-Instruct", "--steps", "100000", *COMMON],
    "qwen2.5-1.5b": ["--model", "Qwen/Qwen2.5-1.5B-Instruct", "--steps", "20000", *COMMON],
}


def main(argv: list[str] | None = None) -> int:
    """``main([preset, zsre_file, out_dir, *overrides])``: run the trainer with the preset's flags."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 3 or argv[0] not in PRESETS:
        print(f"usage: python tools/train_mend_gpu.py {{{','.join(PRESETS)}}} ZSRE_TRAIN_JSON OUT_DIR "
              "[--flag value ...]", file=sys.stderr)
        return 2
    from crispedit_lite.editing.mend_train import main as train

    preset, data, out, *rest = argv
    return train([*PRESETS[preset], "--data", data, "--out", out, *rest])


if __name__ == "__main__":
    raise SystemExit(main())
