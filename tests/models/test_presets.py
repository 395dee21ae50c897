"""crispedit_lite.models.presets: shape presets at their published sizes, edited-module resolution, the
paper's layers."""

from __future__ import annotations

import pytest

from crispedit_lite.models import LAYER_PRESETS, default_layers, random_init_model, resolve_edit_modules


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
