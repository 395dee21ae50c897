r"""Which matrices CrispEdit edits: layer presets, architecture shapes, and module-name patterns.

The one place that states the models' shapes and edited layers: :data:`ARCHITECTURES` the shape of
each model, :data:`LAYER_PRESETS` the paper's edited ``down_proj`` layers (CrispEdit Table 2) and this
project's choice for SmolLM2, :data:`DOWN_PROJ_SHAPES` the shape of those matrices (for the cost
formulas of :mod:`crispedit_lite.costs`), :data:`SHAPE_PRESETS` the published configurations of the
paper's models, for random-weight timing runs; :func:`resolve_edit_modules` expands
``model.layers.{i}.mlp.down_proj`` over the edited layers (an unknown pattern is an error listing the
model's linear-module patterns).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from typing import Any

from torch import nn

from crispedit_lite.costs import LayerShape

__all__ = ["ARCHITECTURES", "DEFAULT_PATTERN", "DOWN_PROJ_SHAPES", "LAYER_PRESETS", "LLAMA3_8B",
           "QWEN2_5_1_5B", "QWEN2_5_7B", "SHAPE_PRESETS", "default_layers", "down_proj_shape",
           "resolve_edit_modules"]

DEFAULT_PATTERN = "model.layers.{i}.mlp.down_proj"

LLAMA3_8B, QWEN2_5_1_5B = "meta-llama/Meta-Llama-3-8B-Instruct", "Qwen/Qwen2.5-1.5B-Instruct"
QWEN2_5_7B = "Qwen/Qwen2.5-7B-Instruct"

#: (model_type, num_hidden_layers, hidden_size, intermediate_size) of each model (its config.json):
#: the shape by which a loaded model is recognised, and the dimensions of its MLP matrices.
ARCHITECTURES: dict[str, tuple[str, int, int, int]] = {
    "smollm2-135m-instruct": ("llama", 30, 576, 1536),
    "gemma3-270m": ("gemma3_text", 18, 640, 2048),
    LLAMA3_8B: ("llama", 32, 4096, 14336),
    QWEN2_5_1_5B: ("qwen2", 28, 1536, 8960),
    QWEN2_5_7B: ("qwen2", 28, 3584, 18944),
}

# Edited down_proj layers, keyed by preset name, with the shape that identifies the architecture
# (model_type, num_hidden_layers, hidden_size, intermediate_size).
# * LLaMA-3-8B {19..23} and Qwen-2.5-1.5B {4,5,6}: CrispEdit Table 2; Qwen-2.5-7B {15..19}: the
#   official repo's hparams/CrispEdit/qwen2.5-7b.yaml.
# * SmolLM2-135M (30 layers) {18..22}: this project's choice. It places five layers at the same
#   relative depth as the paper's main model (19/32..23/32 of the stack = 0.59..0.72, scaled to
#   30 layers: 17.8..21.6), in the upper-middle MLPs where causal tracing locates factual recall
#   (Meng et al. 2022). Backward passes then only reach layer 18 of 30, which keeps CPU edits cheap.
# * Gemma 3 270M (18 layers) {10..14}: the same rule. Five layers centred on the paper's relative
#   depth (the centre 21/32 = 0.66 of LLaMA-3-8B's 19..23, scaled to 18 layers: 11.8), so 10..14.
LAYER_PRESETS: dict[str, dict[str, Any]] = {
    name: {"layers": layers, "shape": ARCHITECTURES[name]} for name, layers in (
        ("smollm2-135m-instruct", [18, 19, 20, 21, 22]),
        ("gemma3-270m", [10, 11, 12, 13, 14]),
        (LLAMA3_8B, [19, 20, 21, 22, 23]),
        (QWEN2_5_1_5B, [4, 5, 6]),
        (QWEN2_5_7B, [15, 16, 17, 18, 19]),
    )
}


def down_proj_shape(name: str, label: str | None = None) -> LayerShape:
    """The ``down_proj`` matrix of a model of :data:`ARCHITECTURES`: ``d_in`` = intermediate size.

    The table :data:`DOWN_PROJ_SHAPES` built with it is used in notebook ``05_matrix_free_projector``.
    """
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown model {name!r}; known: {sorted(ARCHITECTURES)}")
    _, _, hidden, inter = ARCHITECTURES[name]
    return LayerShape(label or name, DEFAULT_PATTERN, d_in=inter, d_out=hidden)


#: MLP ``down_proj`` shapes of the models the book refers to, by display name.
DOWN_PROJ_SHAPES: dict[str, LayerShape] = {
    label: down_proj_shape(name, label) for label, name in (
        ("LLaMA-3-8B", LLAMA3_8B), ("Qwen-2.5-1.5B", QWEN2_5_1_5B), ("SmolLM2-135M", "smollm2-135m-instruct"))
}

def _model_shape(model: nn.Module) -> tuple[Any, ...]:
    """(model_type, num_hidden_layers, hidden_size, intermediate_size) of a model's config."""
    cfg = getattr(model, "config", None)
    return tuple(getattr(cfg, k, None) for k in
                 ("model_type", "num_hidden_layers", "hidden_size", "intermediate_size"))


def _config(name: str) -> dict[str, Any]:
    model_type, layers, hidden, inter = ARCHITECTURES[name]
    return dict(model_type=model_type, num_hidden_layers=layers, hidden_size=hidden,
                intermediate_size=inter)


# Architectures with the published shapes (config.json of each hub model), for random-weight runs.
SHAPE_PRESETS: dict[str, dict[str, Any]] = {
    "llama3-8b-shape": dict(
        **_config(LLAMA3_8B), vocab_size=128256, num_attention_heads=32, num_key_value_heads=8,
        max_position_embeddings=8192, rope_theta=500000.0, rms_norm_eps=1e-5,
        tie_word_embeddings=False, bos_token_id=128000, eos_token_id=128009),
    "qwen2.5-1.5b-shape": dict(
        **_config(QWEN2_5_1_5B), vocab_size=151936, num_attention_heads=12, num_key_value_heads=2,
        max_position_embeddings=32768, rope_theta=1000000.0, rms_norm_eps=1e-6,
        tie_word_embeddings=True, bos_token_id=151643, eos_token_id=151645),
    "smollm2-135m-shape": dict(
        **_config("smollm2-135m-instruct"), vocab_size=49152, num_attention_heads=9,
        num_key_value_heads=3, max_position_embeddings=8192, rope_theta=100000.0, rms_norm_eps=1e-5,
        tie_word_embeddings=True, bos_token_id=1, eos_token_id=2),
    "tiny-llama": dict(
        model_type="llama", vocab_size=512, hidden_size=32, intermediate_size=64,
        num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=256, rms_norm_eps=1e-5, tie_word_embeddings=False,
        bos_token_id=1, eos_token_id=2),
}


def default_layers(model: nn.Module) -> list[int]:
    """Return the preset edited layers of a model, recognised by its shape (:data:`LAYER_PRESETS`).

    Listed on the book page ``api``.
    """
    shape = _model_shape(model)
    for preset in LAYER_PRESETS.values():
        if preset["shape"] == shape:
            return list(preset["layers"])
    raise ValueError(
        f"no layer preset for a model of shape {shape} (model_type, layers, hidden, intermediate); "
        f"pass layers=[...] explicitly. Presets: {sorted(LAYER_PRESETS)}")


def _templates(names: Sequence[str]) -> list[str]:
    """Replace the layer index of module names by ``{i}``; unique templates, first-seen order."""
    seen: dict[str, None] = {}
    for n in names:
        seen[re.sub(r"\.(\d+)\.", ".{i}.", n, count=1)] = None
    return list(seen)


def resolve_edit_modules(
    model: nn.Module, pattern: str = DEFAULT_PATTERN, layers: Sequence[int] | None = None
) -> list[str]:
    """Expand a module pattern over layers into module names, checking each is a linear layer.

    Args:
        model: the network.
        pattern: a name with ``{i}`` (or EasyEdit's ``{}``) for the layer index; a trailing
            ``.weight`` (EasyEdit's ``rewrite_module_tmp``) is ignored.
        layers: layer indices; ``None`` uses :func:`default_layers`.

    Returns:
        Module names, e.g. ``["model.layers.18.mlp.down_proj", ...]``.

    Raises:
        ValueError: an unknown pattern (listing candidate patterns of linear modules), an index out
            of range, or a module that is not ``nn.Linear``.

    Derived in notebook ``06_crispedit_on_a_small_lm``.
    """
    pattern = pattern.replace("{}", "{i}").removesuffix(".weight")
    if "{i}" not in pattern:
        raise ValueError(f"pattern {pattern!r} has no '{{i}}' placeholder for the layer index")
    layers = default_layers(model) if layers is None else list(layers)
    if not layers:
        raise ValueError("layers is empty: name at least one layer to edit")
    named = dict(model.named_modules())
    linear = [n for n, m in named.items() if isinstance(m, nn.Linear)]
    regex = re.compile("^" + re.escape(pattern).replace(r"\{i\}", r"(\d+)") + "$")
    present = sorted(int(m.group(1)) for n in named if (m := regex.match(n)))
    if not present:
        cands = _templates(linear)
        close = difflib.get_close_matches(pattern, cands, n=6, cutoff=0.3) or cands[:6]
        raise ValueError(
            f"no module matches pattern {pattern!r}; linear module patterns include {close}")
    out = []
    for i in layers:
        name = pattern.format(i=i)
        if name not in named:
            raise ValueError(f"layer {i} out of range for pattern {pattern!r}: "
                             f"layers {present[0]}..{present[-1]} exist")
        if not isinstance(named[name], nn.Linear):
            raise ValueError(f"module {name!r} is a {type(named[name]).__name__}, not nn.Linear")
        out.append(name)
    return out
