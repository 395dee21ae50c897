r"""WILD prompt contexts and the two decodings: the paper's ("official") and one for small instruct models.

WILD (Yang et al. 2025; CrispEdit §4.2, App. E; official code
``evaluate/evaluate_utils.py``) feeds the question to the model in a
*context* and decodes greedily, :math:`\hat y_t = \arg\max_v p_\theta(v \mid c(x), \hat y_{<t})`, for
at most 40 tokens, stopping at ``"."``, a newline or EOS. The contexts :math:`c`:

* ``"qa"``: the template ``"Please answer the question:\n\nQ: {question}\nA:"`` (``qa_inst``);
* ``"none"``: the question verbatim;
* ``"chat"``: a system prompt and the QA template through the tokenizer's chat template
  (``chat_temp``; in the official code, not in the paper's tables).

Two decodings (:data:`WILD_DECODINGS`):

* ``"official"``: the paper's: the bare QA template, stop strings from the first generated token.
* ``"robust"``: for an instruct model (the tokenizer has a chat template) the ``"qa"`` context sends
  the QA template as the user turn of the chat template (no system prompt of ours: the template's
  own default, if any), and stop strings apply only after the first non-blank character
  (``stop_after_first_token``). The embedded SmolLM2-135M-Instruct answers the bare QA template with
  EOS ("The capital of Japan is" :math:`\to` ``<|im_end|>``) or after a blank line ("Who wrote
  Hamlet?" :math:`\to` ``"\n\nThe answer is: Hamlet."``, which the official stop rule cuts to
  ``""``); the robust decoding removes both artefacts and is the default for instruct models.
  Without a chat template only the stop rule changes.

Derived in notebook ``06_crispedit_on_a_small_lm``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["QA_TEMPLATE", "CHAT_SYSTEM_PROMPT", "CONTEXTS", "WILD_DECODINGS", "format_prompt",
           "default_decoding", "resolve_decodings", "decoding_settings"]

#: The "QA context" template of WILD (``qa_inst`` in the CrispEdit code).
QA_TEMPLATE = "Please answer the question:\n\nQ: {question}\nA:"
#: System prompt of the ``"chat"`` context (``chat_temp`` in the CrispEdit code).
CHAT_SYSTEM_PROMPT = "You are a helpful, respectful and honest assistant."
#: Context name -> template; ``"none"`` passes the prompt verbatim; ``"chat"`` wraps the QA template
#: in the tokenizer's chat template after :data:`CHAT_SYSTEM_PROMPT`.
CONTEXTS: dict[str, str] = {"qa": QA_TEMPLATE, "none": "{question}", "chat": QA_TEMPLATE}
#: The WILD decodings: the paper's, and the one for small instruct models (see the module docstring).
WILD_DECODINGS: tuple[str, ...] = ("official", "robust")


def _has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def _chat(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    bos = tokenizer.bos_token
    if bos and text.startswith(bos) and tokenizer.bos_token_id in tokenizer("x").input_ids:
        text = text[len(bos) :]  # the tokenizer adds BOS itself: keep one
    return text


def _check_decoding(decoding: str) -> None:
    if decoding not in WILD_DECODINGS:
        raise ValueError(f"unknown WILD decoding {decoding!r}; expected one of {list(WILD_DECODINGS)}")


def format_prompt(question: str, context: str, tokenizer: Any = None, decoding: str = "official") -> str:
    """The model input for ``question`` in a WILD context (``"qa"``, ``"none"`` or ``"chat"``).

    ``"chat"`` needs the ``tokenizer`` (with a chat template); a BOS token that the template writes
    and the tokenizer would add again is dropped from the text, so the prompt has one BOS. With
    ``decoding="robust"`` and a tokenizer that has a chat template, ``"qa"`` is the QA template as the
    user turn of the chat template.

    Listed on the book page ``api``.
    """
    if context not in CONTEXTS:
        raise ValueError(f"unknown WILD context {context!r}; expected one of {sorted(CONTEXTS)}")
    _check_decoding(decoding)
    text = CONTEXTS[context].format(question=question)
    if context == "qa" and decoding == "robust" and _has_chat_template(tokenizer):
        return _chat(tokenizer, [{"role": "user", "content": text}])
    if context != "chat":
        return text
    if tokenizer is None or not _has_chat_template(tokenizer):
        raise ValueError("WILD context 'chat' needs a tokenizer with a chat template")
    return _chat(tokenizer, [{"role": "system", "content": CHAT_SYSTEM_PROMPT},
                             {"role": "user", "content": text}])


def default_decoding(tokenizer: Any) -> str:
    """``"robust"`` for an instruct model (the tokenizer has a chat template), else ``"official"``.

    Listed on the book page ``api``.
    """
    return "robust" if _has_chat_template(tokenizer) else "official"


def resolve_decodings(decoding: str | Sequence[str] | None, tokenizer: Any) -> list[str]:
    """The decodings to run, the reported one first.

    ``None``: :func:`default_decoding`; ``"both"``: the default, then the other; a name or a list of
    names from :data:`WILD_DECODINGS`.

    Listed on the book page ``api``.
    """
    first = default_decoding(tokenizer)
    if decoding is None:
        return [first]
    if decoding == "both":
        return [first, *(d for d in WILD_DECODINGS if d != first)]
    names = [decoding] if isinstance(decoding, str) else list(decoding)
    if not names:
        raise ValueError("wild_decoding: expected a decoding name, 'both' or a non-empty list")
    for d in names:
        _check_decoding(d)
    return list(dict.fromkeys(names))


def decoding_settings(decoding: str, tokenizer: Any) -> dict[str, Any]:
    """What a decoding does with this tokenizer (recorded next to the scores).

    Listed on the book page ``api``.
    """
    _check_decoding(decoding)
    robust = decoding == "robust"
    return {"wild_decoding": decoding, "stop_after_first_token": robust,
            "qa_chat_template": robust and _has_chat_template(tokenizer)}
