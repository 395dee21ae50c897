"""transformers-version differences: the dtype keyword, decoder-layer outputs, repairs of GGUF loads.

These run on whichever transformers is installed; ``make test-compat`` runs the whole suite again on
the declared floor (4.46.2), where the 4.x side of each branch is taken.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crispedit_lite.models import compat, random_init_model
from crispedit_lite.models.compat import (
    dtype_kwargs,
    layer_hidden,
    repair_gguf_load,
    replace_hidden,
    transformers_version,
)


def test_transformers_version_is_read():
    import transformers

    major, minor = transformers_version()
    assert transformers.__version__.startswith(f"{major}.{minor}")
    assert (major, minor) >= (4, 46)  # the floor declared in pyproject.toml


@pytest.mark.parametrize("version, key", [((4, 46), "torch_dtype"), ((4, 55), "torch_dtype"),
                                          ((4, 56), "dtype"), ((5, 0), "dtype")])
def test_dtype_keyword_follows_the_version(monkeypatch, version, key):
    monkeypatch.setattr(compat, "transformers_version", lambda: version)
    assert dtype_kwargs(torch.float16) == {key: torch.float16}
    assert dtype_kwargs(None) == {}


def test_dtype_kwargs_is_accepted_by_from_pretrained_and_from_config(tmp_path):
    from transformers import AutoModelForCausalLM

    random_init_model("tiny-llama", seed=0).save_pretrained(tmp_path)  # saved in float32
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, **dtype_kwargs(torch.float64))
    assert {p.dtype for p in loaded.parameters()} == {torch.float64}
    built = random_init_model("tiny-llama", dtype=torch.bfloat16)  # from_config
    assert {p.dtype for p in built.parameters()} == {torch.bfloat16}


def test_layer_outputs_as_tuple_or_tensor():
    h, extra = torch.randn(2, 3, 4), torch.randn(2)
    assert layer_hidden(h) is h and layer_hidden((h, extra)) is h
    new = h + 1
    assert replace_hidden(h, new) is new
    out = replace_hidden((h, extra, None), new)
    assert isinstance(out, tuple) and out[0] is new and out[1] is extra and out[2] is None


def test_real_decoder_layer_output_is_read_either_way():
    model = random_init_model("tiny-llama", dtype=torch.float64, seed=0)
    seen = []
    handle = model.model.layers[1].register_forward_hook(lambda m, a, out: seen.append(layer_hidden(out)))
    try:
        with torch.no_grad():
            out = model(torch.tensor([[3, 4, 5]]), output_hidden_states=True)
    finally:
        handle.remove()
    torch.testing.assert_close(seen[0], out.hidden_states[2])  # hidden_states[0] is the embedding


# ----------------------------------------------------------------------------- GGUF repairs


def _write_gguf(path, *, output_weight: bool, add_bos: bool):
    gguf = pytest.importorskip("gguf")
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_pad_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(add_bos)
    w.add_tensor("token_embd.weight", np.zeros((4, 4), dtype=np.float32))
    if output_weight:
        w.add_tensor("output.weight", np.zeros((4, 4), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _tokenizer(add_bos: bool):
    """A word-level tokenizer whose post-processor prepends BOS, as a Llama tokenizer does."""
    from tokenizers import Tokenizer, pre_tokenizers, processors
    from tokenizers import models as tk_models
    from transformers import PreTrainedTokenizerFast

    words = ["<unk>", "<s>", "</s>", "a", "b"]
    tk = Tokenizer(tk_models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    if add_bos:
        tk.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    # the special tokens as transformers 4.46's Llama GGUF converter set them: EOS = BOS, no pad
    return PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", bos_token="<s>", eos_token="<s>")


def test_repair_ties_embeddings_and_sets_special_tokens_from_the_file(tmp_path):
    path = _write_gguf(tmp_path / "m.gguf", output_weight=False, add_bos=False)
    model = random_init_model("tiny-llama", seed=0)  # tie_word_embeddings=False: a random lm_head
    tok = _tokenizer(add_bos=False)
    fixed = repair_gguf_load(model, tok, path)
    assert model.config.tie_word_embeddings
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    assert (tok.bos_token, tok.eos_token, tok.pad_token, tok.unk_token) == ("<s>", "</s>", "</s>", "<unk>")
    assert len(fixed) == 3 and "output.weight" in fixed[0] and "eos_token '<s>' -> '</s>'" in fixed[1]
    assert repair_gguf_load(model, tok, path) == []  # nothing left to repair


def test_repair_leaves_an_untied_model_with_its_own_output_layer(tmp_path):
    path = _write_gguf(tmp_path / "m.gguf", output_weight=True, add_bos=False)
    model = random_init_model("tiny-llama", seed=0)
    head = model.get_output_embeddings().weight.detach().clone()
    repair_gguf_load(model, _tokenizer(add_bos=False), path)
    assert not model.config.tie_word_embeddings
    assert torch.equal(model.get_output_embeddings().weight, head)


def test_repair_refuses_a_bos_it_cannot_remove(tmp_path):
    path = _write_gguf(tmp_path / "m.gguf", output_weight=True, add_bos=False)
    tok = _tokenizer(add_bos=True)
    assert tok("a").input_ids == [1, 3]
    if getattr(tok, "add_bos_token", None) is None:
        with pytest.raises(ValueError, match="add_bos_token to set to False .*m.gguf"):
            repair_gguf_load(random_init_model("tiny-llama"), tok, path)
    else:  # a tokenizer class that rebuilds its post-processor from add_bos_token
        fixed = repair_gguf_load(random_init_model("tiny-llama"), tok, path)
        assert tok("a").input_ids == [3] and fixed[-1].startswith("add_bos_token -> False")


def test_embedded_gemma_needs_a_gemma3_gguf_reader(monkeypatch, tmp_path):
    from crispedit_lite.models import EMBEDDED_MODELS, convert_embedded

    assert EMBEDDED_MODELS["gemma3-270m"].min_transformers == (4, 52)
    monkeypatch.setattr(compat, "transformers_version", lambda: (4, 51))
    with pytest.raises(ValueError, match=r"'gemma3-270m' needs transformers>=4.52 to read its GGUF file; "
                                         r"transformers \S+ is installed"):
        convert_embedded("gemma3-270m", tmp_path)
    assert not any(tmp_path.iterdir())  # refused before downloading anything


def test_greedy_generation_ignores_a_model_default_of_sampling():
    """A generation_config.json that asks for sampling (as LLaMA-3-Instruct's does) stays unused."""
    from crispedit_lite.evaluation.generation import greedy_generate
    from tests.helpers import tiny_tokenizer

    tok = tiny_tokenizer()
    prompts = ["the capital of france is", "paris is"]
    model = random_init_model("tiny-llama", seed=4)
    greedy = greedy_generate(model, tok, prompts, max_new_tokens=8, stop_strings=())
    model.generation_config.do_sample, model.generation_config.temperature = True, 50.0
    model.generation_config.top_k = 0
    for seed in range(3):
        torch.manual_seed(seed)
        assert greedy_generate(model, tok, prompts, max_new_tokens=8, stop_strings=()) == greedy
