r"""One edit experiment end to end: load, evaluate before, edit, evaluate after, write the results JSON.

The command line (``python -m crispedit_lite edit``) and the reproduction notebooks
(``09_reproduce_llama3_8b``, ``10_reproduce_qwen2_5_1_5b``) are thin wrappers around
:func:`run_experiment`, so a notebook run and a CLI run with the same settings are the same run.

Derived in notebook ``09_reproduce_llama3_8b``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Any

import torch

from crispedit_lite.editing import EditConfig

__all__ = ["DTYPES", "load_for_experiment", "run_experiment"]

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load_for_experiment(model: str, tokenizer: str | None, device: str, dtype: str, seed: int = 0):
    """``(model, tokenizer)`` for an embedded name, hub id, local dir, or ``random:<shape preset>``."""
    from transformers import AutoTokenizer

    from crispedit_lite.models import SHAPE_PRESETS, load_model, prepare_tokenizer, random_init_model

    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    if model.startswith("random:"):
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
    net, tok = load_model(model, dtype=DTYPES[dtype], device=device)
    if tokenizer:
        tok = prepare_tokenizer(AutoTokenizer.from_pretrained(tokenizer))
    return net.eval(), tok


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
    command: str = "",
    progress: bool = True,
) -> dict[str, Any]:
    """Run one edit experiment and write its results JSON; return the record.

    Args:
        config: the method and its settings (:func:`~crispedit_lite.editing.paper_config`, ...).
        model, tokenizer: see :func:`load_for_experiment`.
        data, data_format, n_edits: edit requests (:func:`crispedit_lite.data.load_edits`; a seeded
            random subset of ``n_edits``).
        dataset_name: label in the results (``zsre``, ``counterfact``, ``wikibigedit``, ...);
            CounterFact-like names use the NLL-comparison specificity of teacher-forced evaluation.
        evals: any of ``wild``, ``teacher_forced``, ``proxies``, ``lm_eval``.
        judge: score WILD answers with the LLM judge (needs ``OPENAI_API_KEY``).
        results_dir: where the JSON goes (one file per run, never overwritten).
        save_model: also save the edited model to this new directory.
        command: the command line or notebook call that started the run, recorded verbatim.

    Derived in notebook ``09_reproduce_llama3_8b``.
    """
    from crispedit_lite.capability import capability_texts
    from crispedit_lite.data import load_edits
    from crispedit_lite.editing import edit, save_edited
    from crispedit_lite.evaluation.runner import evaluate_run
    from crispedit_lite.results import environment_info, peak_memory, write_result

    torch.manual_seed(config.seed)
    dev = torch.device(device)
    timings: dict[str, float] = {}
    t = time.perf_counter()
    net, tok = load_for_experiment(model, tokenizer, device, dtype, config.seed)
    timings["load_s"] = time.perf_counter() - t
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    requests = load_edits(data, format=data_format, limit=n_edits, seed=config.seed)
    texts, corpus_meta = None, None
    from crispedit_lite.editing import get_editor, needs_capability

    editor = get_editor(config.method)
    if needs_capability(config.method):
        corpus = capability_texts(config.capability_source, n=config.n_capability, seed=config.seed)
        texts, corpus_meta = list(corpus), dict(corpus.meta)
    name = dataset_name or str(data)
    spec = "nll_comparison" if "counterfact" in name.lower() else "accuracy"
    evals = [e for e in evals if e and e != "none"]
    t = time.perf_counter()
    before = evaluate_run(net, tok, requests, evals, base=None, judge=judge, progress=progress,
                          specificity=spec)
    timings["eval_before_s"] = time.perf_counter() - t
    result = edit(net, tok, requests, config, capability_texts=texts, cache_dir=cache_dir,
                  progress=progress)
    timings.update(result.timings)
    t = time.perf_counter()
    after = evaluate_run(net, tok, requests, evals, base=before, judge=judge, progress=progress,
                         specificity=spec)
    timings["eval_after_s"] = time.perf_counter() - t
    run_id = run_id or f"{config.method}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    notes = []
    if model.startswith("random:"):
        notes.append("random-init weights: timings and memory only; accuracy is meaningless")
    if corpus_meta and corpus_meta.get("stand_in"):
        notes.append(f"capability corpus: offline stand-in ({corpus_meta.get('dataset')}), not Wikipedia")
    if "wild" in evals and not judge:
        notes.append("WILD scored by exact match, not the paper's LLM judge")
    record = {
        "run_id": run_id,
        "command": command,
        "settings": {"model": model, "dataset": name, "data": str(data), "n_edits": len(requests),
                     "method": config.method, "editor": editor.describe(), "seed": config.seed,
                     "dtype": dtype,
                     "device": str(dev), "evals": list(evals), "judge": bool(judge),
                     "config": config.to_dict(), "capability_corpus": corpus_meta},
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
    if save_model:
        save_edited(net, tok, save_model, info={"run_id": run_id, "results": str(path)})
    return record
