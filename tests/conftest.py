"""Shared pytest set-up: notebook markers, the nbval sanitize file, a grad-mode guard, shared fixtures.

The fixtures used by more than one folder are here: ``model`` and ``tok`` (the tiny Llama and its
word-level tokenizer of the editing tests, also used by ``fastproject/`` and ``teaching/``) and
``tokenizer_dir`` (a word-level tokenizer on disk for the command-line runs of ``reproduction/`` and
``cli/``). Helpers that are not fixtures are in ``tests/helpers.py``; ``tests/`` is a package, so test
modules import them as ``from tests.helpers import ...`` and files in different folders may share a name.

The notebooks themselves are collected by nbval (``--nbval-lax`` in ``pyproject.toml``'s ``addopts``,
``notebooks`` in ``testpaths``): each notebook is one collector and each cell one test item, run in a
single kernel of this environment (``--nbval-current-env``) whose working directory is ``notebooks/``.
Here those items get the ``notebook`` and ``slow`` markers, so ``pytest -m "not notebook"`` skips them
without starting a kernel.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from importlib import resources
from pathlib import Path

import pytest
import torch

from crispedit_lite.models import random_init_model
from tests.helpers import SPECIALS, tiny_tokenizer, word_tokenizer

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def pytest_configure(config: pytest.Config) -> None:
    # addopts gives the sanitize file relative to the repository root; make it work from any cwd.
    sanitize = getattr(config.option, "nbval_sanitize_with", None)
    if sanitize and not Path(sanitize).is_absolute() and not Path(sanitize).exists():
        candidate = config.rootpath / sanitize
        if candidate.exists():
            config.option.nbval_sanitize_with = str(candidate)


@pytest.fixture(autouse=True)
def _grad_mode_is_not_leaked(request: pytest.FixtureRequest):
    """Fail the test that leaves torch's (global, thread-local) grad mode disabled, and restore it.

    A ``with torch.no_grad():`` around a ``yield`` in a generator that is not exhausted keeps grad mode
    off in the caller; without this guard every later test that backpropagates fails mysteriously.
    """
    before = torch.is_grad_enabled()
    yield
    if torch.is_grad_enabled() != before:
        torch.set_grad_enabled(before)
        pytest.fail(
            f"{request.node.nodeid} changed torch's global grad mode (enabled={before} before, "
            f"{not before} after); look for torch.no_grad() around a yield, or set_grad_enabled"
        )


def _is_nbval_item(item: pytest.Item) -> bool:
    return Path(str(item.path)).suffix == ".ipynb"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _is_nbval_item(item):
            item.add_marker(pytest.mark.notebook)
            item.add_marker(pytest.mark.slow)


# --- shared fixtures ---------------------------------------------------------------------------------


@pytest.fixture()
def model():
    """The randomly initialised tiny Llama (float64, seed 0), fresh for each test."""
    return random_init_model("tiny-llama", dtype=torch.float64, seed=0)


@pytest.fixture(scope="module")
def tok():
    """The editing tests' word-level tokenizer (``tests.helpers.tiny_tokenizer``)."""
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    """A word-level tokenizer over the bundled edit set's most frequent words, saved to a folder."""
    text = resources.files("crispedit_lite").joinpath("resources/smollm2_counterfacts.json").read_text()
    words = Counter(re.findall(r"\w+|[^\w\s]", " ".join(json.dumps(r) for r in json.loads(text)["records"])))
    vocab = SPECIALS + [w for w, _ in words.most_common(500 - len(SPECIALS))]
    out = tmp_path_factory.mktemp("tok")
    word_tokenizer(vocab).save_pretrained(out)
    return str(out)
