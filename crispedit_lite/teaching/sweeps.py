r"""CrispEdit's two sweeps: the energy threshold :math:`\gamma` and the capability-set size :math:`n`.

The paper varies :math:`\gamma` (its Table 8: 0.5 ... 0.99) and the number of capability texts
(Table 7: 10 ... 100,000). Both move the same quantity, the editable share of the Kronecker
eigenbasis: a larger :math:`\gamma` protects more curvature energy, and a larger sample excites more
directions, so fewer look free. :math:`n = 0` is FT (nothing protected).

:func:`run_sweeps` runs both on one edit set from the same base weights (each point restored
afterwards) and returns one row per point: teacher-forced scores, KL to the base model, the
perplexity change, the editable share and the training log. ``benchmarks/ch06_sweeps.py`` runs it with
chapter 6's settings and writes the JSON the chapter plots.

Derived in notebook ``06_crispedit_on_a_small_lm``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from crispedit_lite.editing import EditConfig, edit
from crispedit_lite.evaluation import evaluate_run

__all__ = ["RECORD_KEYS", "record_differences", "run_sweeps", "sweep_point"]

#: Chapter 6's parameters and the keys under which ``benchmarks/ch06_sweeps.py`` records them.
RECORD_KEYS = {"MODEL": "model", "EDIT_SET": "edit_set", "N_EDITS": "n_edits", "GAMMA": "gamma",
               "GAMMAS": "gammas", "N_CAPABILITY": "n_capability", "N_CAPS": "n_caps", "EPOCHS": "epochs",
               "BATCH_SIZE": "batch_size", "LR": "lr", "SEED": "seed", "N_PROXY_TEXTS": "n_proxy",
               "CAPABILITY_MAX_LENGTH": "capability_max_length", "KFAC_LABELS": "kfac_labels",
               "EIGH_DTYPE": "eigh_dtype"}
#: Settings that ``benchmarks/ch06_sweeps.py`` fixes without recording them.
_SCRIPT_FIXED = {"CAPABILITY_SOURCE": "offline", "PROXY_MAX_LENGTH": 128, "LAYERS": None, "DTYPE": "float32"}


def sweep_point(model: nn.Module, tokenizer: Any, requests: Sequence[Any], config: EditConfig,
                capability: Sequence[str] | None, base: dict[str, Any], *, proxy_texts: Sequence[str],
                proxy_max_length: int = 128) -> dict[str, Any]:
    """Edit from the current weights, score (teacher-forced + proxies), restore; one sweep row.

    ``base`` is :func:`~crispedit_lite.evaluation.evaluate_run` of the unedited model with the same
    ``proxy_texts`` (it holds the base log-probabilities the KL is measured against).

    Listed on the book page ``api``.
    """
    torch.manual_seed(config.seed)
    t0 = time.perf_counter()
    res = edit(model, tokenizer, requests, config, capability_texts=capability, progress=False)
    ev = evaluate_run(model, tokenizer, requests, ("teacher_forced", "proxies"), base=base,
                      proxy_texts=proxy_texts, proxy_max_length=proxy_max_length, progress=False)
    res.restore(model)
    tf, px = ev["metrics"]["teacher_forced"]["scores"], ev["metrics"]["proxies"]
    base_ppl = float(base["metrics"]["proxies"]["perplexity"])
    stats = res.projector_stats or {}
    log = res.logs[0]
    editable = float(np.mean([s["editable_fraction"] for s in stats.values()])) if stats else 1.0
    return {"TF Rel": float(tf["rel"]), "TF Gen": float(tf["gen"]), "TF Spec": float(tf["spec"]),
            "KL": float(px["kl_to_base"]), "ΔPPL %": 100 * (float(px["perplexity"]) / base_ppl - 1),
            "editable %": 100 * editable, "kfac tokens": int((res.capability or {}).get("n_tokens", 0)),
            "final loss": float(log.epoch_losses[-1]), "steps": int(log.steps),
            "stopped early": bool(log.stopped_early), "seconds": round(time.perf_counter() - t0, 1)}


def run_sweeps(model: nn.Module, tokenizer: Any, requests: Sequence[Any], *,
               config: Callable[..., EditConfig], capability: Callable[[int], Sequence[str]],
               base: dict[str, Any], proxy_texts: Sequence[str], gamma: float, n_capability: int,
               gammas: Sequence[float], n_caps: Sequence[int], proxy_max_length: int = 128,
               progress: bool = True) -> list[dict[str, Any]]:
    r"""The :math:`\gamma` sweep at ``n_capability`` texts, then the :math:`n` sweep at ``gamma``.

    Args:
        config: ``config(method, **changes) -> EditConfig`` with the run's fixed settings (learning
            rate, batch size, epoch cap, seed ...); called as ``config("crispedit", gamma=g)``,
            ``config("crispedit", n_capability=n)`` and ``config("ft")``.
        capability: ``capability(n)``, the first ``n`` capability texts.
        base: the unedited model's evaluation (see :func:`sweep_point`).

    Returns:
        Rows with ``sweep`` (``"gamma"`` or ``"n"``), ``value`` and ``method``, then the scores of
        :func:`sweep_point`; the :math:`n` sweep starts with FT as ``n = 0``.

    Derived in notebook ``06_crispedit_on_a_small_lm``.
    """
    jobs: list[tuple[str, float, EditConfig, int]] = [
        ("gamma", g, config("crispedit", gamma=g, n_capability=n_capability), n_capability) for g in gammas]
    jobs.append(("n", 0, config("ft"), 0))
    jobs += [("n", n, config("crispedit", gamma=gamma, n_capability=n), n) for n in n_caps]
    rows = []
    for sweep, value, cfg, n in tqdm(jobs, desc="sweeps", disable=not progress):
        texts = list(capability(n)) if n else None
        row = sweep_point(model, tokenizer, requests, cfg, texts, base, proxy_texts=proxy_texts,
                          proxy_max_length=proxy_max_length)
        rows.append({"sweep": sweep, "value": value, "method": cfg.method, **row})
    return rows


def record_differences(record: dict[str, Any], params: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """The parameters in which a chapter run and a committed sweep record differ: ``{name: (record, run)}``.

    Empty when the record was run with the chapter's settings, so that its rows can stand for this run's
    sweeps; any difference (a larger parameter set, another seed) means the sweeps must run live.

    Derived in notebook ``06_crispedit_on_a_small_lm``.
    """
    from crispedit_lite.reproduction.committed import parameter_differences

    return parameter_differences(record, params, RECORD_KEYS, _SCRIPT_FIXED)
