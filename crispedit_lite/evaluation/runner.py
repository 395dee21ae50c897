r"""One call for the command line and the notebooks: every metric of a run, before or after an edit.

:func:`evaluate_run` evaluates the model once before editing (``base=None``) and once after
(``base=`` the first result). The "before" result carries what the "after" pass compares against:
the pre-edit answers to the locality prompts (for ``loc_agreement``) and the base model's
next-token log-probabilities on held-out capability text (for the KL proxy), in ``state``, which
is not meant to be written to JSON.

Evaluations (``evals``): ``"wild"`` (:func:`~.wild.wild_evaluate`, in one or both WILD decodings,
:mod:`~.decoding`), ``"teacher_forced"`` (:func:`~.teacher_forced.teacher_forced_evaluate`; it also
reports the ROME/MEMIT probability test, :func:`~.probability.probability_evaluate`, under
``metrics["probability"]``, which ``"probability"`` alone asks for too), ``"proxies"`` (perplexity
and KL to the base model on held-out capability text, and probe accuracy when probes are given)
and ``"lm_eval"`` (:func:`~.harness.run_harness`, GPU and network).

``metrics["side_by_side"]`` puts the three families next to each other, one row each with ``rel``,
``gen`` and ``loc``: teacher-forced token accuracy (``loc`` = Spec), the probability test
(:math:`P(\text{new}) > P(\text{old})`; ``loc`` = :math:`P(\text{true}) > P(\text{new})` on the
neighbourhood prompts), and per WILD context exact match and contains-as-a-word (``loc`` = agreement
with the pre-edit model's answer; ``loc_absolute`` = against the dataset answer).

Derived in notebook ``07_sequential_editing``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from crispedit_lite.evaluation.decoding import resolve_decodings
from crispedit_lite.evaluation.harness import run_harness
from crispedit_lite.evaluation.judge import make_judge
from crispedit_lite.evaluation.locality import answers_of, base_answers
from crispedit_lite.evaluation.probability import probability_evaluate
from crispedit_lite.evaluation.proxies import kl_to_base, perplexity, probe_accuracy, token_logprobs
from crispedit_lite.evaluation.teacher_forced import teacher_forced_evaluate
from crispedit_lite.evaluation.wild import wild_evaluate

__all__ = ["EVALS", "default_proxy_texts", "evaluate_run", "side_by_side"]

EVALS = ("wild", "teacher_forced", "probability", "proxies", "lm_eval")


def default_proxy_texts(n: int = 8, seed: int = 0, skip: int = 128) -> list[str]:
    """Held-out capability text: the next ``n`` distinct documents of the offline corpus's shuffle.

    With the same ``seed``, the K-FAC sample (the first ``n_capability <= skip`` documents of the same
    shuffle, :func:`crispedit_lite.data.capability.capability_texts`) and these texts share no document
    (the corpus repeats a few texts; repeats of the first ``skip`` are passed over).

    Derived in notebook ``06_crispedit_on_a_small_lm``.
    """
    from crispedit_lite.data.capability import capability_texts, offline_documents

    docs = list(capability_texts("offline", n=len(offline_documents(2000)), seed=seed))
    seen, out = set(docs[:skip]), []
    for d in docs[skip:]:
        if d not in seen and len(out) < n:
            out.append(d)
            seen.add(d)
    if len(out) < n:
        raise ValueError(f"default_proxy_texts: only {len(out)} held-out documents after skipping {skip}")
    return out


def evaluate_run(
    model: nn.Module,
    tokenizer: Any,
    requests: Sequence[Any],
    evals: Sequence[str] = ("wild", "teacher_forced", "proxies"),
    *,
    base: dict[str, Any] | None = None,
    judge: bool | Callable[[str, str, str], float] | None = False,
    progress: bool = True,
    contexts: Sequence[str] | None = None,
    specificity: str = "accuracy",
    proxy_texts: Sequence[str] | None = None,
    proxy_max_length: int = 128,
    probes: Sequence[tuple[str, str]] | None = None,
    max_new_tokens: int = 40,
    batch_size: int = 16,
    lm_eval_limit: int | None = 200,
    wild_decoding: str | Sequence[str] | None = None,
) -> dict[str, Any]:
    """Run the chosen evaluations; ``{"metrics", "generations", "state"}``.

    Args:
        evals: any of :data:`EVALS`. base: the result of this function on the unedited model, or
            ``None`` when this *is* the unedited model. judge: ``True`` for :func:`~.judge.make_judge`
            (needs ``OPENAI_API_KEY``), a callable judge, or ``False``/``None`` (exact match).
        contexts: WILD contexts; default ``("qa", "none")`` plus ``"chat"`` when the tokenizer has
            a chat template. specificity: teacher-forced Spec rule (``"nll_comparison"`` for
            CounterFact). proxy_texts: held-out capability text (default
            :func:`default_proxy_texts`); the base log-probs kept for the KL take
            ``4 * len(texts) * proxy_max_length * vocab`` bytes (≈ 200 MB for SmolLM2 at the
            defaults). probes: ``(question, answer)`` pairs for probe accuracy (contains-match in
            the first context). lm_eval_limit: examples per lm-eval task.
        wild_decoding: ``"official"`` (the paper's), ``"robust"``, ``"both"``, a list of them, or
            ``None`` (robust for a tokenizer with a chat template, else official). The first is the
            one in ``metrics["wild"]["scores"]``; with several, ``metrics["wild"]["by_decoding"]``
            has each one's scores and settings.

    Returns:
        ``metrics`` (JSON-ready scores ×100, perplexity, KL in nats; the "before" WILD entry keeps
        the base model's locality answers in ``base_answers``), ``generations`` (the WILD
        per-record answers of the first decoding; ``generations_by_decoding`` has all) and
        ``state`` (pre-edit answers, base log-probs, proxy texts).

    Derived in notebook ``06_crispedit_on_a_small_lm``.
    """
    evals = list(dict.fromkeys(evals))
    unknown = [e for e in evals if e not in EVALS]
    if unknown:
        raise ValueError(f"unknown evaluation(s) {unknown}; expected some of {list(EVALS)}")
    if judge is True:
        judge = make_judge()
        if judge is None:
            raise ValueError("judge=True needs an API key in OPENAI_API_KEY")
    judge = judge or None
    if contexts is None:
        contexts = ("qa", "none") + (("chat",) if getattr(tokenizer, "chat_template", None) else ())
    contexts = list(contexts)
    base_state = (base or {}).get("state", {})
    metrics: dict[str, Any] = {}
    generations: list[dict[str, Any]] = []
    by_decoding: dict[str, list[dict[str, Any]]] = {}
    state: dict[str, Any] = {}

    if "wild" in evals:
        decodings = resolve_decodings(wild_decoding, tokenizer)
        stored = base_answers(base)
        pre_all: dict[str, Any] = {}
        wild_by: dict[str, Any] = {}
        for d in decodings:
            pre = stored.get(d)
            if pre is not None and any(c not in pre for c in contexts):
                pre = None  # the base ran other contexts: no agreement for this decoding
            out = wild_evaluate(model, tokenizer, requests, contexts=contexts, judge=judge,
                                max_new_tokens=max_new_tokens, batch_size=batch_size,
                                pre_edit_locality=pre, progress=progress, decoding=d)
            wild_by[d] = {"scores": out["scores"], "settings": out["settings"]}
            by_decoding[d] = out["records"]
            # this run's locality answers are the pre-edit answers of the next run
            pre_all[d] = pre if pre is not None else answers_of(out["records"], contexts)
        first = decodings[0]
        metrics["wild"] = {**wild_by[first], "decoding": first}
        if len(decodings) > 1:
            metrics["wild"]["by_decoding"] = wild_by
        if base is None:
            metrics["wild"]["base_answers"] = pre_all
        generations = by_decoding[first]
        state["pre_edit_locality"] = pre_all[first]
        state["pre_edit_locality_by_decoding"] = pre_all
    if "teacher_forced" in evals:
        out = teacher_forced_evaluate(model, tokenizer, requests, specificity=specificity,
                                      batch_size=batch_size)
        metrics["teacher_forced"] = {"scores": out["scores"], "settings": out["settings"]}
    if "teacher_forced" in evals or "probability" in evals:
        out = probability_evaluate(model, tokenizer, requests, batch_size=batch_size)
        metrics["probability"] = {"scores": out["scores"], "settings": out["settings"]}
    if "proxies" in evals:
        texts = list(proxy_texts) if proxy_texts is not None else base_state.get("proxy_texts")
        texts = texts if texts is not None else default_proxy_texts()
        kw = {"max_length": proxy_max_length, "batch_size": max(1, batch_size // 4)}
        proxies: dict[str, Any] = {"n_texts": len(texts), "max_length": proxy_max_length,
                                   "perplexity": perplexity(model, tokenizer, texts, **kw)}
        if "base_logprobs" in base_state:
            state["base_logprobs"] = base_state["base_logprobs"]
            proxies["kl_to_base"] = kl_to_base(model, tokenizer, texts, base=state["base_logprobs"], **kw)
        else:
            proxies["kl_to_base"] = 0.0  # this is the base model
            state["base_logprobs"] = token_logprobs(model, tokenizer, texts, **kw)
        state["proxy_texts"] = texts
        if probes:
            res = probe_accuracy(model, tokenizer, probes, context=contexts[-1], scorer="contains",
                                 max_new_tokens=max_new_tokens, batch_size=batch_size)
            proxies["probe_accuracy"] = res["accuracy"]
            proxies["probe_context"] = res["context"]
        metrics["proxies"] = proxies
    if "lm_eval" in evals:
        metrics["lm_eval"] = run_harness(model, tokenizer, limit=lm_eval_limit)["scores"]
    metrics["side_by_side"] = side_by_side(metrics)
    return {"metrics": metrics, "generations": generations, "generations_by_decoding": by_decoding,
            "state": state}


def side_by_side(metrics: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """The metric families of one :func:`evaluate_run` pass as rows of ``rel`` / ``gen`` / ``loc``.

    Rows: ``teacher_forced`` (token accuracy; ``loc`` = Spec), ``probability`` (ROME/MEMIT test,
    joint log-probabilities), and per WILD decoding and context ``wild_{decoding}_{context}_em`` and
    ``..._contains`` (``loc`` = agreement with the pre-edit model, ``None`` on the unedited model;
    ``loc_nonempty`` = the same over prompts where the pre-edit answer is not empty, since two empty
    answers agree vacuously; ``loc_absolute`` = against the dataset answer). All ×100.

    Derived in notebook ``06_crispedit_on_a_small_lm``.
    """
    rows: dict[str, dict[str, float | None]] = {}
    if "teacher_forced" in metrics:
        s = metrics["teacher_forced"]["scores"]
        rows["teacher_forced"] = {"rel": s["rel"], "gen": s["gen"], "loc": s["spec"]}
    if "probability" in metrics:
        s = metrics["probability"]["scores"]
        rows["probability"] = {"rel": s["rel"], "gen": s["gen"], "loc": s["loc"]}
    wild = metrics.get("wild")
    if wild:
        for d, entry in (wild.get("by_decoding") or {wild["decoding"]: wild}).items():
            for c, s in entry["scores"].items():
                for kind in ("em", "contains"):
                    rows[f"wild_{d}_{c}_{kind}"] = {"rel": s[f"rel_{kind}"], "gen": s[f"gen_{kind}"],
                                                    "loc": s["loc_agreement"],
                                                    "loc_nonempty": s["loc_agreement_nonempty"],
                                                    "loc_absolute": s[f"loc_{kind}"]}
    return rows
