"""Shared pytest set-up: notebook markers, the nbval sanitize file, a grad-mode guard, shared fixtures.

The fixtures used by more than one folder are here: ``model`` and ``tok`` (the tiny Llama and its
word-level tokenizer of the editing tests, also used by ``fastproject/`` and ``teaching/``) and
``tokenizer_dir`` (a word-level tokenizer on disk for the command-line runs of ``reproduction/`` and
``cli/``). Helpers that are not fixtures are in ``tests/helpers.py``; ``tests/`` is a package, so test
modules import them as ``from tests.helpers import ...`` and files in different folders may share a name.

The notebooks themselves are collected by nbval (``--nbval-lax`` in ``pyproject.toml``'s ``addopts``,
``notebooks`` in ``testpaths``): each notebook is one collector and each cell one test item, run in a
single kernel of this environment (``--nbval-current-env``). Here those items get the ``notebook`` and
``slow`` markers, so ``pytest -m "not notebook"`` skips them without starting a kernel, and their kernels
run as on Colab: their working directory is a folder of copies of the chapters outside the checkout,
and an audit hook fails any read of a repository file (``tests/book/notebook_checks.py``). This costs no
second execution: it is nbval's one run of every chapter.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections import Counter
from importlib import resources
from pathlib import Path

import matplotlib
import pytest
import torch

from crispedit_lite.models import random_init_model
from tests.helpers import ROOT, SPECIALS, tiny_tokenizer, word_tokenizer

# Library tests draw in this process without a display: Agg here. The notebook kernels that nbval starts
# inherit this process's environment, and ipykernel installs its inline backend (the figures' PNG
# outputs) only when MPLBACKEND is unset, so it is removed from the environment, not set.
matplotlib.use("Agg")
os.environ.pop("MPLBACKEND", None)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def _share_the_cores() -> None:
    """Under ``pytest -n N`` (``make test``), give each worker its share of the cores, at least one thread.

    Two workers with two BLAS threads each on two cores would oversubscribe them; the share also goes to
    the processes a worker starts (notebook kernels, command-line runs) through ``OMP_NUM_THREADS``. Every
    check of the suite holds at any thread count (the notebooks' outputs are compared with tolerances).
    """
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    if workers > 1 and "OMP_NUM_THREADS" not in os.environ:
        share = max(1, (os.cpu_count() or 1) // workers)
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(share)
        torch.set_num_threads(share)


_share_the_cores()


def pytest_configure(config: pytest.Config) -> None:
    if not config.pluginmanager.has_plugin("crispedit-notebook-guard"):
        config.pluginmanager.register(_NotebookKernelGuard(), "crispedit-notebook-guard")
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


class _NotebookKernelGuard:
    """nbval's kernels start outside the checkout, guarded against reading it (notebook_checks.py).

    A plugin registered for the whole session: a hook of this conftest alone would reach only the items
    under ``tests/``, not the notebooks that nbval collects from ``notebooks/``.
    """

    def __init__(self) -> None:
        self.base: Path | None = None
        self.env: dict[str, str] = {}

    def environment(self) -> dict[str, str]:
        if self.base is None:
            from tests.book.notebook_checks import guard_environment

            self.base = Path(tempfile.mkdtemp(prefix="crispedit-notebooks-"))
            self.env = guard_environment(ROOT, self.base)
        return self.env

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_setup(self, item: pytest.Item):
        """nbval starts a notebook's kernel while setting up its first cell: with the guard's environment."""
        if not _is_nbval_item(item):
            yield
            return
        env = self.environment()
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            yield
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        if self.base is not None:
            shutil.rmtree(self.base, ignore_errors=True)


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
