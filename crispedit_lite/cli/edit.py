r"""``python -m crispedit_lite edit``: one edit run, checked before the model loads, then a summary.

The run itself is :func:`crispedit_lite.reproduction.experiment.run_experiment`; this module turns the command
line into its settings (checking every argument first, see :mod:`crispedit_lite.cli.checks`): the
explicit flags of the common settings, and ``--set KEY=VALUE`` (repeatable) for any setting of the
method's own settings class (``Editor.settings``: ``--set lora_rank=4``, ``--set cf_lambda=1500``)
or any shared :class:`~crispedit_lite.editing.EditConfig` field (``--set early_stop=0.05``). It
picks the preset (``--preset paper``: CrispEdit Table 2 / App. E, Table 5 for Qwen-2.5-1.5B, with the
dataset decided by :func:`crispedit_lite.cli.presets.paper_dataset_for`), and ends with a table of
the headline metric of each family before and after the edit, then the results JSON's path.

Derived in notebook ``06_crispedit_on_a_small_lm``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Mapping
from typing import Any

from crispedit_lite.cli import checks

__all__ = ["add_parser", "build_config", "headline_rows", "run_edit"]

_FIELDS = ("gamma", "epochs", "batch_size", "lr", "n_capability", "capability_source",
           "capability_max_length", "kfac_labels", "chunk_size", "optimizer", "eigh_dtype", "projection")
#: The flag of each setting that a check before loading may refuse (preflight.SettingError.setting).
FLAGS = {**{f: "--" + f.replace("_", "-") for f in _FIELDS}, "layers": "--layers", "seed": "--seed",
         "device": "--device", "dtype": "--dtype", "device_map": "--device-map", "data": "--data",
         "results_dir": "--results-dir", "run_id": "--run-id", "save_model": "--save-model",
         "cache_dir": "--cache-dir", "evals": "--eval", "tokenizer": "--tokenizer",
         "module_pattern": "--set module_pattern", "mend_editor": "--set mend_editor",
         "mend_editor_sha256": "--set mend_editor_sha256"}


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """The ``edit`` subcommand's arguments.

    Listed on the book page ``api``.
    """
    import torch

    e = sub.add_parser("edit", parents=[common], help="edit a model and write a results JSON")
    e.add_argument("--model", default="smollm2-135m-instruct",
                   help="embedded name, hub id, local dir, or random:<shape preset>")
    e.add_argument("--tokenizer", default=None, help="tokenizer dir/id (default: the model's)")
    e.add_argument("--data", default="smollm2-counterfacts", help="built-in set, file, URL or hf:id")
    e.add_argument("--format", default="auto", choices=["auto", "zsre", "counterfact", "rome", "wikibigedit"])
    e.add_argument("--dataset-name", default=None,
                   help="label for the results and the paper preset's dataset (zsre, zsre10k, "
                        "counterfact, wiki); default: decided from --data")
    e.add_argument("--n-edits", type=int, default=16)
    e.add_argument("--method", default="crispedit")
    e.add_argument("--preset", choices=["paper", "cpu", "none"], default="cpu")
    e.add_argument("--wild-decoding", choices=["official", "robust", "both"], default=None,
                   help="WILD decoding: the paper's (official), stop strings after the first token and "
                        "the chat template in the QA context (robust), or both (default: both with "
                        "official first for --preset paper, else robust for an instruct model)")
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
    e.add_argument("--projection", choices=["fast", "reference"], default=None,
                   help="how CrispEdit's projection is computed: the guarded block form (fast, "
                        "default) or the paper code's four dense products (reference); same iterates")
    e.add_argument("--set", dest="assignments", action="append", default=[], metavar="KEY=VALUE",
                   help="a setting of the method (e.g. lora_rank=4, cf_lambda=1500, ultra_lr=1e-4) or "
                        "another EditConfig field (e.g. early_stop=0.05); repeatable; tuples as comma "
                        "lists, none for an optional value")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    e.add_argument("--device-map", default=None,
                   help="spread the model over devices: auto, or a JSON object / JSON file "
                        "(module -> device)")
    e.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    e.add_argument("--eval", default="wild,teacher_forced,proxies",
                   help="comma list of wild, teacher_forced, proxies, lm_eval (or 'none')")
    e.add_argument("--judge", action="store_true", help="LLM judge (needs OPENAI_API_KEY)")
    e.add_argument("--results-dir", default="results")
    e.add_argument("--run-id", default=None)
    e.add_argument("--save-model", default=None, help="write the edited model to this new dir")
    e.add_argument("--cache-dir", default=None, help="K-FAC cache dir (see collect-kfac)")
    e.add_argument("--no-progress", action="store_true")
    out = e.add_mutually_exclusive_group()
    out.add_argument("--quiet", action="store_true", help="print only the results JSON's path")
    out.add_argument("--json", action="store_true", help="print the results record as JSON")


def _check_args(args: argparse.Namespace) -> None:
    import os

    from crispedit_lite.reproduction.preflight import check_device, check_outputs, check_sources

    checks.method(args.method)
    flags = {f: "--" + f.replace("_", "-") for f in _FIELDS if getattr(args, f) is not None}
    flags.update({"layers": "--layers"} if args.layers else {})
    args.set_values = checks.settings(args.method, args.assignments, flags)
    checks.gamma(args.gamma)
    for name in ("n_edits", "epochs", "batch_size", "lr", "n_capability", "capability_max_length",
                 "chunk_size"):
        checks.positive(getattr(args, name), "--" + name.replace("_", "-"))
    args.layers = checks.layers(args.layers)
    args.seed = checks.seed(args.seed)
    args.eval = checks.evals(args.eval)
    args.device = checks.device(args.device)
    args.device_map = checks.device_map(args.device_map)
    checks.model(args.model, args.tokenizer)
    checks.tokenizer(args.tokenizer)
    if args.device_map is not None and args.model.startswith("random:"):
        raise checks.UsageError("argument --device-map: applies to loaded models, not random:<shape>")
    check_device(args.device, args.dtype, args.device_map)
    check_outputs(args.results_dir, args.run_id, args.save_model, args.cache_dir)
    check_sources(args.capability_source, args.eval)
    if args.judge and not os.environ.get("OPENAI_API_KEY"):
        raise checks.UsageError("argument --judge: the LLM judge needs OPENAI_API_KEY in the environment")


def build_config(args: argparse.Namespace) -> tuple[Any, dict[str, Any], str | None]:
    """``(config, preset, dataset label)`` from checked arguments; reads the edit data to do so.

    Listed on the book page ``api``.
    """
    from crispedit_lite.data import read_records
    from crispedit_lite.editing import EditConfig, cpu_config, paper_config
    from crispedit_lite.reproduction.experiment import load_requests
    from crispedit_lite.reproduction.preflight import check_data_source

    check_data_source(args.data)
    try:  # every record checked before the model loads
        load_requests(args.data, args.format, args.n_edits, args.seed)
    except (ValueError, OSError) as err:
        raise checks.UsageError(f"argument --data: {err}") from None
    changes: dict[str, Any] = {"seed": args.seed}
    changes.update({f: getattr(args, f) for f in _FIELDS if getattr(args, f) is not None})
    if args.layers:
        changes["layers"] = args.layers
    changes.update(getattr(args, "set_values", {}))  # --set KEY=VALUE, checked in _check_args
    label = args.dataset_name
    if args.preset == "paper":
        from crispedit_lite.cli.presets import paper_dataset_for

        info = paper_dataset_for(args.method, args.model, args.dataset_name, args.data,
                                 read_records(args.data), args.format)
        overridden = sorted({"gamma", "n_capability"} & set(changes))
        preset = {"name": "paper", **info, "overridden_by_arguments": overridden}
        if label is None and "shared by" not in info["decided_by"]:
            label = "zsre" if info["dataset"] == "zsre10k" else info["dataset"]
        return paper_config(args.method, info["dataset"], model=args.model, **changes), preset, label
    if args.preset == "cpu":
        return cpu_config(args.method, **changes), {"name": "cpu"}, label
    return EditConfig(method=args.method, **changes), {"name": "none"}, label


def wild_decoding_for(args: argparse.Namespace) -> str | list[str] | None:
    """The WILD decoding(s) of a run: the flag, else official first (then robust) for the paper preset."""
    if args.wild_decoding == "both" or (args.wild_decoding is None and args.preset == "paper"):
        return ["official", "robust"]
    return args.wild_decoding


def run_edit(args: argparse.Namespace, argv: list[str] | None = None) -> dict[str, Any]:
    """Check the arguments, then :func:`crispedit_lite.reproduction.experiment.run_experiment`; the record.

    Listed on the book page ``api``.
    """
    from crispedit_lite.cli.readers import unread_settings
    from crispedit_lite.reproduction.experiment import run_experiment

    argv = sys.argv[1:] if argv is None else argv
    _check_args(args)
    config, preset, label = build_config(args)
    given = {f: FLAGS[f] for f in _FIELDS if getattr(args, f) is not None}
    given.update({"layers": "--layers"} if args.layers else {})
    given.update({k: f"--set {k}" for k in getattr(args, "set_values", {})})
    unread = unread_settings(config, given)
    if unread:
        field, how, who = unread[0]
        raise checks.UsageError(f"argument {how.split('=')[0]}: method {args.method} does not read {field} "
                                f"(read by {who}); leave it out")
    return run_experiment(
        config, model=args.model, tokenizer=args.tokenizer, data=args.data, data_format=args.format,
        dataset_name=label, n_edits=args.n_edits, device=args.device, dtype=args.dtype,
        evals=args.eval, judge=args.judge, results_dir=args.results_dir, run_id=args.run_id,
        save_model=args.save_model, cache_dir=args.cache_dir, device_map=args.device_map,
        preset=preset, wild_decoding=wild_decoding_for(args), progress=not args.no_progress,
        command="python -m crispedit_lite " + " ".join(shlex.quote(a) for a in argv))


def _get(tree: Mapping[str, Any], path: str) -> float | None:
    value: Any = tree
    for key in path.split("."):
        if not isinstance(value, Mapping) or key not in value:
            return None
        value = value[key]
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def headline_rows(metrics: Mapping[str, Any]) -> list[tuple[str, float | None, float | None]]:
    """``(metric, before, after)`` for the headline metric of each family the run measured.

    Teacher-forced reliability / generalization / specificity, WILD reliability / generalization /
    locality per context, the perplexity and KL proxies, probe accuracy and lm-eval task scores.

    Listed on the book page ``api``.
    """
    before, after = metrics.get("before") or {}, metrics.get("after") or {}
    paths = [(f"teacher_forced.scores.{k}", f"TF {name} (%)")
             for k, name in (("rel", "reliability"), ("gen", "generalization"), ("spec", "specificity"))]
    for ctx in (after.get("wild") or {}).get("scores", {}):
        paths += [(f"wild.scores.{ctx}.{k}", f"WILD {ctx} {name} (%)")
                  for k, name in (("rel", "reliability"), ("gen", "generalization"), ("loc", "locality"))]
    paths += [("proxies.perplexity", "perplexity"), ("proxies.kl_to_base", "KL to base (nats)"),
              ("proxies.probe_accuracy", "probe accuracy")]
    paths += [(f"lm_eval.{task}.score", f"lm-eval {task} (%)") for task in after.get("lm_eval") or {}]
    rows = [(label, _get(before, p), _get(after, p)) for p, label in paths]
    return [r for r in rows if r[2] is not None]


def print_summary(record: Mapping[str, Any], quiet: bool = False, as_json: bool = False) -> None:
    """The metric | before | after table, then the results JSON's path (or only the path / JSON)."""
    if as_json:
        print(json.dumps(dict(record), indent=1, sort_keys=True, default=str))
        return
    if not quiet:
        rows = headline_rows(record["metrics"])
        width = max([len("metric")] + [len(r[0]) for r in rows])
        fmt = "{:<%d}  {:>10}  {:>10}" % width
        print(fmt.format("metric", "before", "after"))
        for label, b, a in rows:
            print(fmt.format(label, "-" if b is None else f"{b:.4g}", f"{a:.4g}"))
        preset = record["settings"].get("preset") or {}
        if preset.get("name") == "paper":
            cfg = record["settings"]["config"]
            print(f"preset paper: {preset['dataset']} ({preset['decided_by']}), "
                  f"gamma = {cfg['gamma']}, n = {cfg['n_capability']}")
    print(record["_path"])
