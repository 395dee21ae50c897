r"""Command line: ``python -m crispedit_lite edit ...`` runs one edit and writes a results JSON.

Example (CPU, the embedded model)::

    python -m crispedit_lite edit --model smollm2-135m-instruct --data smollm2-counterfacts \
        --n-edits 16 --method crispedit --gamma 0.7 --preset cpu --results-dir results/

The same command edits a hub model on a GPU (``--model meta-llama/Meta-Llama-3-8B-Instruct
--preset paper --device cuda --dtype bfloat16``), or a randomly initialised model with real shapes
for timing (``--model random:llama3-8b-shape --tokenizer DIR``). Derived in notebook
``06_crispedit_on_a_small_lm``.
"""

from __future__ import annotations

import argparse
import difflib
import shlex
import sys
from pathlib import Path
from typing import Any

import torch
import yaml

__all__ = ["main", "build_parser", "run_edit"]

def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m crispedit_lite``."""
    p = argparse.ArgumentParser(prog="python -m crispedit_lite", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("edit", help="edit a model and write a results JSON")
    e.add_argument("--model", default="smollm2-135m-instruct",
                   help="embedded name, hub id, local dir, or random:<shape preset>")
    e.add_argument("--tokenizer", default=None, help="tokenizer dir/id (default: the model's)")
    e.add_argument("--data", default="smollm2-counterfacts", help="built-in set, file, URL or hf:id")
    e.add_argument("--format", default="auto")
    e.add_argument("--dataset-name", default=None, help="label for the results (default: --data)")
    e.add_argument("--n-edits", type=int, default=16)
    e.add_argument("--method", default="crispedit")
    e.add_argument("--preset", choices=["paper", "cpu", "none"], default="cpu")
    e.add_argument("--gamma", type=float, default=None)
    e.add_argument("--layers", default=None, help="comma-separated layer indices")
    e.add_argument("--epochs", type=int, default=None)
    e.add_argument("--batch-size", type=int, default=None)
    e.add_argument("--lr", type=float, default=None)
    e.add_argument("--n-capability", type=int, default=None)
    e.add_argument("--capability-source", choices=["wikipedia", "offline"], default=None)
    e.add_argument("--capability-max-length", type=int, default=None)
    e.add_argument("--kfac-labels", choices=["true", "sampled", "type2"], default=None)
    e.add_argument("--chunk-size", type=int, default=None)
    e.add_argument("--optimizer", choices=["adam", "sgd"], default=None)
    e.add_argument("--eigh-dtype", choices=["float64", "float32"], default=None)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    e.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    e.add_argument("--eval", default="wild,teacher_forced,proxies",
                   help="comma list of wild, teacher_forced, proxies, lm_eval (or 'none')")
    e.add_argument("--judge", action="store_true", help="LLM judge (needs OPENAI_API_KEY)")
    e.add_argument("--results-dir", default="results")
    e.add_argument("--run-id", default=None)
    e.add_argument("--save-model", default=None, help="write the edited model to this new dir")
    e.add_argument("--cache-dir", default=None, help="K-FAC cache dir")
    e.add_argument("--no-progress", action="store_true")
    r = sub.add_parser("reproduce", help="run a paper table cell: papermill + reproduce/CELL.yaml")
    r.add_argument("cell", help="e.g. table1_zsre_crispedit (see reproduce/README.md)")
    r.add_argument("--results-root", default="results")
    r.add_argument("--root", default=".", help="repository root (holds notebooks/, reproduce/)")
    r.add_argument("--force", action="store_true", help="run even if a result exists")
    return p


def _config(args: argparse.Namespace):
    from crispedit_lite.editing import EditConfig, cpu_config, paper_config

    changes: dict[str, Any] = {"seed": args.seed}
    mapping = {"gamma": "gamma", "epochs": "epochs", "batch_size": "batch_size", "lr": "lr",
               "n_capability": "n_capability", "capability_source": "capability_source",
               "capability_max_length": "capability_max_length", "kfac_labels": "kfac_labels",
               "chunk_size": "chunk_size", "optimizer": "optimizer", "eigh_dtype": "eigh_dtype"}
    for arg, field in mapping.items():
        if getattr(args, arg) is not None:
            changes[field] = getattr(args, arg)
    if args.layers:
        changes["layers"] = tuple(int(i) for i in args.layers.split(","))
    if args.preset == "paper":
        dataset = args.dataset_name if args.dataset_name in ("zsre", "counterfact", "wikibigedit") \
            else "zsre"
        return paper_config(args.method, dataset, **changes)
    if args.preset == "cpu":
        return cpu_config(args.method, **changes)
    return EditConfig(method=args.method, **changes)


def run_edit(args: argparse.Namespace, argv: list[str] | None = None) -> dict[str, Any]:
    """Run :func:`crispedit_lite.experiment.run_experiment` with the parsed arguments."""
    from crispedit_lite.experiment import run_experiment

    argv = sys.argv[1:] if argv is None else argv
    record = run_experiment(
        _config(args), model=args.model, tokenizer=args.tokenizer, data=args.data,
        data_format=args.format, dataset_name=args.dataset_name, n_edits=args.n_edits,
        device=args.device, dtype=args.dtype, evals=args.eval.split(","), judge=args.judge,
        results_dir=args.results_dir, run_id=args.run_id, save_model=args.save_model,
        cache_dir=args.cache_dir, progress=not args.no_progress,
        command="python -m crispedit_lite " + " ".join(shlex.quote(a) for a in argv))
    print(f"wrote {record['_path']}")
    return record


def run_reproduce(args: argparse.Namespace) -> Path:
    """Execute the reproduction notebook of a table cell with papermill and its ``reproduce/*.yaml``."""
    import papermill

    root = Path(args.root)
    params = root / "reproduce" / f"{args.cell}.yaml"
    if not params.exists():
        known = sorted(p.stem for p in (root / "reproduce").glob("*.yaml"))
        close = difflib.get_close_matches(args.cell, known, n=5) or known[:5]
        raise ValueError(f"no reproduce/{args.cell}.yaml; cells include {close}")
    nb = "10_reproduce_qwen2_5_1_5b" if args.cell.startswith("table5_") else "09_reproduce_llama3_8b"
    results = Path(args.results_root) / args.cell
    if list(results.glob("*.json")) and not args.force:
        print(f"{args.cell}: {results} already holds a result; skipping (use --force to run again)")
        return results
    out = Path(args.results_root) / f"{args.cell}.ipynb"
    out.parent.mkdir(parents=True, exist_ok=True)
    papermill.execute_notebook(str(root / "notebooks" / f"{nb}.ipynb"), str(out),
                               parameters={**yaml.safe_load(params.read_text()),
                                           "RESULTS_DIR": str(results)},
                               cwd=str(root / "notebooks"), log_output=True)
    print(f"{args.cell}: executed {out}; results in {results}")
    return results


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m crispedit_lite``."""
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    if args.command == "reproduce":
        run_reproduce(args)
        return 0
    if args.command == "edit":
        record = run_edit(args, argv)
        for key, value in _flatten(record["metrics"]["after"]):
            print(f"{key} = {value:.4g}")
    return 0


def _flatten(tree: Any, prefix: str = "") -> list[tuple[str, float]]:
    """Numeric leaves of a nested dict as ``("a.b.c", value)`` pairs."""
    if isinstance(tree, dict):
        return [kv for k, v in tree.items() for kv in _flatten(v, f"{prefix}{k}.")]
    if isinstance(tree, (int, float)) and not isinstance(tree, bool):
        return [(prefix.rstrip("."), float(tree))]
    return []
