"""crispedit_lite.models.load: random-weight models, the tokenizer set-up, loading a local folder or a
hub id (offline error), and ``device_map`` through accelerate's hooks.

The shape and layer presets are in ``test_presets.py``, the embedded models in ``test_embedded.py``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from crispedit_lite.models import load_model, prepare_tokenizer, random_init_model
from tests.helpers import CAP_TEXT, REQUESTS, tiny_tokenizer, word_tokenizer


def plain_tokenizer():
    """A word-level tokenizer with EOS but neither BOS nor a pad token: what ``prepare_tokenizer`` fixes."""
    return word_tokenizer(["<unk>", "<s>", "</s>", "the", "capital", "of", "france", "is", "paris"],
                          bos_token=None)


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_random_init_tiny_llama():
    m = random_init_model("tiny-llama", seed=1)
    assert type(m).__name__ == "LlamaForCausalLM" and not m.training
    assert m.model.layers[0].mlp.down_proj.weight.shape == (32, 64)
    same = random_init_model("tiny-llama", seed=1)
    w = "model.layers.0.mlp.down_proj.weight"
    assert torch.equal(dict(m.named_parameters())[w], dict(same.named_parameters())[w])
    two = random_init_model("tiny-llama", num_hidden_layers=2)
    assert len(two.model.layers) == 2
    out = m(torch.tensor([[1, 5, 7]])).logits
    assert out.shape == (1, 3, 512)
    with pytest.raises(ValueError, match="unknown shape preset 'gpt5'"):
        random_init_model("gpt5")


def test_prepare_tokenizer_pads_right_with_eos_without_resizing():
    tok = plain_tokenizer()
    tok.padding_side = "left"
    n = len(tok)
    assert tok.pad_token is None
    tok = prepare_tokenizer(tok)
    assert tok.pad_token == "</s>" and tok.padding_side == "right" and len(tok) == n


def test_load_model_from_local_directory_leaves_it_untouched(tmp_path):
    src = random_init_model("tiny-llama", seed=2)
    src.save_pretrained(tmp_path)
    plain_tokenizer().save_pretrained(tmp_path)
    before = digest(tmp_path)
    model, tok = load_model(str(tmp_path))
    assert tok.pad_token == "</s>" and tok.padding_side == "right"
    w = "model.layers.1.mlp.down_proj.weight"
    assert torch.equal(dict(model.named_parameters())[w], dict(src.named_parameters())[w])
    model.model.layers[1].mlp.down_proj.weight.data.add_(1.0)  # an in-memory edit ...
    assert digest(tmp_path) == before  # ... never reaches the directory
    with pytest.raises(ValueError, match="is not a directory"):
        load_model(str(tmp_path / "config.json"))


def test_hub_id_offline_error_is_clear(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True, raising=False)
    with pytest.raises(OSError, match=r"could not load model 'crispedit-lite/no-such-model' from "
                                      r"the Hugging Face hub \(HF_HUB_OFFLINE is set"):
        load_model("crispedit-lite/no-such-model")


# ----------------------------------------------------------------------------- device_map


def _device_map(model) -> dict[str, str]:
    names = ["model.embed_tokens", *[f"model.layers.{i}" for i in range(len(model.model.layers))],
             "model.norm", "model.rotary_emb", "lm_head"]
    return dict.fromkeys(names, "cpu")


def test_load_model_device_map_and_kfac_projectors_ftm_through_accelerate_hooks(tmp_path):
    """Every entry "cpu", but dispatched with accelerate's hooks: the multi-device code path."""
    from accelerate import dispatch_model

    from crispedit_lite.data.batches import tokenize_capability, tokenize_edits
    from crispedit_lite.editing import build_projectors, train_edits
    from crispedit_lite.kfac import collect_kfac
    from crispedit_lite.optim import ProjectedAdam

    random_init_model("tiny-llama", seed=3).save_pretrained(tmp_path)
    tiny_tokenizer().save_pretrained(tmp_path)
    plain, tok = load_model(str(tmp_path))
    mapped, _ = load_model(str(tmp_path), device_map=_device_map(plain))
    assert {p.device.type for p in mapped.parameters()} == {"cpu"} and not mapped.training
    dispatch_model(mapped, _device_map(mapped), force_hooks=True)  # one device: hooks forced
    assert set(mapped.hf_device_map.values()) == {"cpu"}
    assert hasattr(mapped.model.layers[2], "_hf_hook") and not hasattr(plain.model.layers[2], "_hf_hook")
    modules = ["model.layers.1.mlp.down_proj", "model.layers.2.mlp.down_proj"]
    batches = tokenize_capability([CAP_TEXT, "the dog runs"], tok, max_length=64, batch_size=2)
    for labels in ("true", "sampled"):
        fp = collect_kfac(plain, modules, batches, labels=labels, progress=False)
        fm = collect_kfac(mapped, modules, batches, labels=labels, progress=False)
        for m in modules:
            assert fm[m].A.device.type == "cpu" and fm[m].n_tokens == fp[m].n_tokens
            torch.testing.assert_close(fm[m].A, fp[m].A, rtol=1e-6, atol=1e-7)
            torch.testing.assert_close(fm[m].S, fp[m].S, rtol=1e-6, atol=1e-7)
    weights = {}
    for model in (plain, mapped):
        projectors, _ = build_projectors(model, fp, 0.9)
        params = [model.get_submodule(m).weight for m in modules]
        assert all(projectors[w].U_in.device == w.device for w in params)
        for p in model.parameters():
            p.requires_grad_(any(p is w for w in params))
        opt = ProjectedAdam(params, projectors, lr=1e-2)
        log = train_edits(model, REQUESTS, lambda b: tokenize_edits(b, tok), opt, epochs=2,
                          batch_size=2, progress=False)
        assert log.steps > 0
        weights[model is mapped] = [w.detach().clone() for w in params]
    for a, b in zip(weights[False], weights[True]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert not torch.equal(weights[True][0], dict(random_init_model("tiny-llama", seed=3)
                                                  .named_parameters())[modules[0] + ".weight"])


def test_load_model_device_map_errors(tmp_path):
    with pytest.raises(ValueError, match=r"give device \('cuda'\) or device_map \('auto'\), not both"):
        load_model(str(tmp_path), device="cuda", device_map="auto")
    with pytest.raises(ValueError, match="device_map must be None, a dict .* got 'everywhere'"):
        load_model(str(tmp_path), device_map="everywhere")
