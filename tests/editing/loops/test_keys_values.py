"""crispedit_lite.editing.loops.keys_values on a random tiny Llama (float64) with a word-level tokenizer.

Keys are checked against a hand-computed, unpadded reference; left and right padding, and decoder
layers that return a tuple instead of a tensor, must give the same keys and values; the batched
target-value optimisation must equal optimising each request alone.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from crispedit_lite.data import EditRequest
from crispedit_lite.editing.loops.keys_values import (
    CONTEXT_SEEDS,
    ValueSettings,
    compute_keys,
    compute_targets,
    context_templates,
    layer_outputs,
    subject_span,
)
from crispedit_lite.models import random_init_model
from crispedit_lite.models.compat import layer_hidden
from tests.helpers import tiny_tokenizer

REQS = [EditRequest("the capital of france is", "rome", subject="france", case_id=10),
        EditRequest("a big red dog runs in", "the small house", subject="big red dog", case_id=11)]
TEMPLATES = [["{}"], ["a b. {}", "the river lies. {}"]]
MODULE, BLOCK = "model.layers.1.mlp.down_proj", "model.layers.2"
SETTINGS = ValueSettings(lr=0.5, steps=6, weight_decay=1e-3, clamp_norm=4.0, kl_factor=0.0625)


@pytest.fixture(scope="module")
def model():
    return random_init_model("tiny-llama", dtype=torch.float64, seed=0)


@pytest.fixture()
def tok():
    return tiny_tokenizer()


def _reference_key(model, tok, text, subject_last_word):
    ids = tok(text)["input_ids"]
    word = tok.convert_tokens_to_ids(subject_last_word)
    idx = len(ids) - 1 - ids[::-1].index(word)
    got = {}
    h = model.get_submodule(MODULE).register_forward_pre_hook(lambda m, a: got.update(x=a[0]))
    with torch.no_grad():
        model(input_ids=torch.tensor([ids]))
    h.remove()
    return got["x"][0, idx]


def test_keys_equal_the_unpadded_reference_averaged_by_group(model, tok):
    keys = compute_keys(model, tok, REQS, MODULE, TEMPLATES)
    assert keys.shape == (2, 64) and keys.dtype == torch.float64
    for r, req in enumerate(REQS):
        last = req.subject.split()[-1]
        bare = _reference_key(model, tok, req.prompt, last)
        pref = [_reference_key(model, tok, t.format(req.prompt), last) for t in TEMPLATES[1]]
        expect = 0.5 * bare + 0.5 * (pref[0] + pref[1]) / 2
        torch.testing.assert_close(keys[r], expect, rtol=1e-10, atol=1e-12)
        # the plain mean over all three templates is a different (wrong) average
        assert not torch.allclose(keys[r], (bare + pref[0] + pref[1]) / 3, atol=1e-6)


def test_left_and_right_padding_give_the_same_keys_and_values(model, tok):
    out = {}
    for side in ("right", "left"):
        tok.padding_side = side
        z, _ = compute_targets(model, tok, REQS, BLOCK, TEMPLATES, SETTINGS)
        out[side] = (compute_keys(model, tok, REQS, MODULE, TEMPLATES),
                     layer_outputs(model, tok, REQS, BLOCK), z)
    for a, b in zip(out["right"], out["left"]):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


class _TupleBlock(nn.Module):
    """A decoder layer that returns ``(hidden, None)``, as transformers <= 4.53 layers did."""

    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, *args, **kwargs):
        return layer_hidden(self.layer(*args, **kwargs)), None


class _Unwrap(nn.Module):
    """Hands the decoder model what its own layers return: a tuple (<= 4.53) or a tensor."""

    def __init__(self, layer, as_tuple: bool):
        super().__init__()
        self.inner = _TupleBlock(layer)
        self.as_tuple = as_tuple
        self.attention_type = getattr(layer, "attention_type", None)

    def forward(self, *args, **kwargs):
        out = self.inner(*args, **kwargs)
        return out if self.as_tuple else out[0]


def test_decoder_layers_returning_a_tuple_work_the_same(tok):
    base = random_init_model("tiny-llama", dtype=torch.float64, seed=0)
    z_tensor, info = compute_targets(base, tok, REQS, BLOCK, TEMPLATES, SETTINGS)
    h_tensor = layer_outputs(base, tok, REQS, BLOCK)
    x = torch.zeros(1, 2, 32, dtype=torch.float64)
    rope = base.model.rotary_emb(x, torch.arange(2)[None])
    as_tuple = isinstance(base.model.layers[2](x, position_embeddings=rope), tuple)  # <= 4.53: True
    base.model.layers[2] = _Unwrap(base.model.layers[2], as_tuple)
    inner = BLOCK + ".inner"
    assert isinstance(base.get_submodule(inner)(x, position_embeddings=rope), tuple)
    z_tuple, _ = compute_targets(base, tok, REQS, inner, TEMPLATES, SETTINGS)
    torch.testing.assert_close(layer_outputs(base, tok, REQS, inner), h_tensor)
    torch.testing.assert_close(z_tuple, z_tensor)
    assert (z_tensor - h_tensor).norm() > 1e-3  # the optimisation moved the value


def test_batched_targets_equal_one_request_at_a_time(model, tok):
    z, info = compute_targets(model, tok, REQS, BLOCK, TEMPLATES, SETTINGS)
    for r, req in enumerate(REQS):
        z1, _ = compute_targets(model, tok, [req], BLOCK, TEMPLATES, SETTINGS)
        torch.testing.assert_close(z[r], z1[0], rtol=1e-10, atol=1e-12)
    assert info["steps"] == [SETTINGS.steps - 1] * 2


def test_target_value_lowers_the_target_nll_and_respects_the_clamp(model, tok):
    tight = ValueSettings(lr=0.5, steps=8, weight_decay=0.0, clamp_norm=0.3, kl_factor=0.0)
    z, info = compute_targets(model, tok, REQS, BLOCK, TEMPLATES, tight)
    h = layer_outputs(model, tok, REQS, BLOCK)
    assert ((z - h).norm(dim=1) <= 0.3 * h.norm(dim=1) * (1 + 1e-9)).all()
    assert max(info["delta_over_h"]) > 0.29  # the clamp was reached
    assert all(b < a for a, b in zip(info["loss_first"], info["loss_last"]))


def test_early_stop_freezes_a_request(model, tok):
    # a huge stop loss is hit at the first step: nothing moves
    import crispedit_lite.editing.loops.keys_values as kv

    old, kv.STOP_LOSS = kv.STOP_LOSS, 1e9
    try:
        z, info = compute_targets(model, tok, REQS, BLOCK, TEMPLATES, SETTINGS)
    finally:
        kv.STOP_LOSS = old
    torch.testing.assert_close(z, layer_outputs(model, tok, REQS, BLOCK))
    assert info["steps"] == [0, 0]


def test_subject_lookup_and_errors():
    assert subject_span("The Statue of Liberty is in", "the Statue of Liberty", 3) == (0, 21)
    assert subject_span("the capital of france is", "france", 0) == (15, 21)
    with pytest.raises(ValueError, match="record 7.*'germany'"):
        subject_span("the capital of france is", "germany", 7)
    with pytest.raises(ValueError, match="record 8.*subject"):
        subject_span("the capital of france is", None, 8)


def test_missing_subject_names_the_record(model, tok):
    bad = [EditRequest("the capital of france is", "rome", subject="berlin", case_id="cf-42")]
    with pytest.raises(ValueError, match="cf-42"):
        compute_keys(model, tok, bad, MODULE, TEMPLATES)


def test_context_templates_are_the_bare_prompt_and_five_greedy_prefixes(model, tok):
    groups = context_templates(model, tok)
    assert groups[0] == ["{}"] and len(groups[1]) == len(CONTEXT_SEEDS) == 5
    for t in groups[1]:
        assert t.endswith(". {}") and t.count("{}") == 1
        assert len(tok(t[:-4])["input_ids"]) <= 10
    assert groups == context_templates(model, tok)  # greedy: deterministic


def test_sampled_templates_are_top_k_draws_fixed_by_the_seed(model, tok):
    a = context_templates(model, tok, sampling="top_k", seed=0)
    assert a == context_templates(model, tok, sampling="top_k", seed=0)  # one seed, one set
    seeds = [context_templates(model, tok, sampling="top_k", seed=s)[1] for s in range(1, 4)]
    assert any(s != a[1] for s in seeds)  # other seeds draw other prefixes
    assert a[0] == ["{}"] and all(t.endswith(". {}") for t in a[1])
    # top_k=1 keeps only the most likely token: greedy decoding, whatever the seed
    assert context_templates(model, tok, sampling="top_k", top_k=1, seed=5) == context_templates(model, tok)
    # the official rule, step by step: sample among the 5 most likely tokens in proportion to their
    # probabilities, one seeded CPU generator for the five prefixes in turn
    gen, expected = torch.Generator().manual_seed(0), []
    for prefix in CONTEXT_SEEDS:
        ids = list(tok(prefix)["input_ids"])
        while len(ids) < 10:
            with torch.no_grad():
                probs = torch.softmax(model(input_ids=torch.tensor([ids])).logits[0, -1].float(), -1)
            top = probs.topk(5)
            ids.append(int(top.indices[torch.multinomial(top.values / top.values.sum(), 1, generator=gen)]))
        expected.append(tok.decode(ids, skip_special_tokens=True) + ". {}")
    assert a[1] == expected
    with pytest.raises(ValueError, match="sampling must be"):
        context_templates(model, tok, sampling="beam")
