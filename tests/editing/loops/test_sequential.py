"""Sequential editors over a stream of calls: ``edit(..., carry=)`` one chunk at a time equals one call.

CrispEdit-Seq and FT-Seq (:mod:`crispedit_lite.editing.loops.sequential`), MEMIT-Seq and AlphaEdit-Seq
(:mod:`crispedit_lite.editing.loops.layerwise`) and UltraEdit hand their state (running K-FAC factors
and Adam's moments, the key cache, the lifelong normalisers) from one call to the next through
``carry``; editing the chunks of one run in separate calls must give the same weights as the run. A
carry that is dropped between calls (a fresh start for every chunk) must not.
"""

from __future__ import annotations

import copy

import pytest
import torch

from crispedit_lite.data import EditRequest
from crispedit_lite.editing import EditConfig, edit
from crispedit_lite.editing.loops.sequential import chunk_requests
from crispedit_lite.models import random_init_model
from tests.helpers import CAP_TEXT, EDIT_WORDS, REQUESTS

REQS = [*REQUESTS, EditRequest("the small cat is", "red"), EditRequest("the dog runs in the", "river"),
        EditRequest("a blue house is", "big")]
for r in REQS:  # closed-form editors need subjects
    object.__setattr__(r, "subject", r.prompt.split()[1])
_gen = torch.Generator().manual_seed(0)
_IDS = torch.randint(0, len(EDIT_WORDS) - 3, (4, 60), generator=_gen)
CAP_TEXTS = [" ".join(EDIT_WORDS[3 + int(i)] for i in row) for row in _IDS] + [CAP_TEXT]
COMMON = dict(layers=(1, 2), chunk_size=2, n_capability=5, capability_max_length=64,
              capability_source="offline", seed=3)
CONFIGS = {
    "crispedit_seq": dict(gamma=0.9, epochs=3, batch_size=2, lr=1e-2, early_stop=1e-9),
    "ft_seq": dict(epochs=3, batch_size=2, lr=1e-2, early_stop=1e-9),
    "memit_seq": dict(cf_lambda=1.0, cf_v_lr=0.5, cf_v_steps=4),
    "alphaedit_seq": dict(cf_lambda=1.0, cf_v_lr=0.5, cf_v_steps=4, cf_nullspace_rule="energy",
                          cf_nullspace_gamma=0.9),
    "ultraedit": dict(module_pattern="model.layers.{i}.mlp.gate_proj", ultra_modules="pattern",
                      ultra_batch_size=2, ultra_lr=0.05),
}


def _model():
    return random_init_model("tiny-llama", dtype=torch.float64, seed=0, initializer_range=0.3)


def _unshuffled(chunk, seed):
    """The order that ``chunk_requests`` turns back into ``chunk`` (a call reorders its one chunk)."""
    perm = torch.randperm(len(chunk), generator=torch.Generator().manual_seed(seed)).tolist()
    out = [None] * len(chunk)
    for i, j in enumerate(perm):
        out[j] = chunk[i]
    assert chunk_requests(out, len(chunk), seed) == [chunk]
    return out


def _weights(model, result):
    return {m: model.get_submodule(m).weight.detach().clone() for m in result.modules}


@pytest.mark.parametrize("method", list(CONFIGS))
def test_one_chunk_per_call_with_carry_equals_one_call(method, tok, tmp_path):
    cfg = EditConfig(method=method, **COMMON, **CONFIGS[method])
    kw = dict(capability_texts=CAP_TEXTS, cache_dir=str(tmp_path), progress=False)
    base = _model()
    chunks = chunk_requests(REQS, cfg.chunk_size, cfg.seed)
    assert len(chunks) == 3
    fresh = copy.deepcopy(base)  # no carry: every chunk starts the editor's state anew
    for chunk in chunks:  # (and the runs below read the capability statistics from one cache entry)
        edit(fresh, tok, _unshuffled(chunk, cfg.seed), cfg, **kw)
    stepped, carry = copy.deepcopy(base), {}
    for k, chunk in enumerate(chunks):
        out = edit(stepped, tok, _unshuffled(chunk, cfg.seed), cfg, carry=carry, **kw)
        assert carry["chunks_done"] == k + 1
    whole = copy.deepcopy(base)
    res = edit(whole, tok, REQS, cfg, **kw)
    want = _weights(whole, res)
    got = _weights(stepped, out)
    moved = max(float((want[m] - base.get_submodule(m).weight.detach()).abs().max()) for m in want)
    assert moved > 1e-3
    for m in want:
        torch.testing.assert_close(got[m], want[m], rtol=1e-7, atol=1e-9)
    gap = max(float((fresh.get_submodule(m).weight - want[m]).abs().max()) for m in want)
    assert gap > 1e-6


def test_carry_holds_each_editors_state(tok, tmp_path):
    kw = dict(capability_texts=CAP_TEXTS, cache_dir=str(tmp_path), progress=False)
    keys = {"crispedit_seq": {"chunks_done", "running", "capability", "optimizer"},
            "ft_seq": {"chunks_done", "optimizer"},
            "memit_seq": {"chunks_done", "cache", "templates", "covariance"},
            "alphaedit_seq": {"chunks_done", "cache", "templates", "covariance"},
            "ultraedit": {"chunks_done", "normalizers"}}
    for method, want in keys.items():
        carry: dict = {}
        cfg = EditConfig(method=method, **COMMON, **CONFIGS[method])
        edit(_model(), tok, REQS[:2], cfg, carry=carry, **kw)
        assert set(carry) == want, method
