"""teaching.chunk_scores on the tiny Llama: chapter 7's per-chunk scores and section 7.7's runs.

What must hold whatever the edits do: a score row is the teacher-forced scores averaged per chunk; both
MEMIT runs walk the library's chunk order and restore the base weights bit for bit; their first chunk is
the same batch edit (identical first rows), the cache being the only difference after it; and a
committed record stands for a chapter run only when every recorded parameter matches.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crispedit_lite.data import EditRequest
from crispedit_lite.editing.loops.sequential import chunk_requests
from crispedit_lite.evaluation import teacher_forced_evaluate, token_logprobs
from crispedit_lite.teaching.chunk_scores import (
    MEMIT_RUNS,
    RECORD_KEYS,
    memit_chunk_runs,
    record_differences,
    score_chunks,
)
from tests.helpers import CACHE_TEXTS, LAYERS, weights_of

REQUESTS = [EditRequest("the capital of france is", "rome", subject="france", case_id=0,
                        rephrase_prompt="the city of france is"),
            EditRequest("the river of germany is", "blue", subject="the river", case_id=1,
                        rephrase_prompt="the river in germany is"),
            EditRequest("a big dog is", "green", subject="big dog", case_id=2,
                        rephrase_prompt="the big dog is")]

PROXY = ["the dog runs and the cat lies in the house", "a red tree on the river"]


def test_a_score_row_is_the_teacher_forced_scores_per_chunk(model, tok):
    base = token_logprobs(model, tok, PROXY, max_length=32)
    row = score_chunks(model, tok, REQUESTS, n_chunks=3, chunk_size=1, proxy_texts=PROXY,
                       base_logprobs=base, proxy_max_length=32)
    tf = teacher_forced_evaluate(model, tok, REQUESTS)["records"]
    np.testing.assert_allclose(row["rel_chunk"], [100 * r["rel"] for r in tf])
    np.testing.assert_allclose(row["gen_chunk"], [100 * r["gen"] for r in tf])
    assert abs(row["kl"]) < 1e-9  # the unedited model against itself
    with pytest.raises(ValueError, match="3 edits for 2 chunks of 2"):
        score_chunks(model, tok, REQUESTS, n_chunks=2, chunk_size=2, proxy_texts=PROXY, base_logprobs=base,
                     proxy_max_length=32)


def test_both_memit_runs_share_chunk_one_and_restore_the_weights(model, tok):
    before = weights_of(model)
    base = token_logprobs(model, tok, PROXY, max_length=32)
    out = memit_chunk_runs(model, tok, REQUESTS, CACHE_TEXTS * 4, chunk_size=1, n_capability=24,
                           capability_max_length=64, seed=0, proxy_texts=PROXY, base_logprobs=base,
                           proxy_max_length=32, layers=LAYERS)
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters())
    assert out["chunks"] == [[r.case_id for r in c] for c in chunk_requests(list(REQUESTS), 1, 0)]
    for label in MEMIT_RUNS:
        rel = np.array(out["rel"][label])
        assert rel.shape == (3, 3) and ((rel >= 0) & (rel <= 100)).all()
        assert len(out["kl"][label]) == 3 and min(out["kl"][label]) >= 0
    chunked, seq = (np.array(out["rel"][k]) for k in MEMIT_RUNS)
    np.testing.assert_allclose(chunked[0], seq[0], atol=1e-9)  # chunk 1: the same batch edit
    assert out["kl"]["MEMIT-Chunked"][0] == pytest.approx(out["kl"]["MEMIT-Seq"][0], rel=1e-6, abs=1e-9)


def test_a_record_stands_for_a_run_only_with_every_setting_equal():
    params = {"MODEL": "m", "SEED": 0, "N_CHUNKS": 3, "CHUNK_SIZE": 4, "N_CAPABILITY": 32,
              "CAPABILITY_MAX_LENGTH": 128, "N_PROXY": 6, "PROXY_MAX_LENGTH": 64}
    record = {RECORD_KEYS[k]: v for k, v in params.items()}
    assert record_differences(record, params) == {}
    assert record_differences(record, params | {"CHUNK_SIZE": 16}) == {"CHUNK_SIZE": (4, 16)}
    assert record_differences({**record, "seed": 1}, params) == {"SEED": (1, 0)}
