"""The evaluation tests' tokenizer: here ``tok`` is :func:`tests.helpers.qa_tokenizer`, not the editing one.

The evaluation tests run on the question-answering vocabulary (``tests.helpers.QA_WORDS``) with
:func:`tests.helpers.tiny_model` and :func:`tests.helpers.constant_model`; this ``tok`` overrides the
editing tests' fixture of ``tests/conftest.py`` for every module under ``tests/evaluation``.
"""

from __future__ import annotations

import pytest

from tests.helpers import qa_tokenizer


@pytest.fixture(scope="module")
def tok():
    """The word-level QA tokenizer (BOS added, ``<pad>`` on the right), one per test module."""
    return qa_tokenizer()
