r"""Evaluate edits and what they cost: WILD, teacher-forced, an optional LLM judge, capability.

* :mod:`~crispedit_lite.evaluation.wild`: generation-based Rel / Gen / Loc (Yang et al. 2025), the
  metric of CrispEdit's main tables, in the "QA" and "no" contexts, scored by an LLM judge
  (:mod:`~crispedit_lite.evaluation.judge`) or SQuAD exact match (:mod:`~crispedit_lite.evaluation.text`);
  locality both against the dataset answer and as agreement with the pre-edit model.
  :mod:`~crispedit_lite.evaluation.decoding`: the contexts and the two decodings, the paper's
  (``"official"``) and one for small instruct models (``"robust"``: chat template in the QA context,
  stop strings after the first non-blank character).
* :mod:`~crispedit_lite.evaluation.teacher_forced`: token-level Rel / Gen / Spec as MEMIT and
  EasyEdit define them (CrispEdit Table 3); :mod:`~crispedit_lite.evaluation.probability`: the
  ROME/MEMIT probability test :math:`P(\text{new}) > P(\text{old})`.
* :mod:`~crispedit_lite.evaluation.runner`: :func:`evaluate_run`, all of the above before and after
  an edit, for the command line and the notebooks.
* :mod:`~crispedit_lite.evaluation.proxies`: offline capability proxies for CPU runs
  (perplexity, KL to the base model, a probe set); :mod:`~crispedit_lite.evaluation.harness`: the
  paper's lm-eval benchmarks for GPU runs.

Edit records are read structurally (:class:`~crispedit_lite.evaluation.records.EditRecord`), so
``crispedit_lite.data.EditRequest`` or any object with the same attributes works.

Derived in notebook ``06_crispedit_on_a_small_lm``.
"""

from crispedit_lite.evaluation.decoding import WILD_DECODINGS, default_decoding, resolve_decodings
from crispedit_lite.evaluation.generation import greedy_generate
from crispedit_lite.evaluation.harness import (
    PAPER_TASKS,
    HarnessTask,
    extract_harness_metrics,
    harness_config,
    run_harness,
)
from crispedit_lite.evaluation.judge import JUDGE_PROMPT, OpenAIJudge, make_judge, parse_grade
from crispedit_lite.evaluation.locality import base_answers
from crispedit_lite.evaluation.probability import probability_evaluate, sequence_logprobs
from crispedit_lite.evaluation.proxies import (
    kl_to_base,
    perplexity,
    probe_accuracy,
    select_known_probes,
    token_logprobs,
)
from crispedit_lite.evaluation.records import EditRecord
from crispedit_lite.evaluation.runner import EVALS, default_proxy_texts, evaluate_run, side_by_side
from crispedit_lite.evaluation.teacher_forced import (
    score_targets,
    target_nll,
    target_token_accuracy,
    teacher_forced_evaluate,
)
from crispedit_lite.evaluation.text import (
    STOP_STRINGS,
    contains_match,
    exact_match,
    normalize_answer,
    truncate_at_stop,
)
from crispedit_lite.evaluation.wild import (
    CHAT_SYSTEM_PROMPT,
    CONTEXTS,
    QA_TEMPLATE,
    format_prompt,
    locality_agreement,
    pre_edit_locality,
    wild_evaluate,
    wild_generate,
)

__all__ = [
    "CHAT_SYSTEM_PROMPT", "CONTEXTS", "EVALS", "EditRecord", "HarnessTask", "JUDGE_PROMPT",
    "OpenAIJudge", "PAPER_TASKS", "QA_TEMPLATE", "STOP_STRINGS", "contains_match", "default_proxy_texts",
    "evaluate_run", "exact_match", "extract_harness_metrics", "format_prompt", "greedy_generate",
    "harness_config", "kl_to_base", "locality_agreement", "make_judge", "normalize_answer",
    "parse_grade", "perplexity", "pre_edit_locality", "probe_accuracy", "run_harness", "score_targets",
    "select_known_probes", "target_nll", "target_token_accuracy", "teacher_forced_evaluate",
    "token_logprobs", "truncate_at_stop", "wild_evaluate", "WILD_DECODINGS", "base_answers",
    "default_decoding", "probability_evaluate", "resolve_decodings", "sequence_logprobs", "side_by_side",
    "wild_generate",
]
