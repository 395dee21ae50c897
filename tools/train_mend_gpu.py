"""Train MEND's editor network for LLaMA-3-8B-Instruct or Qwen-2.5-1.5B-Instruct on ZsRE (one GPU).

The settings are EasyEdit's MEND training configurations (``hparams/TRAINING/MEND/llama3-8B.yaml``;
``qwen2.5-7b.yaml`` for Qwen, which has the same 28-layer depth), which are the official values of
``MendSettings.paper`` (the trainer's flags come from it with ``training_flags``, so the script and
``python -m crispedit_lite.editing.mend_train`` build their settings the same way): gate/up/down_proj of
the last three layers (29-31 of 32, 25-27 of 28), rank 1920, one hidden layer, identity init,
normalisation, combined factors, edit_lr 1e-4, Adam lr 1e-6 and lr_lr 1e-4, c_edit 0.1, c_loc 1.0,
accumulate 10 edits, gradient clip 100, the paraphrase as the post-edit text; here: validation every
1,000 edits on 500 held-out edits, 100,000 edits (LLaMA) or 20,000 (Qwen). The ZsRE file is EasyEdit's
``zsre_mend_train.json`` (MEND's ZsRE format: ``src, alt, rephrase, loc, loc_ans, ...``); its NQ
locality question and answer make the locality batch (``--capability none``), as in the official ZsRE
runs. The model is loaded in float32, as EasyEdit runs MEND (``half: False``); a bf16 weight would round
away most of a MEND step.

Usage::

    python tools/train_mend_gpu.py llama3-8b data/zsre_mend_train.json runs/mend-llama3-8b-zsre
    python tools/train_mend_gpu.py qwen2.5-1.5b data/zsre_mend_train.json runs/mend-qwen2.5-1.5b-zsre

Any further flag of ``python -m crispedit_lite.editing.mend_train`` overrides the preset (later flags
win), e.g. ``--steps 2000`` for a first look. The run resumes from ``runs/...`` when interrupted. Then
edit with ``--method mend_seq --set mend_editor=runs/.../best.safetensors``; the reproduce cells
``reproduce/table1_*_mend.yaml`` name the LLaMA file in ``CONFIG: {mend_editor: ...}``.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def presets() -> dict[str, list[str]]:
    """The trainer's flags of each preset: ``MendSettings.paper`` and the run's length and validation."""
    from crispedit_lite.editing.editors.mend import MendSettings
    from crispedit_lite.editing.mend_train import training_flags

    common = ["--format", "zsre", "--capability", "none", "--device", "cuda", "--dtype", "float32",
              *training_flags(MendSettings.paper), "--val-every", "1000", "--val-size", "500"]
    return {"llama3-8b": ["--model", "meta-llama/Meta-Llama-3-8B-Instruct", "--steps", "100000", *common],
            "qwen2.5-1.5b": ["--model", "Qwen/Qwen2.5-1.5B-Instruct", "--steps", "20000", *common]}


def main(argv: list[str] | None = None) -> int:
    """``main([preset, zsre_file, out_dir, *overrides])``: run the trainer with the preset's flags."""
    argv = sys.argv[1:] if argv is None else argv
    table = presets()
    if len(argv) < 3 or argv[0] not in table:
        print(f"usage: python tools/train_mend_gpu.py {{{','.join(table)}}} ZSRE_TRAIN_JSON OUT_DIR "
              "[--flag value ...]", file=sys.stderr)
        return 2
    from crispedit_lite.editing.mend_train import main as train

    preset, data, out, *rest = argv
    return train([*table[preset], "--data", data, "--out", out, *rest])


if __name__ == "__main__":
    raise SystemExit(main())
