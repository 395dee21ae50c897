"""The T4 parameter sets of chapters 6-10 agree with the chapters and pass their parameter-tuned checks.

The sets cannot be *run* here (they are for a GPU). What a CPU can check cheaply, and what would break a
reader's Colab run, is everything the chapters' checks compute from the parameters alone:

* each chapter shows exactly its entry of ``crispedit_lite.teaching.parameter_sets.T4``, and every name in
  it is a parameter of that chapter;
* the held-out proxy texts never overlap the K-FAC sample (chapter 6 asserts it; chapters 7-9 measure the
  KL to the base model on them);
* chapters 6 and 7 use their committed runs (the sweeps; the chunked MEMIT runs) only when their
  settings are the committed run's (the book's defaults), and run them live for the T4 set;
* chapter 7's edit-share check, with the real token counts of each set (tokenizer only, no training):
  the counts this test computes for the defaults are the ones the chapter printed from its K-FAC run;
* the settings that chapter 6's sweep check and chapter 8's editable-fraction check look up exist
  (``GAMMA`` among ``GAMMAS``), and there are enough bundled edits for each set.
"""

from __future__ import annotations

import ast
import json
import re

import pytest

from crispedit_lite.teaching.parameter_sets import T4, expected_edit_share, t4_parameters
from tests.helpers import ROOT

CHAPTERS = sorted(T4)


def _notebook(chapter: str) -> dict:
    return json.loads((ROOT / "notebooks" / f"{chapter}.ipynb").read_text(encoding="utf-8"))


def _src(cell: dict) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def _defaults(chapter: str) -> dict:
    """The chapter's parameters cell, executed (its defaults; DEVICE is "cpu" without a GPU)."""
    nb = _notebook(chapter)
    cell = next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    namespace: dict = {}
    exec(compile("import torch\n" + _src(cell), f"{chapter}:parameters", "exec"), namespace)  # noqa: S102
    names = {t.id for node in ast.parse(_src(cell)).body if isinstance(node, ast.Assign)
             for t in node.targets if isinstance(t, ast.Name)}
    return {k: namespace[k] for k in names}


def _settings(chapter: str, which: str) -> dict:
    params = _defaults(chapter)
    return params | t4_parameters(chapter) if which == "t4" else params


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_each_chapter_shows_its_t4_set(chapter):
    nb = _notebook(chapter)
    notes = [_src(c) for c in nb["cells"] if c["cell_type"] == "markdown" and "Colab T4" in _src(c)]
    assert len(notes) == 1, f"{chapter}: one markdown cell presents the T4 set"
    note = notes[0]
    assert f't4_parameters("{chapter}")' in note and "not run in the book's build" in note
    block = re.search(r"```python\n(.*?)```", note, re.S)
    assert block, f"{chapter}: the T4 note holds the set as a python block"
    shown: dict = {}
    exec(block.group(1), {}, shown)  # noqa: S102
    assert shown == T4[chapter], f"{chapter}: the note shows {shown}, the library has {T4[chapter]}"


def test_every_chapter_with_a_t4_note_has_a_set():
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        nb = json.loads(path.read_text(encoding="utf-8"))
        if any(c["cell_type"] == "markdown" and "Colab T4" in _src(c) for c in nb["cells"]):
            assert path.stem in T4, f"{path.name} presents a T4 set that parameter_sets.T4 lacks"


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_t4_sets_change_parameters_of_their_chapter(chapter):
    defaults = _defaults(chapter)
    for name, value in T4[chapter].items():
        assert name in defaults, f"{chapter}: {name} is not a parameter of the chapter"
        assert type(value) is type(defaults[name]) or {type(value), type(defaults[name])} <= {int, float}, (
            f"{chapter}: {name} = {value!r} has another type than the default {defaults[name]!r}")
    with pytest.raises(KeyError, match="no T4 set"):
        t4_parameters("12_no_such_chapter")


@pytest.mark.parametrize("which", ["defaults", "t4"])
@pytest.mark.parametrize("chapter", CHAPTERS)
def test_proxy_texts_stay_out_of_the_kfac_sample(chapter, which):
    from crispedit_lite.data.capability import capability_texts
    from crispedit_lite.evaluation import default_proxy_texts

    p = _settings(chapter, which)
    n_proxy = p.get("N_PROXY_TEXTS", p.get("N_PROXY", 8))  # chapters 9-10: the experiment's default, 8
    caps = capability_texts("offline", p["N_CAPABILITY"], seed=p["SEED"])
    proxies = default_proxy_texts(n_proxy, seed=p["SEED"])
    assert not set(caps) & set(proxies), f"{chapter} ({which}): proxy texts inside the K-FAC sample"


@pytest.mark.parametrize("which", ["defaults", "t4"])
def test_chapter6_uses_the_committed_sweeps_only_for_their_settings(which):
    from crispedit_lite.reproduction.committed import committed_run
    from crispedit_lite.teaching.sweeps import record_differences

    p = _settings("06_crispedit_on_a_small_lm", which)
    differ = record_differences(committed_run(p["SWEEPS_JSON"]), p)
    if which == "defaults":
        assert differ == {}, f"the book's defaults no longer match the committed sweeps: {differ}"
    else:
        assert differ and p["LIVE_SWEEPS"], "the T4 set must run the sweeps live"
    assert p["GAMMA"] in p["GAMMAS"], "the sweep check compares the GAMMA point with the chapter's run"


@pytest.mark.parametrize("which", ["defaults", "t4"])
def test_chapter7_uses_the_committed_memit_runs_only_for_their_settings(which):
    from crispedit_lite.reproduction.committed import committed_run
    from crispedit_lite.teaching.chunk_scores import record_differences

    p = _settings("07_sequential_editing", which)
    record = committed_run(p["MEMIT_JSON"])
    differ = record_differences(record, p)
    if which == "defaults":
        assert differ == {}, f"the book's defaults no longer match the committed MEMIT runs: {differ}"
        assert len(record["chunks"]) == p["N_CHUNKS"] and not p["LIVE_MEMIT"]
    else:
        assert differ, "the T4 set must run MEMIT live"


@pytest.mark.parametrize("which", ["defaults", "t4"])
def test_enough_bundled_edits(which):
    from crispedit_lite.data import load_edits

    n = len(load_edits("smollm2-counterfacts"))
    p6, p7, p8 = (_settings(ch, which) for ch in CHAPTERS[:3])
    assert p6["N_EDITS"] + p6["N_PROBES"] <= n
    assert p7["N_CHUNKS"] * p7["CHUNK_SIZE"] <= n and p8["N_EDITS"] <= n
    assert p8["GAMMA"] in p8["GAMMAS"], "chapter 8 compares the edits' editable fractions with its sweep"


@pytest.fixture(scope="module")
def tokenizer():
    from crispedit_lite.models import load_model

    return load_model("smollm2-135m-instruct")[1]


def _labelled(batches) -> int:
    """Terms of a K-FAC average with labels "true": next-token positions whose label is not -100."""
    return sum(int((b["labels"][:, 1:] != -100).sum()) for b in batches)


@pytest.mark.parametrize("which", ["defaults", "t4"])
def test_chapter7_edit_share_check_holds(which, tokenizer):
    import torch

    from crispedit_lite.data import load_edits
    from crispedit_lite.data.batches import edit_kfac_batches, tokenize_capability
    from crispedit_lite.data.capability import capability_texts

    p = _settings("07_sequential_editing", which)
    n_edits = p["N_CHUNKS"] * p["CHUNK_SIZE"]
    requests = load_edits("smollm2-counterfacts", limit=n_edits, seed=p["SEED"])
    order = torch.randperm(n_edits, generator=torch.Generator().manual_seed(p["SEED"])).tolist()
    chunks = [[requests[i] for i in order[c:c + p["CHUNK_SIZE"]]] for c in range(0, n_edits, p["CHUNK_SIZE"])]
    caps = capability_texts("offline", p["N_CAPABILITY"], seed=p["SEED"])
    n_tok = [_labelled(tokenize_capability(caps, tokenizer, max_length=p["CAPABILITY_MAX_LENGTH"]))]
    n_tok += [_labelled(edit_kfac_batches(ch, tokenizer, batch_size=8, max_length=p["CAPABILITY_MAX_LENGTH"]))
              for ch in chunks]
    if which == "defaults":  # the chapter's K-FAC printed these counts: the counting here is the K-FAC's
        assert n_tok == [4064, 27, 28, 31]
    share = sum(n_tok[1:]) / sum(n_tok)
    expected = expected_edit_share(n_edits, p["N_CAPABILITY"], p["CAPABILITY_MAX_LENGTH"])
    assert 0.5 * expected < share < min(2 * expected, 0.1), (which, share, expected, n_tok)


def test_expected_edit_share():
    assert expected_edit_share(12, 32, 128) == pytest.approx(84 / (84 + 32 * 127))
    assert expected_edit_share(12, 32, 128, tokens_per_edit=0.0) == 0.0
    with pytest.raises(ValueError, match="capability_max_length"):
        expected_edit_share(12, 32, 1)
