r"""Larger parameter sets of chapters 6-10 for a free Colab T4 (16 GB), beside their CPU defaults.

Each chapter's ``parameters`` cell holds the CPU defaults the book is built with; the markdown cell
after it shows the chapter's entry of :data:`T4`, a larger run that fits a T4. It is not run in the
book's build (there is no GPU there), so its numbers are the reader's to measure; the chapters' checks
are written to hold for both sets (orderings, ratios, or thresholds derived from the parameters).

The offline capability corpus has 280 documents, and the held-out proxy texts are taken after the
first 128 of its shuffle (:func:`crispedit_lite.evaluation.default_proxy_texts`), so no set uses more
than 128 capability texts: every proxy text stays out of the K-FAC sample.

Derived in notebook ``07_sequential_editing``.
"""

from __future__ import annotations

import copy
from typing import Any

__all__ = ["T4", "TOKENS_PER_EDIT", "expected_edit_share", "t4_parameters"]

#: Chapter (notebook name) -> parameters that differ from its CPU defaults on a free Colab T4.
T4: dict[str, dict[str, Any]] = {
    "06_crispedit_on_a_small_lm": {
        "MODEL": "smollm2-135m-instruct", "N_EDITS": 48, "N_PROBES": 24, "N_CAPABILITY": 128,
        "CAPABILITY_MAX_LENGTH": 256, "EPOCHS": 25, "BATCH_SIZE": 16, "LR": 5e-4, "N_CAPS": [8, 32, 128],
        "LIVE_SWEEPS": True,
    },
    "07_sequential_editing": {
        "MODEL": "smollm2-135m-instruct", "N_CHUNKS": 6, "CHUNK_SIZE": 16, "EPOCHS": 25,
        "N_CAPABILITY": 128, "CAPABILITY_MAX_LENGTH": 256, "N_PROXY": 16,
    },
    "08_one_framework": {
        "MODEL": "smollm2-135m-instruct", "N_PROP1_TEXTS": 8, "PROP1_TOKENS": 64, "N_EDITS": 24,
        "EPOCHS": 25, "N_CAPABILITY": 128, "CAPABILITY_MAX_LENGTH": 256,
    },
    "09_reproduce_llama3_8b": {
        "MODEL": "smollm2-135m-instruct", "N_EDITS": 100, "N_CAPABILITY": 128, "EPOCHS": 25,
        "BATCH_SIZE": 16, "DTYPE": "float32",
    },
    "10_reproduce_qwen2_5_1_5b": {
        "MODEL": "smollm2-135m-instruct", "N_EDITS": 100, "N_CAPABILITY": 30, "CHUNK_SIZE": 25,
        "EPOCHS": 25, "BATCH_SIZE": 16, "DTYPE": "float32",
    },
}

#: Labelled tokens of one bundled edit's full text ``prompt + " " + target`` in SmolLM2's tokenizer
#: (every token but the first): about 7 (27, 28 and 31 for chapter 7's three chunks of four).
TOKENS_PER_EDIT = 7.0


def t4_parameters(chapter: str) -> dict[str, Any]:
    """A copy of the T4 set of ``chapter`` (e.g. ``"07_sequential_editing"``).

    Derived in notebook ``06_crispedit_on_a_small_lm``.
    """
    if chapter not in T4:
        raise KeyError(f"t4_parameters: no T4 set for chapter {chapter!r}; chapters: {sorted(T4)}")
    return copy.deepcopy(T4[chapter])


def expected_edit_share(n_edits: int, n_capability: int, capability_max_length: int,
                        tokens_per_edit: float = TOKENS_PER_EDIT) -> float:
    r"""The edits' share of CrispEdit-Seq's pooled K-FAC tokens, predicted from the parameters.

    A capability text of at least ``capability_max_length`` tokens contributes
    ``capability_max_length - 1`` labelled tokens; an edit about ``tokens_per_edit``. So

    .. math:: \frac{n_{\rm edits} t}{n_{\rm edits} t + n_{\rm cap}(L - 1)}.

    Derived in notebook ``07_sequential_editing``.
    """
    if min(n_edits, n_capability) < 1 or capability_max_length < 2:
        raise ValueError(f"expected_edit_share: n_edits={n_edits} and n_capability={n_capability} must be "
                         f"at least 1, capability_max_length={capability_max_length} at least 2")
    edits = n_edits * tokens_per_edit
    return edits / (edits + n_capability * (capability_max_length - 1))
