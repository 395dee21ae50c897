r"""Optional LLM judge for WILD answers through any OpenAI-compatible chat-completions endpoint.

CrispEdit scores WILD answers with ``gpt-4o-mini`` at temperature 0, an empty system prompt and a
SimpleQA-style grader prompt (paper Fig. 8, App. E; official code ``llm_judge``): the judge sees the
*raw* question (not the QA template), the gold target and the predicted answer, and replies with one
letter;
``"A"`` (CORRECT) scores :math:`1`, anything else :math:`0`.

**The prompt text below is a reconstruction**, not a verbatim copy: the copy of the paper this
project works from describes Fig. 8 but does not reproduce its text. It follows the structure of the
SimpleQA grader (Wei et al. 2024) in the two-grade form the CrispEdit code uses: the task statement,
examples of CORRECT and of INCORRECT answers with the reasons, the sample, and the instruction to
answer with the letter A or B alone. Judge scores from it are therefore comparable with the paper's
only up to the prompt wording; report them as such.

The judge is off unless an API key is given (argument or ``OPENAI_API_KEY``). Requests go through
``urllib`` (no dependency), or through an ``openai``-style client passed as ``client=``. Without a
judge, WILD falls back to SQuAD exact match (:func:`~crispedit_lite.evaluation.text.exact_match`).

Derived in notebook ``06_crispedit_on_a_small_lm``.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
from typing import Any

__all__ = ["JUDGE_PROMPT", "OpenAIJudge", "make_judge", "parse_grade"]

#: Reconstructed SimpleQA-style grader prompt (two grades, CrispEdit variant); see the module notes.
JUDGE_PROMPT = """\
Your task is to read a question, its gold target and a predicted answer, and to grade the predicted \
answer as either ["CORRECT", "INCORRECT"].

Here are examples of CORRECT predicted answers.
```
Question: Who were the first two people to walk on the Moon?
Gold target: Neil Armstrong and Buzz Aldrin
Predicted answer 1: buzz aldrin and neil armstrong
Predicted answer 2: The first two people to walk on the Moon were Neil Armstrong and Buzz Aldrin.
```
These predicted answers are CORRECT because:
    - they contain all of the essential information in the gold target;
    - nothing in them contradicts the gold target.

Here are examples of INCORRECT predicted answers.
```
Question: Who were the first two people to walk on the Moon?
Gold target: Neil Armstrong and Buzz Aldrin
Predicted answer 1: Neil Armstrong.
Predicted answer 2: Neil Armstrong, Buzz Aldrin and Michael Collins.
Predicted answer 3: Neil Armstrong and Buzz Aldrin, Neil Armstrong and Buzz Aldrin, Neil Armstrong \
(repeated answer)
```
These predicted answers are INCORRECT because:
    - a statement in the answer contradicts or leaves out part of the gold target, or the answer \
repeats itself.

Here is the sample to grade. Reply with CORRECT or INCORRECT only.

```
Question: {question}
Gold target: {target}
Predicted answer: {predicted_answer}
```

Using the gold target, grade the predicted answer to this question as one of:
A: CORRECT
B: INCORRECT

Return only the letter "A" or "B", with no other text."""


def parse_grade(reply: str | None) -> float:
    """``1.0`` for the grade ``A`` (CORRECT), else ``0.0``.

    The official code requires the reply to equal ``"A"``; we also accept surrounding whitespace,
    quotes or a final period (``" A."``), which a temperature-0 judge occasionally adds. Any other
    reply, ``"CORRECT"`` spelled out included, counts as not correct, as in the official code.

    Listed on the book page ``api``.
    """
    if reply is None:
        return 0.0
    return float(reply.strip().strip("\"'`").rstrip(".").strip() == "A")


class OpenAIJudge:
    """Callable ``judge(question, gold, prediction) -> float`` backed by a chat-completions endpoint.

    Args:
        api_key: the key (required; see :func:`make_judge` for the environment fallback).
        model: judge model (``gpt-4o-mini`` in the paper). base_url: an OpenAI-compatible API root
            (``https://api.openai.com/v1``, an OpenRouter or vLLM server, ...).
        timeout: seconds per request. max_retries: attempts per answer before the error propagates
            (a failed judge never silently becomes an exact-match score).
        client: an ``openai.OpenAI``-like object; when given, requests go through
            ``client.chat.completions.create`` instead of ``urllib``.
        prompt: the grader template with ``{question}``, ``{target}``, ``{predicted_answer}``.

    Listed on the book page ``api``.
    """

    def __init__(
        self,
        api_key: str,
        model: str = "gpt-4o-mini",
        base_url: str = "https://api.openai.com/v1",
        *,
        timeout: float = 60.0,
        max_retries: int = 3,
        retry_wait: float = 1.0,
        client: Any = None,
        prompt: str = JUDGE_PROMPT,
    ):
        if not api_key and client is None:
            raise ValueError("OpenAIJudge needs an api_key (or a client)")
        if max_retries < 1:
            raise ValueError("OpenAIJudge: max_retries must be at least 1")
        self.api_key, self.model, self.base_url = api_key, model, base_url.rstrip("/")
        self.timeout, self.max_retries, self.retry_wait = timeout, max_retries, retry_wait
        self.client, self.prompt = client, prompt
        self.name = f"llm_judge:{model}"

    def messages(self, question: str, gold: str, prediction: str) -> list[dict[str, str]]:
        """The chat messages sent: an empty system prompt and the filled grader prompt."""
        content = self.prompt.format(question=question, target=gold, predicted_answer=prediction)
        return [{"role": "system", "content": ""}, {"role": "user", "content": content}]

    def _request(self, messages: list[dict[str, str]]) -> str:
        if self.client is not None:
            out = self.client.chat.completions.create(
                model=self.model, messages=messages, temperature=0.0, timeout=self.timeout
            )
            return out.choices[0].message.content
        body = json.dumps({"model": self.model, "messages": messages, "temperature": 0.0}).encode()
        req = urllib.request.Request(
            f"{self.base_url}/chat/completions", data=body, method="POST",
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {self.api_key}"},
        )
        with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310 (user-chosen URL)
            payload = json.loads(resp.read().decode("utf-8"))
        try:
            return payload["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError) as exc:
            raise ValueError(f"judge endpoint returned an unexpected payload: {str(payload)[:200]}") from exc

    def __call__(self, question: str, gold: str, prediction: str) -> float:
        """Grade one answer: ``1.0`` if the judge replies ``A``, else ``0.0``."""
        messages = self.messages(question, gold, prediction)
        for attempt in range(1, self.max_retries + 1):
            try:
                return parse_grade(self._request(messages))
            except Exception:  # network, HTTP, payload or client errors: retry, then propagate
                if attempt == self.max_retries:
                    raise
                time.sleep(self.retry_wait)
        raise AssertionError("unreachable")


def make_judge(
    api_key: str | None = None,
    model: str = "gpt-4o-mini",
    base_url: str | None = None,
    **kwargs: Any,
) -> OpenAIJudge | None:
    """An :class:`OpenAIJudge`, or ``None`` (exact-match fallback) when no key is available.

    The key is ``api_key`` or the ``OPENAI_API_KEY`` environment variable; the endpoint is
    ``base_url``, ``OPENAI_BASE_URL``, or OpenAI's.

    Listed on the book page ``api``.
    """
    key = api_key or os.environ.get("OPENAI_API_KEY")
    if not key:
        return None
    url = base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
    return OpenAIJudge(key, model=model, base_url=url, **kwargs)
