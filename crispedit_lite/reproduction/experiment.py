r"""One edit experiment end to end: load, evaluate before, edit, evaluate after, write the results JSON.

The command line (``python -m crispedit_lite edit``) and the reproduction notebooks
(``09_reproduce_llama3_8b``, ``10_reproduce_qwen2_5_1_5b``) are thin wrappers around
:func:`run_experiment`, so a notebook run and a CLI run with the same settings are the same run.
Every check that can fail on the settings, the edit records, the tokenizer or the model's config
alone (:mod:`crispedit_lite.reproduction.preflight`: evaluations, dtype and device, where the JSON
goes, the edit data, the edited layers, the capability text) runs before the model is loaded, so a
mistake costs seconds, not the minutes of loading an 8B model, and a refused run writes nothing.
Repeated edit records are dropped with a warning and recorded. A run whose metrics or losses are
not finite is recorded as diverged (:func:`~crispedit_lite.reproduction.results.write_result`) and
raises :class:`RunDiverged`.

Derived in notebook ``09_reproduce_llama3_8b``.
"""

from __future__ import annotations

import inspect
import os
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from crispedit_lite.editing import EditConfig

__all__ = ["DTYPES", "RunDiverged", "check_output_dir", "load_for_experiment", "load_requests",
           "run_experiment", "unique_requests"]

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def check_output_dir(path: str | Path, what: str) -> Path:
    """``path`` as a folder that exists or can be made: no file on it or on any parent, writable.

    Nothing is created. Raises ``ValueError`` naming ``what`` (e.g. ``"results_dir"``).

    Listed on the book page ``api``.
    """
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise ValueError(f"{what}: {str(path)!r} is a file; expected a folder (existing or new)")
    parent = p
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"{what}: {str(parent)!r} is a file, so folder {str(path)!r} cannot be made")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{what}: {str(parent)!r} is not writable, so {str(path)!r} cannot be made")
    return p


class RunDiverged(ValueError):
    """A run whose record held NaN or infinity: written as diverged (``path``), not a result.

    Listed on the book page ``api``.
    """

    def __init__(self, path: Path, where: Sequence[str]) -> None:
        more = f" and {len(where) - 1} more" if len(where) > 1 else ""
        super().__init__(f"the run diverged: {where[0]}{more} not finite (NaN or infinity); recorded as "
                         f"diverged in {path}, which does not count as a result (lower the learning rate?)")
        self.path, self.where = path, list(where)


def unique_requests(data: str, data_format: str = "auto", n_edits: int | None = None, seed: int = 0
                    ) -> tuple[list[Any], list[tuple[int, int]]]:
    """``(requests, dropped)``: :func:`load_requests` with repeated edits dropped before the subset.

    A record that repeats an earlier one (same prompt and target) is dropped; ``dropped`` lists
    ``(its position in the file, the position of the first copy)``. Without repeats the requests are
    exactly those of :func:`load_requests`.

    Listed on the book page ``api``.
    """
    import random

    from crispedit_lite.data.edits import drop_duplicates

    kept, dropped = drop_duplicates(load_requests(data, data_format, None, None))
    random.Random(seed).shuffle(kept)
    return (kept if n_edits is None else kept[:n_edits]), dropped


def load_requests(data: str, data_format: str = "auto", n_edits: int | None = None, seed: int | None = 0):
    """:func:`crispedit_lite.data.load_edits`, with unreadable or binary files as clear ``ValueError`` s.

    Listed on the book page ``api``.
    """
    from crispedit_lite.data import load_edits

    try:
        return load_edits(data, format=data_format, limit=n_edits, seed=seed)
    except UnicodeDecodeError as err:
        raise ValueError(f"edit data {data!r} is not UTF-8 text (byte {err.start}: a binary file?); "
                         "expected JSON or JSONL edit records") from None
    except (PermissionError, IsADirectoryError) as err:
        raise ValueError(f"edit data {data!r} cannot be read ({err.strerror}); expected a readable "
                         "JSON or JSONL file") from None


def load_for_experiment(model: str, tokenizer: str | None, device: str, dtype: str, seed: int = 0,
                        device_map: str | Mapping[str, Any] | None = None):
    """``(model, tokenizer)`` for an embedded name, hub id, local dir, or ``random:<shape preset>``.

    ``device_map`` (``"auto"`` or a module -> device dict) is passed to
    :func:`crispedit_lite.models.load_model` to spread a large model over several devices.

    Listed on the book page ``api``.
    """
    from transformers import AutoTokenizer

    from crispedit_lite.models import SHAPE_PRESETS, load_model, prepare_tokenizer, random_init_model

    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    if model.startswith("random:"):
        if device_map is not None:
            raise ValueError("device_map applies to loaded models, not to a random:<shape> model")
        if not tokenizer:
            raise ValueError("a random:<shape> model needs a tokenizer (directory or hub id)")
        tok = prepare_tokenizer(AutoTokenizer.from_pretrained(tokenizer))
        shape = model.split(":", 1)[1]
        vocab = SHAPE_PRESETS.get(shape, {}).get("vocab_size")  # checked before building (8B on a GPU)
        if vocab is not None and len(tok) > vocab:
            raise ValueError(
                f"tokenizer {tokenizer!r} has {len(tok)} tokens but {model} has vocab_size {vocab}: its "
                "token ids would index past the embedding. Use a tokenizer with at most that many "
                "tokens, or a larger shape preset (e.g. random:llama3-8b-shape)")
        net = random_init_model(shape, dtype=DTYPES[dtype], device=device, seed=seed)
        return net.eval(), tok
    kw: dict[str, Any] = {}
    if device_map is not None:
        if "device_map" not in inspect.signature(load_model).parameters:
            raise ValueError("device_map: this version of crispedit_lite.models.load_model does not "
                             "take a device_map")
        kw["device_map"] = device_map  # the map places the weights; ``device`` stays for statistics
    net, tok = load_model(model, dtype=DTYPES[dtype], device="cpu" if kw else device, **kw)
    if tokenizer:
        tok = prepare_tokenizer(AutoTokenizer.from_pretrained(tokenizer))
    return net.eval(), tok


def _check(config: EditConfig, evals: Sequence[str], dtype: str, results_dir: str,
           run_id: str | None, save_model: str | None, n_edits: int) -> list[str]:
    """Checks on the settings alone; the evaluations to run."""
    from crispedit_lite.evaluation.runner import EVALS

    evals = [e for e in evals if e and e != "none"]
    unknown = [e for e in evals if e not in EVALS]
    if unknown:
        raise ValueError(f"unknown evaluation(s) {unknown}; expected some of {list(EVALS)} or 'none'")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    if n_edits < 1:
        raise ValueError(f"n_edits must be at least 1, got {n_edits}")
    out = check_output_dir(results_dir, "results_dir")
    if run_id is not None and (out / f"{run_id}.json").exists():
        raise ValueError(f"{out / f'{run_id}.json'} exists; results are never overwritten "
                         "(choose another run_id)")
    if save_model and Path(save_model).expanduser().exists():
        raise ValueError(f"save_model {save_model!r} exists; the edited model goes to a new folder")
    return evals


def run_experiment(
    config: EditConfig,
    *,
    model: str = "smollm2-135m-instruct",
    tokenizer: str | None = None,
    data: str = "smollm2-counterfacts",
    data_format: str = "auto",
    dataset_name: str | None = None,
    n_edits: int = 16,
    device: str = "cpu",
    dtype: str = "float32",
    evals: Sequence[str] = ("wild", "teacher_forced", "proxies"),
    judge: bool = False,
    results_dir: str = "results",
    run_id: str | None = None,
    save_model: str | None = None,
    cache_dir: str | None = None,
    device_map: str | Mapping[str, Any] | None = None,
    preset: Mapping[str, Any] | None = None,
    wild_decoding: str | Sequence[str] | None = None,
    command: str = "",
    progress: bool = True,
) -> dict[str, Any]:
    """Run one edit experiment and write its results JSON; return the record.

    Args:
        config: the method and its settings (:func:`~crispedit_lite.editing.paper_config`, ...).
        model, tokenizer, device_map: see :func:`load_for_experiment`.
        data, data_format, n_edits: edit requests (:func:`crispedit_lite.data.load_edits`; a seeded
            random subset of ``n_edits``).
        dataset_name: label in the results (``zsre``, ``counterfact``, ``wikibigedit``, ...);
            CounterFact-like names use the NLL-comparison specificity of teacher-forced evaluation.
        evals: any of ``wild``, ``teacher_forced``, ``proxies``, ``lm_eval``.
        judge: score WILD answers with the LLM judge (needs ``OPENAI_API_KEY``).
        results_dir: where the JSON goes (one file per run, written atomically, never overwritten).
        save_model: also save the edited model to this new directory.
        preset: how the preset was chosen (recorded as ``settings.preset``).
        wild_decoding: WILD decoding(s) (:func:`~crispedit_lite.evaluation.evaluate_run`):
            ``"official"`` (the paper's), ``"robust"``, ``"both"``, a list (the first fills
            ``metrics.wild.scores``), or ``None`` (robust for an instruct tokenizer). Recorded.
        command: the command line or notebook call that started the run, recorded verbatim.

    Derived in notebook ``09_reproduce_llama3_8b``.
    """
    from crispedit_lite.data.capability import capability_texts
    from crispedit_lite.editing import edit, get_editor, needs_capability, save_edited
    from crispedit_lite.evaluation.runner import evaluate_run
    from crispedit_lite.reproduction.preflight import check_data_source, preflight
    from crispedit_lite.reproduction.results import (
        environment_info,
        nonfinite_paths,
        peak_memory,
        write_result,
    )

    evals = _check(config, evals, dtype, results_dir, run_id, save_model, n_edits)
    editor = get_editor(config.method)
    check_data_source(data)
    requests, dropped = unique_requests(data, data_format, n_edits, config.seed)
    repeats = (f"edit data {data!r}: {len(dropped):,} record(s) repeat an earlier edit (record "
               f"{dropped[0][0]} repeats record {dropped[0][1]}) and were dropped before choosing "
               f"{len(requests)} edit(s)") if dropped else None
    preflight(config, model=model, tokenizer=tokenizer, requests=requests, device=device, dtype=dtype,
              device_map=device_map, evals=evals, results_dir=results_dir, run_id=run_id,
              save_model=save_model, cache_dir=cache_dir, capability=needs_capability(config.method))
    if repeats:
        print(f"warning: {repeats}", file=sys.stderr, flush=True)
    texts, corpus_meta = None, None
    if needs_capability(config.method):
        corpus = capability_texts(config.capability_source, n=config.n_capability, seed=config.seed)
        texts, corpus_meta = list(corpus), dict(corpus.meta)
    torch.manual_seed(config.seed)
    dev = torch.device(device)
    timings: dict[str, float] = {}
    t = time.perf_counter()
    net, tok = load_for_experiment(model, tokenizer, device, dtype, config.seed, device_map)
    timings["load_s"] = time.perf_counter() - t
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    name = dataset_name or str(data)
    spec = "nll_comparison" if "counterfact" in name.lower() else "accuracy"
    t = time.perf_counter()
    before = evaluate_run(net, tok, requests, evals, base=None, judge=judge, progress=progress,
                          specificity=spec, wild_decoding=wild_decoding)
    timings["eval_before_s"] = time.perf_counter() - t
    result = edit(net, tok, requests, config, capability_texts=texts, cache_dir=cache_dir,
                  progress=progress)
    timings.update(result.timings)
    t = time.perf_counter()
    after = evaluate_run(net, tok, requests, evals, base=before, judge=judge, progress=progress,
                         specificity=spec, wild_decoding=wild_decoding)
    timings["eval_after_s"] = time.perf_counter() - t
    run_id = run_id or f"{config.method}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    notes = []
    if model.startswith("random:"):
        notes.append("random-init weights: timings and memory only; accuracy is meaningless")
    if corpus_meta and corpus_meta.get("stand_in"):
        notes.append(f"capability corpus: offline stand-in ({corpus_meta.get('dataset')}), not Wikipedia")
    if "wild" in evals and not judge:
        notes.append("WILD scored by exact match, not the paper's LLM judge")
    if repeats:
        notes.append(repeats)
    if len(requests) < n_edits:
        notes.append(f"asked for {n_edits} edits; the data holds {len(requests)}")
    settings = {"model": model, "dataset": name, "data": str(data), "n_edits": len(requests),
                "method": config.method, "editor": editor.describe(), "seed": config.seed,
                "dtype": dtype, "device": str(dev), "evals": list(evals), "judge": bool(judge),
                "config": config.to_dict(), "capability_corpus": corpus_meta,
                "wild_decoding": (before["metrics"].get("wild") or {}).get("decoding")}
    if repeats:
        settings["duplicates_dropped"] = len(dropped)
    if device_map is not None:
        settings["device_map"] = device_map
    if preset is not None:
        settings["preset"] = dict(preset)
    record = {
        "run_id": run_id,
        "command": command,
        "settings": settings,
        "metrics": {"before": before["metrics"], "after": after["metrics"]},
        "generations": after.get("generations", []),
        "timings": {k: round(float(v), 3) for k, v in timings.items()},
        "memory": peak_memory(dev),
        "environment": environment_info(dev),
        "edit": result.to_dict(),
        "notes": notes,
    }
    path = write_result(record, results_dir)
    record["_path"] = str(path)
    bad = nonfinite_paths(record)
    if bad:
        raise RunDiverged(path, bad)
    if save_model:
        save_edited(net, tok, save_model, info={"run_id": run_id, "results": str(path)})
    return record
