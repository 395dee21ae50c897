r"""lm-evaluation-harness wrapper with CrispEdit's capability settings (GPU runs).

CrispEdit measures what an edit costs the model on five benchmarks, run through lm-eval's
``simple_evaluate`` on the edited Hugging Face model wrapped in ``HFLM`` (paper App. E; official
code ``run_base_benchmarks.py``): ``limit=200`` examples per task (per sub-task for MMLU),
``apply_chat_template=True``, ``fewshot_as_multiturn=True``.

* ``mmlu``, 5 shots: ``acc,none`` (the group's size-weighted accuracy);
* ``gsm8k_cot``, 8 shots: ``exact_match,strict-match`` ("The answer is N", as the CoT prompt asks);
* ``ifeval``, 0 shots: ``inst_level_strict_acc,none`` (the paper's 69.3 on 200 prompts is not a
  multiple of 0.5, so it is not prompt-level accuracy; instruction-level is the likely reading);
* ``arc_challenge``, 25 shots: ``acc_norm,none`` (the usual 25-shot ARC-C metric);
* ``truthfulqa_mc2``, 0 shots: ``acc,none`` (the task's only metric).

The paper does not say which key it reports (App. E names the tasks only), so the choice above is ours;
:func:`extract_harness_metrics` keeps every metric lm-eval returns, so any other choice can be read
off the same run. Scores are ×100. The tasks download their data from the Hugging Face hub; offline
(``HF_DATASETS_OFFLINE=1``) and without a warm cache they fail, with a message that says so.

Derived in notebook ``09_reproduce_llama3_8b``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from torch import nn

__all__ = ["HarnessTask", "PAPER_TASKS", "harness_config", "extract_harness_metrics", "run_harness"]


@dataclass(frozen=True)
class HarnessTask:
    """One lm-eval task as CrispEdit runs it.

    Attributes:
        name: lm-eval task (or group) name. num_fewshot: in-context examples.
        metric: the ``"metric,filter"`` key reported as the task's score.
        batch_size: the paper's runner setting (``"auto"``, or a fixed size for long prompts).

    Listed on the book page ``api``.
    """

    name: str
    num_fewshot: int
    metric: str
    batch_size: int | str = "auto"


#: The paper's five capability tasks (App. E; ``run_base_benchmarks.py``).
PAPER_TASKS: tuple[HarnessTask, ...] = (
    HarnessTask("mmlu", 5, "acc,none"),
    HarnessTask("gsm8k_cot", 8, "exact_match,strict-match", 2),
    HarnessTask("ifeval", 0, "inst_level_strict_acc,none"),
    HarnessTask("arc_challenge", 25, "acc_norm,none", 1),
    HarnessTask("truthfulqa_mc2", 0, "acc,none"),
)


def _resolve(tasks: Sequence[str | HarnessTask] | None) -> list[HarnessTask]:
    known = {t.name: t for t in PAPER_TASKS}
    if tasks is None:
        return list(PAPER_TASKS)
    out = []
    for t in [tasks] if isinstance(tasks, (str, HarnessTask)) else tasks:
        if isinstance(t, HarnessTask):
            out.append(t)
        elif t in known:
            out.append(known[t])
        else:
            raise ValueError(f"unknown capability task {t!r}: pass a HarnessTask, or one of {sorted(known)}")
    if not out:
        raise ValueError("no capability tasks")
    return out


def harness_config(
    tasks: Sequence[str | HarnessTask] | None = None,
    *,
    limit: int | float | None = 200,
    apply_chat_template: bool = True,
    fewshot_as_multiturn: bool = True,
    batch_size: int | str | None = None,
) -> list[dict[str, Any]]:
    """Keyword arguments of one ``lm_eval.simple_evaluate`` call per task (shots differ per task).

    ``batch_size=None`` keeps each task's paper setting; ``fewshot_as_multiturn`` needs the chat
    template and is switched off with it.

    Listed on the book page ``api``.
    """
    if limit is not None and limit <= 0:
        raise ValueError(f"limit must be positive or None, got {limit!r}")
    return [
        {
            "tasks": [t.name],
            "num_fewshot": t.num_fewshot,
            "limit": limit,
            "apply_chat_template": apply_chat_template,
            "fewshot_as_multiturn": bool(fewshot_as_multiturn and apply_chat_template),
            "batch_size": t.batch_size if batch_size is None else batch_size,
        }
        for t in _resolve(tasks)
    ]


def extract_harness_metrics(
    results: dict[str, Any], tasks: Sequence[str | HarnessTask] | None = None
) -> dict[str, dict[str, Any]]:
    """Per task ``{"score": x100, "metric": key, "stderr": x100 | None, "all": {key: value}}``.

    ``results`` is what ``simple_evaluate`` returns (its ``"results"`` entry is read), possibly
    merged over several calls. A missing task or metric key is a ``ValueError`` listing the keys
    that are there.

    Listed on the book page ``api``.
    """
    table = results.get("results", results)
    out: dict[str, dict[str, Any]] = {}
    for t in _resolve(tasks):
        if t.name not in table:
            raise ValueError(f"lm-eval results have no task {t.name!r}; tasks present: {sorted(table)}")
        row = table[t.name]
        if t.metric not in row:
            keys = sorted(k for k in row if "," in k and "_stderr" not in k)
            raise ValueError(f"lm-eval results for {t.name!r} have no metric {t.metric!r}; present: {keys}")
        metric, filt = t.metric.split(",", 1)
        stderr = row.get(f"{metric}_stderr,{filt}")
        numeric = {k: float(v) for k, v in row.items() if "," in k and isinstance(v, (int, float))}
        out[t.name] = {
            "score": 100.0 * float(row[t.metric]), "metric": t.metric,
            "stderr": 100.0 * float(stderr) if isinstance(stderr, (int, float)) else None,
            "num_fewshot": t.num_fewshot, "all": numeric,
        }
    return out


def _lm_eval_api() -> tuple[Any, Any]:
    """``(simple_evaluate, HFLM)``, imported lazily (lm-eval is an optional dependency)."""
    try:
        from lm_eval import simple_evaluate
        from lm_eval.models.huggingface import HFLM
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("capability benchmarks need lm-eval: pip install 'crispedit-lite[llm]'") from exc
    return simple_evaluate, HFLM


def _is_data_error(exc: BaseException) -> bool:
    while exc is not None:
        if isinstance(exc, (ConnectionError, FileNotFoundError)) or "Offline" in type(exc).__name__:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def run_harness(
    model: nn.Module,
    tokenizer: Any,
    tasks: Sequence[str | HarnessTask] | None = None,
    *,
    limit: int | float | None = 200,
    apply_chat_template: bool = True,
    fewshot_as_multiturn: bool = True,
    batch_size: int | str | None = None,
    max_batch_size: int = 64,
    seed: int = 0,
    task_manager: Any = None,
) -> dict[str, Any]:
    """Run the capability benchmarks on an in-memory model; ``{"settings", "scores", "raw"}``.

    ``scores`` is :func:`extract_harness_metrics`; ``raw`` holds lm-eval's per-task ``results``
    dictionaries. Meant for GPU runs (MMLU alone is 57 sub-tasks × 200 examples × 5 shots).
    ``task_manager`` is an ``lm_eval.tasks.TaskManager`` (e.g. with ``include_path`` for your own
    task YAML files); by default one is built once and shared by all tasks.

    Raises:
        RuntimeError: a task's data could not be loaded (no network, or offline mode without the
            dataset in the Hugging Face cache); the message names the task and the cause.

    Listed on the book page ``api``.
    """
    simple_evaluate, HFLM = _lm_eval_api()
    if task_manager is None:
        from lm_eval.tasks import TaskManager

        task_manager = TaskManager()
    configs = harness_config(tasks, limit=limit, apply_chat_template=apply_chat_template,
                             fewshot_as_multiturn=fewshot_as_multiturn, batch_size=batch_size)
    resolved = _resolve(tasks)
    raw: dict[str, Any] = {}
    lms: dict[str, Any] = {}
    for cfg in configs:
        name = cfg["tasks"][0]
        bs = cfg.pop("batch_size")
        key = str(bs)
        if key not in lms:
            lms[key] = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=bs,
                            max_batch_size=max_batch_size)
        try:
            res = simple_evaluate(model=lms[key], task_manager=task_manager, random_seed=seed,
                                  numpy_random_seed=seed, torch_random_seed=seed, fewshot_random_seed=seed,
                                  **cfg)
        except Exception as exc:
            if not _is_data_error(exc):
                raise
            offline = [v for v in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE") if os.environ.get(v) == "1"]
            hint = (f"offline mode is on ({', '.join(offline)}=1) and the dataset is not in the Hugging "
                    "Face cache" if offline else "the Hugging Face hub could not be reached")
            raise RuntimeError(
                f"capability task {name!r}: lm-eval could not load its dataset ({hint}: "
                f"{type(exc).__name__}: {exc}). Run with network access once to fill the cache, or use "
                "the offline proxies in crispedit_lite.evaluation.proxies (perplexity, kl_to_base, "
                "probe_accuracy) on a CPU."
            ) from exc
        if res is None:  # non-zero ranks in distributed runs
            continue
        raw.update(res.get("results", {}))
    settings = {"tasks": [asdict(t) for t in resolved], "limit": limit,
                "apply_chat_template": apply_chat_template,
                "fewshot_as_multiturn": bool(fewshot_as_multiturn and apply_chat_template), "seed": seed}
    return {"settings": settings, "scores": extract_harness_metrics({"results": raw}, resolved), "raw": raw}
