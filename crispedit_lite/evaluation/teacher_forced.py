r"""Teacher-forced Rel / Gen / Spec, as MEMIT, ROME, AlphaEdit and EasyEdit define them.

For a prompt :math:`x` and a target :math:`y = (y_1,\dots,y_m)`, the model reads the string
``x + " " + y`` and, at each target position, is scored on its argmax given the *true* prefix:

.. math::

    \mathrm{acc}(x, y) = \frac1m \sum_{j=1}^m \mathbb 1\Big[\arg\max_v p_\theta(v\mid x, y_{<j}) = y_j\Big],
    \qquad
    \overline{\mathrm{NLL}}(x, y) = -\frac1m \sum_{j=1}^m \log p_\theta(y_j \mid x, y_{<j}).

Rel = mean acc on (edit prompt, ``target_new``), Gen = on (rephrase, ``target_new``), Spec = on
(locality prompt, locality answer) for ZsRE / WikiBigEdit; for CounterFact, Spec is the fraction
of neighbourhood prompts with :math:`\overline{\mathrm{NLL}}(x, y^{\rm true}) <
\overline{\mathrm{NLL}}(x, y^{\rm new})` (CrispEdit Table 3; official code
``evaluate/evaluate_utils.py``). All ×100.

The target tokens are those of ``x + " " + y`` after the first ``len(tokenize(x))`` tokens, as in
EasyEdit (trailing space of :math:`x` and surrounding spaces of :math:`y` are stripped first, so a
target stored as ``" Paris"`` is not joined with two spaces).
Batches are right-padded (EasyEdit left-pads without position ids, which shifts the
positions of padded rows; right padding makes every row exactly its unpadded self).

Derived in notebook ``06_crispedit_on_a_small_lm``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from crispedit_lite.evaluation.generation import model_device, pad_right
from crispedit_lite.evaluation.records import locality_pairs, record_text

__all__ = ["score_targets", "target_token_accuracy", "target_nll", "teacher_forced_evaluate"]


def _encode_pair(tokenizer: Any, prompt: str, target: str, index: int) -> tuple[list[int], int]:
    prompt, target = prompt.rstrip(), target.strip()  # " Paris" and "Paris" give the same string
    full = tokenizer(f"{prompt} {target}").input_ids
    n_prompt = len(tokenizer(prompt).input_ids)
    if len(full) <= n_prompt:
        raise ValueError(f"pair {index}: target {target!r} adds no token after prompt {prompt!r}")
    return list(full), n_prompt


@torch.no_grad()
def score_targets(
    model: nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    targets: Sequence[str],
    *,
    batch_size: int = 16,
) -> tuple[list[float], list[float]]:
    r"""Per pair, the teacher-forced token accuracy and mean per-token NLL of the target.

    Returns:
        ``(accuracies, mean_nlls)``, lists as long as ``prompts`` (accuracy in :math:`[0, 1]`).

    Derived in notebook ``06_crispedit_on_a_small_lm``.
    """
    if len(prompts) != len(targets):
        raise ValueError(f"score_targets: {len(prompts)} prompts vs {len(targets)} targets")
    if batch_size < 1:
        raise ValueError("score_targets: batch_size must be positive")
    encoded = [_encode_pair(tokenizer, p, t, i) for i, (p, t) in enumerate(zip(prompts, targets))]
    device = model_device(model)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    accs: list[float] = []
    nlls: list[float] = []
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(encoded), batch_size):
            chunk = encoded[start : start + batch_size]
            ids, mask = pad_right([e[0] for e in chunk], pad_id)
            ids, mask = ids.to(device), mask.to(device)
            logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
            labels = ids[:, 1:]
            # label position t (0-based in labels) is token t+1 of the sequence
            pos = torch.arange(1, ids.shape[1], device=device)
            n_prompt = torch.tensor([e[1] for e in chunk], device=device)
            n_total = mask.sum(1)
            tmask = (pos[None, :] >= n_prompt[:, None]) & (pos[None, :] < n_total[:, None])
            hits = (logits.argmax(-1) == labels) & tmask
            nll = -torch.gather(F.log_softmax(logits, -1), -1, labels[..., None])[..., 0]
            count = tmask.sum(1)
            accs.extend((hits.sum(1) / count).tolist())
            nlls.extend(((nll * tmask).sum(1) / count).tolist())
    finally:
        model.train(was_training)
    return accs, nlls


def target_token_accuracy(model: nn.Module, tokenizer: Any, prompts: Sequence[str],
                          targets: Sequence[str], *, batch_size: int = 16) -> list[float]:
    """Teacher-forced token accuracy of each target given its prompt (see :func:`score_targets`).

    Listed on the book page ``api``.
    """
    return score_targets(model, tokenizer, prompts, targets, batch_size=batch_size)[0]


def target_nll(model: nn.Module, tokenizer: Any, prompts: Sequence[str],
               targets: Sequence[str], *, batch_size: int = 16) -> list[float]:
    """Mean per-token NLL (nats) of each target given its prompt (see :func:`score_targets`).

    Listed on the book page ``api``.
    """
    return score_targets(model, tokenizer, prompts, targets, batch_size=batch_size)[1]


def _mean100(values: list[float]) -> float | None:
    return 100.0 * sum(values) / len(values) if values else None


def teacher_forced_evaluate(
    model: nn.Module,
    tokenizer: Any,
    requests: Sequence[Any],
    *,
    specificity: Literal["accuracy", "nll_comparison"] = "accuracy",
    batch_size: int = 16,
) -> dict[str, Any]:
    """Teacher-forced Rel / Gen / Spec over edit records (×100), with per-record values.

    Args:
        requests: records with ``prompt``, ``target_new``, optional ``rephrase_prompt``,
            ``locality_prompt`` (one or a list) and ``locality_answer``.
        specificity: ``"accuracy"`` (ZsRE / WikiBigEdit: token accuracy on the locality answer) or
            ``"nll_comparison"`` (CounterFact: per neighbourhood prompt, does the true object —
            ``locality_answer`` — have a lower mean NLL than ``target_new``?).

    Returns:
        ``{"settings", "scores": {"rel", "gen", "spec", "n_rel", "n_gen", "n_spec"}, "records"}``;
        a record's ``spec`` is the mean over its locality prompts, ``scores["spec"]`` the mean over
        all locality prompts.

    Derived in notebook ``07_sequential_editing``.
    """
    if specificity not in ("accuracy", "nll_comparison"):
        raise ValueError(f"specificity must be 'accuracy' or 'nll_comparison', got {specificity!r}")
    requests = list(requests)
    if not requests:
        raise ValueError("teacher_forced_evaluate: no requests")
    prompts: list[str] = []
    targets: list[str] = []
    owners: list[tuple[int, str]] = []
    for i, r in enumerate(requests):
        new = record_text(r, i, "target_new")
        pairs = [("rel", record_text(r, i, "prompt"), new)]
        reph = record_text(r, i, "rephrase_prompt", required=False)
        if reph is not None:
            pairs.append(("gen", reph, new))
        for p, a in locality_pairs(r, i):
            if a is None:
                raise ValueError(f"record {i}: field 'locality_answer' is needed for Spec")
            pairs.append(("spec", p, a))
            if specificity == "nll_comparison":
                pairs.append(("spec_new", p, new))
        for kind, p, t in pairs:
            prompts.append(p)
            targets.append(t)
            owners.append((i, kind))
    accs, nlls = score_targets(model, tokenizer, prompts, targets, batch_size=batch_size)
    per: list[dict[str, Any]] = [{"rel": None, "gen": None, "spec": []} for _ in requests]
    spec_true_nll: list[float] = []
    for (i, kind), a, n in zip(owners, accs, nlls):
        if kind in ("rel", "gen"):
            per[i][kind] = a
        elif kind == "spec" and specificity == "accuracy":
            per[i]["spec"].append(a)
        elif kind == "spec":
            spec_true_nll.append(n)
        else:  # spec_new follows its spec entry
            per[i]["spec"].append(float(spec_true_nll[-1] < n))
    records = []
    for i, (r, res) in enumerate(zip(requests, per)):
        spec = res["spec"]
        records.append({"index": i, "case_id": getattr(r, "case_id", None), "rel": res["rel"],
                        "gen": res["gen"], "spec": sum(spec) / len(spec) if spec else None,
                        "spec_items": spec})
    rel = [x["rel"] for x in records]
    gen = [x["gen"] for x in records if x["gen"] is not None]
    spec_all = [s for x in records for s in x["spec_items"]]
    scores = {"rel": _mean100(rel), "gen": _mean100(gen), "spec": _mean100(spec_all),
              "n_rel": len(rel), "n_gen": len(gen), "n_spec": len(spec_all)}
    settings = {"specificity": specificity, "join": "prompt + ' ' + target", "padding": "right",
                "n_records": len(requests)}
    return {"settings": settings, "scores": scores, "records": records}
