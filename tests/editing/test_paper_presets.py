"""crispedit_lite.editing.paper_presets: the paper's (n, gamma) by model, method and dataset (Tables 2, 4, 5).
"""

from __future__ import annotations

import pytest

from crispedit_lite.editing import paper_config
from crispedit_lite.editing.paper_presets import paper_dataset, paper_model, paper_values


def test_paper_values_follow_the_papers_tables():
    assert paper_values("crispedit", "wiki")["n_capability"] == 10_000  # LLaMA-3-8B, Table 2
    assert paper_values("crispedit", "counterfact", "meta-llama/Meta-Llama-3-8B-Instruct")["gamma"] == 0.9
    q = lambda m, d: paper_values(m, d, "random:qwen2.5-1.5b-shape")  # noqa: E731
    pair = lambda v: (v["n_capability"], v["gamma"])  # noqa: E731
    assert pair(q("crispedit", "counterfact")) == (1000, 0.9)  # Table 5
    assert pair(q("crispedit_seq", "wiki")) == (30, 0.995)
    other = paper_values("crispedit", "zsre", "smollm2-135m-instruct")
    assert pair(other) == (10_000, 0.7) and "not one of the paper's" in other["model_basis"]
    assert paper_config("crispedit", "wiki", model="Qwen/Qwen2.5-1.5B-Instruct", gamma=0.5).gamma == 0.5
    with pytest.raises(ValueError, match="dataset must be one of"):
        paper_values("crispedit", "imagenet")


def test_names_of_datasets_and_models():
    assert [paper_dataset(n) for n in ("wiki", "WikiBigEdit", "zsre", "ZsRE-10k", "CF", "mine", None)] == \
        ["wikibigedit", "wikibigedit", "zsre", "zsre10k", "counterfact", None, None]
    assert paper_model("Qwen/Qwen2.5-1.5B-Instruct") == "qwen2.5-1.5b"
    assert paper_model("random:qwen2.5-1.5b-shape") == "qwen2.5-1.5b"
    assert paper_model("meta-llama/Meta-Llama-3-8B-Instruct") == "llama3-8b"
    assert paper_model("Qwen/Qwen2.5-7B-Instruct") is None and paper_model(None) is None
