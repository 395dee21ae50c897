"""crispedit_lite.data.batches: FT-M prompt masking, right padding, K-FAC batches of edits and capability
text."""

from __future__ import annotations

import pytest
import torch

from crispedit_lite.data import EditRequest
from crispedit_lite.data.batches import (
    edit_kfac_batches,
    edit_pairs,
    tokenize_capability,
    tokenize_edits,
)

WORDS = ["<unk>", "<s>", "</s>", "the", "capital", "of", "france", "is", "paris", "rome", "hi",
         "there", "friend", "a", "b", "c"]


def tiny_tokenizer(bos: bool = False, pad: bool = False):
    """A word-level tokenizer built offline; optionally adds BOS like LLaMA-3's."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    if bos:
        tk.post_processor = processors.TemplateProcessing(single="<s> $A",
                                                          special_tokens=[("<s>", 1)])
    kw = {"pad_token": "<unk>"} if pad else {}
    return PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", eos_token="</s>",
                                   bos_token="<s>", **kw)


def test_edit_pairs_add_leading_space():
    pairs = edit_pairs([EditRequest("the capital of france is", "rome"), ("hi", " there"),
                        {"prompt": "hi", "target_new": "friend"}])
    assert pairs == [("the capital of france is", " rome"), ("hi", " there"), ("hi", " friend")]
    with pytest.raises(ValueError, match="request 0: expected an EditRequest"):
        edit_pairs(["just a string"])
    with pytest.raises(ValueError, match="request 0: prompt and target must be strings"):
        edit_pairs([("hi", "  ")])


@pytest.mark.parametrize("bos", [False, True])
def test_tokenize_edits_masks_prompt_and_padding(bos):
    tok = tiny_tokenizer(bos=bos)  # no pad token: EOS pads, nothing is added to the vocabulary
    b = tokenize_edits([("the capital of france is", "rome"), ("hi", "there friend")], tok)
    off = int(bos)
    assert b["input_ids"].shape == (2, 6 + off)
    assert b["input_ids"][1, -3:].tolist() == [2] * 3  # right padding with EOS
    assert b["attention_mask"].sum(1).tolist() == [6 + off, 3 + off]
    # labels: only target tokens (the prompt's first len(tok(prompt)) positions are masked)
    assert b["labels"][0].tolist() == [-100] * (5 + off) + [9]
    assert b["labels"][1].tolist() == [-100] * (1 + off) + [11, 12] + [-100] * 3
    assert len(tok) == len(WORDS)


def test_tokenize_edits_without_masking_and_truncation():
    tok = tiny_tokenizer()
    b = tokenize_edits([("the capital of france is", "rome")], tok, mask_prompt=False)
    assert b["labels"].tolist() == b["input_ids"].tolist()
    with pytest.raises(ValueError, match="request 0: no target token left"):
        tokenize_edits([("the capital of france is", "rome")], tok, max_length=4)


def test_edit_kfac_batches_are_unmasked_batches_of_8():
    tok = tiny_tokenizer(pad=True)
    reqs = [("a b", "c")] * 10 + [("the capital of", "france")]
    batches = edit_kfac_batches(reqs, tok)
    assert [x["input_ids"].shape[0] for x in batches] == [8, 3]
    last = batches[-1]
    assert last["input_ids"][0].tolist() == [13, 14, 15, 0]  # right-padded with the pad id 0
    assert last["labels"][0].tolist() == [13, 14, 15, -100]  # every real token is a label
    assert last["labels"][2].tolist() == [3, 4, 5, 6]


def test_tokenize_capability_truncates_and_ignores():
    tok = tiny_tokenizer(pad=True)
    texts = ["the capital of france is paris", "hi there", "a b c a b c a b c"]
    batches = tokenize_capability(texts, tok, max_length=4, batch_size=2)
    assert [tuple(x["input_ids"].shape) for x in batches] == [(2, 4), (1, 4)]
    assert batches[0]["labels"][1].tolist() == [10, 11, -100, -100]
    ign = tokenize_capability(texts[:1], tok, ignore_token_ids=(3,))[0]["labels"][0]
    assert ign.tolist() == [-100, 4, 5, 6, 7, 8]
    with pytest.raises(ValueError, match="text 1: expected a non-empty string"):
        tokenize_capability(["ok", ""], tok)


def test_batches_feed_collect_kfac():
    from crispedit_lite.kfac import collect_kfac
    from crispedit_lite.models import random_init_model, resolve_edit_modules

    torch.manual_seed(0)
    model = random_init_model("tiny-llama", num_hidden_layers=2)
    tok = tiny_tokenizer()
    names = resolve_edit_modules(model, layers=[1])
    cap = tokenize_capability(["the capital of france is paris", "hi there friend"], tok)
    edits = edit_kfac_batches([("the capital of france is", "rome")], tok)
    f_cap = collect_kfac(model, names, cap, progress=False)[names[0]]
    f_edit = collect_kfac(model, names, edits, progress=False)[names[0]]
    assert f_cap.n_tokens == 5 + 2  # each text: len - 1 next-token targets
    assert f_edit.n_tokens == 5
    assert f_cap.A.shape == (64, 64) and f_cap.S.shape == (32, 32)
