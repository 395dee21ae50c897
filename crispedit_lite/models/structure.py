r"""A model's shape without its weights: the config, and a skeleton of its modules on the meta device.

Every check that needs only a model's structure (are these layers in range, does this module
pattern match, how long is its context, which tokenizer does it use) runs on the skeleton before the
weights load, so a mistake costs a second instead of the minutes it takes to load an 8B model. The
config comes from :data:`~crispedit_lite.models.presets.SHAPE_PRESETS` for ``random:<shape>``, from
``config.json`` for a saved folder, the embedded model's converted folder (once it has been
converted) or the Hugging Face cache for a hub id. A model whose config cannot be had cheaply (an
embedded model not converted yet) gets ``None``, and its checks run after loading, as before.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["context_length", "model_config", "model_folder", "skeleton"]


def model_folder(name: str) -> Path | None:
    """The local folder of a model's ``config.json`` and tokenizer.

    ``None`` for a random or unconverted model.

    Listed on the book page ``api``.
    """
    from crispedit_lite.models.embedded import EMBEDDED_MODELS, cache_root

    if name.startswith("random:"):
        return None
    if name in EMBEDDED_MODELS:
        folder = cache_root() / "models" / name
        return folder if (folder / "crispedit_source.json").is_file() else None
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(name, "config.json")
    except Exception:  # pragma: no cover - no huggingface_hub, or a name it refuses
        return None
    return Path(found).parent if isinstance(found, str) else None


def model_config(name: str) -> Any | None:
    """The transformers config of model ``name`` without its weights, or ``None`` when not at hand.

    Raises ``ValueError`` when the config exists but cannot be read.

    Listed on the book page ``api``.
    """
    from transformers import AutoConfig

    from crispedit_lite.models.presets import SHAPE_PRESETS

    if name.startswith("random:"):
        fields = dict(SHAPE_PRESETS[name.split(":", 1)[1]])
        return AutoConfig.for_model(fields.pop("model_type"), **fields)
    folder = model_folder(name)
    if folder is None:
        return None
    try:
        return AutoConfig.from_pretrained(folder)
    except (OSError, ValueError, KeyError) as err:
        message = " ".join(str(err).split())
        raise ValueError(f"model {name!r}: its config.json cannot be read ({message[:200]})") from None


def skeleton(config: Any) -> nn.Module:
    """The model of ``config`` with every parameter on the meta device (no memory, no initialisation).

    Listed on the book page ``api``.
    """
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def context_length(config: Any) -> int | None:
    """The number of positions the model was built for (``max_position_embeddings``), if it states one.

    Listed on the book page ``api``.
    """
    cfg = getattr(config, "text_config", None) or config
    value = getattr(cfg, "max_position_embeddings", None)
    return int(value) if isinstance(value, int) and value > 0 else None
