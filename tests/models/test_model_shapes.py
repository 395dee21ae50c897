"""models.presets is the one source of the paper's models' shapes and edited layers."""

from __future__ import annotations

import pytest

from crispedit_lite.editing.editors.memit import CLOSED_FORM_PRESETS
from crispedit_lite.models import random_init_model
from crispedit_lite.models.presets import (
    ARCHITECTURES,
    DOWN_PROJ_SHAPES,
    LAYER_PRESETS,
    SHAPE_PRESETS,
    default_layers,
    down_proj_shape,
)
from crispedit_lite.reproduction.cells import PAPER_MODELS


@pytest.mark.parametrize("shape_preset, model", [("llama3-8b-shape", "meta-llama/Meta-Llama-3-8B-Instruct"),
                                                 ("qwen2.5-1.5b-shape", "Qwen/Qwen2.5-1.5B-Instruct"),
                                                 ("smollm2-135m-shape", "smollm2-135m-instruct")])
def test_a_model_built_from_its_shape_preset_has_the_stated_shapes(shape_preset, model):
    net = random_init_model(shape_preset, device="meta")
    layers = default_layers(net)  # recognised by its shape
    assert layers == LAYER_PRESETS[model]["layers"]
    w = net.get_submodule(f"model.layers.{layers[0]}.mlp.down_proj").weight
    s = down_proj_shape(model)
    assert tuple(w.shape) == (s.d_out, s.d_in)
    assert SHAPE_PRESETS[shape_preset]["hidden_size"] == ARCHITECTURES[model][2]


def test_every_restatement_reads_the_one_source():
    llama = "meta-llama/Meta-Llama-3-8B-Instruct"
    assert DOWN_PROJ_SHAPES["LLaMA-3-8B"] == down_proj_shape(llama, "LLaMA-3-8B")
    assert (DOWN_PROJ_SHAPES["Qwen-2.5-1.5B"].d_in, DOWN_PROJ_SHAPES["Qwen-2.5-1.5B"].d_out) == (8960, 1536)
    for model, entry in PAPER_MODELS.items():
        assert list(entry["layers"]) == LAYER_PRESETS[model]["layers"]
    for name, preset in {**LAYER_PRESETS, **CLOSED_FORM_PRESETS}.items():
        assert preset["shape"] == ARCHITECTURES[name]
    with pytest.raises(ValueError, match="unknown model 'gpt-9'"):
        down_proj_shape("gpt-9")
