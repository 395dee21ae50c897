r"""``python -m crispedit_lite collect-kfac``: the capability K-FAC factors, once, into a cache.

CrispEdit's expensive, reusable step is the K-FAC of the capability loss (CrispEdit §3.3,
:math:`G \approx A \otimes S` per edited ``down_proj``, on n Wikipedia texts). This command collects
it with :func:`crispedit_lite.editing.kfac_cache.capability_factors` under the same cache key an
``edit`` run computes, so ``edit --cache-dir DIR`` with the same model, layers, capability text,
max length, labels and seed is a cache hit. Under ``torchrun --nproc_per_node K`` the texts are
split over the K processes (the process group comes from the environment: gloo on CPU, NCCL on
CUDA) and only rank 0 prints; ``--checkpoint-every N`` checkpoints the running sums every N
batches so that a killed collection resumes.

Derived in notebook ``04_kfac_step_by_step``.
"""

from __future__ import annotations

import argparse
import inspect
import os
from typing import Any

from crispedit_lite.cli import checks

__all__ = ["FLAGS", "add_parser", "run_collect"]

#: The flag of each setting that a check before loading may refuse (preflight.SettingError.setting).
FLAGS = {"layers": "--layers", "module_pattern": "--module-pattern", "seed": "--seed", "device": "--device",
         "dtype": "--dtype", "capability_max_length": "--max-length",
         "capability_source": "--capability-source", "cache_dir": "--cache-dir", "tokenizer": "--tokenizer"}


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """The ``collect-kfac`` subcommand's arguments (defaults: the CPU preset, ``--preset paper``).

    Listed on the book page ``api``.
    """
    import torch

    c = sub.add_parser("collect-kfac", parents=[common],
                       help="collect capability K-FAC factors into a cache (torchrun-aware)")
    c.add_argument("--model", default="smollm2-135m-instruct")
    c.add_argument("--tokenizer", default=None)
    c.add_argument("--layers", default=None, help="comma-separated layer indices (default: the model's)")
    c.add_argument("--module-pattern", default=None, help="default: model.layers.{i}.mlp.down_proj")
    c.add_argument("--preset", choices=["cpu", "paper"], default="cpu",
                   help="defaults of the options below: cpu (offline text, 32 x 128 tokens) or paper "
                        "(Wikipedia, 512 tokens; --n-capability required)")
    c.add_argument("--n-capability", type=int, default=None)
    c.add_argument("--capability-source", choices=["wikipedia", "offline"], default=None)
    c.add_argument("--max-length", type=int, default=None, help="tokens per capability text")
    c.add_argument("--kfac-labels", choices=["true", "sampled", "type2"], default=None)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--cache-dir", default=None, help="default: $CRISPEDIT_CACHE/kfac")
    c.add_argument("--checkpoint-every", type=int, default=None,
                   help="checkpoint the running sums every N batches (resumable)")
    c.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    c.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    c.add_argument("--no-progress", action="store_true")


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    """Checked settings, with the preset's defaults filled in (before any model is loaded)."""
    from crispedit_lite.editing import EditConfig, cpu_config
    from crispedit_lite.reproduction import preflight
    from crispedit_lite.reproduction.preflight_model import check_structure

    checks.model(args.model, args.tokenizer)
    checks.tokenizer(args.tokenizer)
    checks.device(args.device)
    checks.seed(args.seed)
    for name in ("n_capability", "max_length", "checkpoint_every"):
        checks.positive(getattr(args, name), "--" + name.replace("_", "-"))
    if args.preset == "paper" and args.n_capability is None:
        raise checks.UsageError("argument --n-capability: --preset paper needs it (the paper uses 10,000 "
                                "for LLaMA-3-8B, 1,000 for Qwen-2.5-1.5B and Table 4, 30-200 for "
                                "CrispEdit-Seq)")
    base = cpu_config("crispedit") if args.preset == "cpu" else EditConfig()
    s = {"layers": checks.layers(args.layers), "pattern": args.module_pattern or base.module_pattern,
         "n": args.n_capability or base.n_capability,
         "source": args.capability_source or base.capability_source,
         "max_length": args.max_length or base.capability_max_length,
         "labels": args.kfac_labels or base.kfac_labels}
    # the same checks an edit run makes before loading: settings, device, sources, the model's shape
    config = base.with_(layers=s["layers"], module_pattern=s["pattern"], seed=args.seed,
                        capability_max_length=s["max_length"], capability_source=s["source"])
    preflight.check_settings(config)
    preflight.check_device(args.device, args.dtype)
    if args.cache_dir is not None:
        preflight.check_cache_dir(args.cache_dir)
    preflight.check_sources(s["source"])
    check_structure(config, args.model, args.tokenizer)
    return s


def _init_distributed(device: str) -> tuple[str, bool]:
    """Join the torchrun process group when ``WORLD_SIZE > 1``; ``(device, initialised here)``."""
    import torch
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return device, False
    if device.startswith("cuda"):
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return device, True


def run_collect(args: argparse.Namespace) -> dict[str, Any]:
    """Collect (or find in the cache) the capability K-FAC factors; ``info`` of the cache entry.

    Listed on the book page ``api``.
    """
    import torch.distributed as dist

    from crispedit_lite.data.capability import capability_texts
    from crispedit_lite.editing.kfac_cache import capability_factors
    from crispedit_lite.models import resolve_edit_modules
    from crispedit_lite.reproduction.experiment import load_for_experiment

    s = _settings(args)
    accepted = inspect.signature(capability_factors).parameters
    extra: dict[str, Any] = {}
    if args.checkpoint_every is not None:
        if "checkpoint_every" not in accepted:
            raise checks.UsageError("argument --checkpoint-every: this version of capability_factors "
                                    "cannot checkpoint")
        extra["checkpoint_every"] = args.checkpoint_every
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and "distributed" not in accepted:
        raise checks.UsageError("collect-kfac under torchrun: this version of capability_factors cannot "
                                "split the work over processes; run it in one process")
    texts = list(capability_texts(s["source"], n=s["n"], seed=args.seed))
    device, ours = _init_distributed(args.device)
    try:
        rank = dist.get_rank() if dist.is_initialized() else 0
        if "distributed" in accepted:
            extra["distributed"] = None  # auto: split when the process group is up
        net, tok = load_for_experiment(args.model, args.tokenizer, device, args.dtype, args.seed)
        modules = resolve_edit_modules(net, s["pattern"], list(s["layers"]) if s["layers"] else None)
        _, info = capability_factors(net, tok, modules, texts, max_length=s["max_length"],
                                     labels=s["labels"], seed=args.seed, cache_dir=args.cache_dir,
                                     progress=not args.no_progress and rank == 0, **extra)
        if rank == 0:
            state = "cache hit" if info.get("hit") else f"collected in {info.get('seconds', 0):.1f} s"
            if info.get("resumed_from_batch"):
                state += f", resumed from the checkpoint at batch {info['resumed_from_batch']}"
            if info.get("world_size", 1) > 1:
                state += f", over {info['world_size']} processes"
            print(f"K-FAC of {len(modules)} module(s) on {len(texts)} {s['source']} text(s) x "
                  f"{s['max_length']} tokens ({info.get('n_tokens')} tokens): {state}")
            print(info.get("cache"))
        return {**info, "modules": modules, "rank": rank}
    finally:
        if ours:
            dist.destroy_process_group()
