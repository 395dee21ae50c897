r"""``python -m crispedit_lite.editing.mend_train``: train a MEND editor network for a model.

The loop is :class:`~crispedit_lite.editing.loops.mend_trainer.MendTrainer`; this command loads the
model (an embedded name, a hub id or a local directory, or ``random:<shape preset>`` with
``--tokenizer``), the edit requests (``--data``: the built-in ``smollm2-mend-train`` split, or a file
such as EasyEdit's ZsRE training set ``zsre_mend_train.json``), the locality corpus, and every
training field of :class:`~crispedit_lite.editing.editors.mend.MendSettings` as a flag named without its
``mend_`` prefix (``--rank`` sets ``mend_rank``; official defaults; :func:`training_flags` writes them).
Records with a ``split`` field are split into ``train`` / ``val`` by it; otherwise the last
``--val-size`` records of a seeded shuffle are held out.

It writes to ``--out`` (resuming from its checkpoint): ``best.safetensors`` (float32, the best
validation step), ``editor_fp16.safetensors`` (the same, low-rank factors in float16) and
``train_curve.json`` (command, settings, data digest, curve, wall time). Examples::

    # the shipped SmolLM2 editor (CPU)
    python -m crispedit_lite.editing.mend_train --model smollm2-135m-instruct --out runs/mend-smollm2 \
        --rank 220 --steps 2000 --val-every 250 --outer prompt+paraphrase
    # LLaMA-3-8B on ZsRE (one 80 GB GPU; EasyEdit's hparams/TRAINING/MEND/llama3-8B.yaml)
    python -m crispedit_lite.editing.mend_train --model meta-llama/Meta-Llama-3-8B-Instruct \
        --data data/zsre_mend_train.json --format zsre --capability none --device cuda \
        --out runs/mend-llama3-8b-zsre
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["flag_of", "load_split", "main", "records_sha256", "training_flags"]

DTYPES = ("float32", "bfloat16", "float16")


def records_sha256(records: list[Any]) -> str:
    """SHA-256 of raw records as canonical JSON (sorted keys, UTF-8): the split's digest.

    Listed on the book page ``api``.
    """
    text = json.dumps(records, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def load_split(data: str, fmt: str, val_size: int, seed: int) -> tuple[list, list, dict[str, Any]]:
    """``(train, val, info)``: requests by their ``split`` field, else a seeded hold-out of ``val_size``.

    Listed on the book page ``api``.
    """
    from crispedit_lite.data import parse_records, read_records

    raw = read_records(data)
    requests = parse_records(raw, format=fmt)
    if all(r.extra.get("split") in ("train", "val") for r in requests):
        train = [r for r in requests if r.extra["split"] == "train"]
        val = [r for r in requests if r.extra["split"] == "val"]
    else:
        order = list(range(len(requests)))
        random.Random(seed).shuffle(order)
        val = [requests[i] for i in order[-val_size:]]
        train = [requests[i] for i in order[:-val_size]]
    relations: dict[str, int] = {}
    for r in train:
        rel = str(r.extra.get("relation", "?"))
        relations[rel] = relations.get(rel, 0) + 1
    info = {"data": data, "records_sha256": records_sha256(raw), "n_train": len(train), "n_val": len(val),
            "train_by_relation": relations}
    return train, val, info


def _training_fields() -> list[str]:
    from crispedit_lite.editing.editors.mend import EDIT_TIME, MendSettings

    return [f for f in MendSettings.field_names() if f not in EDIT_TIME]


def flag_of(field: str) -> str:
    """The trainer's flag of a :class:`~crispedit_lite.editing.editors.mend.MendSettings` field.

    ``"mend_lr_lr"`` -> ``"--lr-lr"``.

    Listed on the book page ``api``.
    """
    return "--" + field.removeprefix("mend_").replace("_", "-")


def training_flags(values: Mapping[str, Any]) -> list[str]:
    """The trainer's flags that set the training fields of ``values`` (``MendSettings.paper``, say).

    Edit-time fields are left out.

    Listed on the book page ``api``.
    """
    fields = _training_fields()
    out: list[str] = []
    for name, value in values.items():
        if name in fields:
            out += [flag_of(name), str(value).lower() if isinstance(value, bool) else str(value)]
    return out


def _settings_flags(ap: argparse.ArgumentParser) -> None:
    """One flag per training field, read as ``--set`` reads settings (:func:`parse_value`)."""
    from crispedit_lite.editing.editors.mend import MendSettings
    from crispedit_lite.editing.settings import expected, field_types, parse_value

    types, default = field_types(MendSettings), MendSettings()

    def reader(name: str):
        def read(text: str) -> Any:
            try:
                return parse_value(name, text, types[name])
            except ValueError as err:
                raise argparse.ArgumentTypeError(str(err)) from None
        return read

    for name in _training_fields():
        ap.add_argument(flag_of(name), dest=name, type=reader(name), default=getattr(default, name),
                        metavar="VALUE", help=f"{name}: {expected(types[name])} "
                                              f"(default {getattr(default, name)})")


def _load(model: str, tokenizer: str | None, device: str, dtype: str, seed: int):
    import torch
    from transformers import AutoTokenizer

    from crispedit_lite.models import load_model, prepare_tokenizer, random_init_model

    torch_dtype = getattr(torch, dtype)
    if model.startswith("random:"):
        if not tokenizer:
            raise ValueError("--model random:<shape> needs --tokenizer")
        net = random_init_model(model.split(":", 1)[1], dtype=torch_dtype, device=device, seed=seed)
        return net, prepare_tokenizer(AutoTokenizer.from_pretrained(tokenizer))
    net, tok = load_model(model, dtype=torch_dtype, device=device)
    if tokenizer:
        tok = prepare_tokenizer(AutoTokenizer.from_pretrained(tokenizer))
    return net, tok


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, train (resuming), write the editor files and the curve.

    Listed on the book page ``api``.
    """
    from crispedit_lite.editing.editors.mend import MendSettings, mend_modules
    from crispedit_lite.editing.loops.mend import file_sha256, load_editor, save_editor
    from crispedit_lite.editing.loops.mend_trainer import MendTrainer, settings_record, write_json

    ap = argparse.ArgumentParser(prog="python -m crispedit_lite.editing.mend_train",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--tokenizer", default=None)
    ap.add_argument("--data", default="smollm2-mend-train")
    ap.add_argument("--format", default="auto",
                    choices=["auto", "zsre", "counterfact", "rome", "wikibigedit"])
    ap.add_argument("--capability", default="offline", choices=["offline", "wikipedia", "none"],
                    help="locality text beside each record's locality fact ('none': the facts alone)")
    ap.add_argument("--n-capability", type=int, default=64)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=DTYPES)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    ap.add_argument("--no-progress", action="store_true")
    _settings_flags(ap)
    args = ap.parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv
    names = set(MendSettings.field_names())
    try:
        settings = MendSettings(**{k: v for k, v in vars(args).items() if k in names})
        settings.network()  # a contradiction of the network's settings, before anything loads
        train, val, split = load_split(args.data, args.format, settings.mend_val_size, args.seed)
        model, tok = _load(args.model, args.tokenizer, args.device, args.dtype, args.seed)
        modules = mend_modules(model, settings)
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    texts = None
    if args.capability != "none":
        from crispedit_lite.data.capability import capability_texts

        texts = list(capability_texts(args.capability, n=args.n_capability, seed=args.seed))
    import torch

    trainer = MendTrainer(model, tok, modules, settings, train, val, texts, args.out, seed=args.seed)
    meta = {"model": args.model, "modules": json.dumps(modules), "split_sha256": split["records_sha256"]}
    curve = trainer.train(progress=not args.no_progress, metadata=meta)
    out = Path(args.out)
    if trainer.best is None:
        print("error: no validation step improved on nothing; train for more steps", file=sys.stderr)
        return 2
    best = load_editor(out / "best.safetensors")
    save_editor(best, out / "editor_fp16.safetensors", half=True, metadata=meta)
    record = {
        "command": "python -m crispedit_lite.editing.mend_train " + " ".join(argv),
        "model": args.model, "modules": modules, "settings": settings_record(settings),
        "capability": {"source": args.capability, "n": args.n_capability if texts else 0,
                       "windows": len(trainer.windows)},
        "split": split, "network": trainer.net.describe(), "seed": args.seed,
        "wall_s": round(trainer.wall, 1), "threads": torch.get_num_threads(), "torch": torch.__version__,
        "created": time.strftime("%Y-%m-%d %H:%M"), "best": trainer.best,
        "files": {name: {"bytes": (out / name).stat().st_size, "sha256": file_sha256(out / name)}
                  for name in ("best.safetensors", "editor_fp16.safetensors")},
        "curve": curve,
    }
    write_json(out / "train_curve.json", record)
    print(f"best validation step {trainer.best['step']}: edit success {trainer.best['edit_acc']:.3f}, "
          f"KL {trainer.best['kl']:.4f}; wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
