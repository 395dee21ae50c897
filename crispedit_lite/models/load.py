r"""Load ``(model, tokenizer)`` pairs, or build random-weight models with real shapes.

Tokenizers are set up as the paper trains (CrispEdit App. E): **right** padding; a tokenizer without
a pad token reuses its EOS token, so the vocabulary is never resized and the edited model keeps the
base model's embedding shapes (the official code adds ``[PAD]`` and resizes LLaMA's embeddings
instead). Nothing here writes to a model directory it did not create.

Derived in notebook ``06_crispedit_on_a_small_lm``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from crispedit_lite.models.compat import dtype_kwargs
from crispedit_lite.models.digest import folder_digest, tag_model
from crispedit_lite.models.embedded import EMBEDDED_MODELS, cache_root, convert_embedded
from crispedit_lite.models.presets import SHAPE_PRESETS

__all__ = ["load_model", "prepare_tokenizer", "random_init_model"]

_DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")


def prepare_tokenizer(tokenizer: Any) -> Any:
    """Right padding; a missing pad token becomes the EOS token (no new token, no resizing).

    Listed on the book page ``api``.
    """
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError("the tokenizer has neither a pad nor an EOS token to pad with")
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    return tokenizer


def load_model(
    name: str = "smollm2-135m-instruct",
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    cache_dir: str | os.PathLike | None = None,
    device_map: str | dict[str, Any] | None = None,
) -> tuple[nn.Module, Any]:
    """Load ``(model, tokenizer)``: the embedded model, a local directory, or a Hugging Face hub id.

    Args:
        name: ``"smollm2-135m-instruct"`` (see :data:`EMBEDDED_MODELS`), a directory written by
            ``save_pretrained``, or a hub id (downloaded by transformers into the Hugging Face
            cache).
        dtype: parameter dtype (the paper loads bf16 for CrispEdit, fp32 for plain fine-tuning).
        device: where to put the model (leave at ``"cpu"`` when giving ``device_map``).
        device_map: spread the layers over several devices through transformers/accelerate:
            ``"auto"`` (also ``"balanced"``, ``"balanced_low_0"``, ``"sequential"``) fills the
            visible GPUs in order, a dict maps module names to devices (``{"model.layers.0":
            0, ..., "lm_head": 1}``). Each layer then computes, accumulates its K-FAC factors and
            holds its projector on its own device. ``None``: the whole model on ``device``.
        cache_dir: cache root for the embedded model (see :func:`cache_root`); for a hub id,
            passed on to ``from_pretrained`` as its ``cache_dir`` when given.

    Returns:
        The model in eval mode and its tokenizer, prepared by :func:`prepare_tokenizer`.

    Derived in notebook ``06_crispedit_on_a_small_lm``.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kw: dict[str, Any] = {}
    if name in EMBEDDED_MODELS:
        source: str | Path = convert_embedded(name, cache_root(cache_dir))
    elif Path(name).expanduser().is_dir():
        source = Path(name).expanduser()
    elif Path(name).expanduser().exists() or name.startswith((".", "/", "~")):
        raise ValueError(f"model {name!r} is not a directory; give a directory written by "
                         f"save_pretrained, a hub id, or one of {sorted(EMBEDDED_MODELS)}")
    else:
        source = name
        if cache_dir is not None:
            kw["cache_dir"] = str(cache_dir)
    if device_map is not None:
        if str(device) != "cpu":
            raise ValueError(f"give device ({device!r}) or device_map ({device_map!r}), not both")
        if not (isinstance(device_map, dict) or device_map in _DEVICE_MAPS):
            raise ValueError(f"device_map must be None, a dict of module -> device, or one of "
                             f"{list(_DEVICE_MAPS)}; got {device_map!r}")
        kw["device_map"] = device_map
    elif str(device) != "cpu":
        kw["device_map"] = str(device)  # load straight onto the accelerator (needs accelerate)
    try:
        model = AutoModelForCausalLM.from_pretrained(source, **dtype_kwargs(dtype), **kw)
        tokenizer = AutoTokenizer.from_pretrained(source, **{k: v for k, v in kw.items()
                                                             if k == "cache_dir"})
    except OSError as err:
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
        why = " (HF_HUB_OFFLINE is set: only already-cached files can be used)" if offline else ""
        raise OSError(
            f"could not load model {name!r} from the Hugging Face hub{why}. Use a local "
            f"directory, or the embedded {sorted(EMBEDDED_MODELS)}. Cause: {err}"
        ) from err
    if device_map is None:
        model.to(device)
    identity = _identity_of(name, source)
    if identity is not None:
        tag_model(model, identity)
    return model.eval(), prepare_tokenizer(tokenizer)


def _identity_of(name: str, source: str | Path) -> str | None:
    """The content identity of a loaded checkpoint (:mod:`crispedit_lite.models.digest`), if cheap to know."""
    if name in EMBEDDED_MODELS:
        return f"embedded:{name}:gguf-sha256:{EMBEDDED_MODELS[name].gguf_sha256}"
    if isinstance(source, Path):
        return folder_digest(source)
    try:
        from huggingface_hub import try_to_load_from_cache

        config = try_to_load_from_cache(str(source), "config.json")
    except Exception:  # pragma: no cover - an old or missing huggingface_hub
        return None
    return folder_digest(Path(config).parent) if isinstance(config, str) else None


def random_init_model(
    name_or_config: str | Any,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    seed: int = 0,
    **overrides: Any,
) -> nn.Module:
    """Build a causal LM with random weights and real shapes, directly on ``device``.

    Args:
        name_or_config: a key of :data:`SHAPE_PRESETS` (``"llama3-8b-shape"``,
            ``"qwen2.5-1.5b-shape"``, ``"smollm2-135m-shape"``, ``"tiny-llama"``) or a transformers
            ``PretrainedConfig``.
        dtype: parameter dtype.
        device: where the parameters are created (no CPU copy of an 8B model is made).
        seed: seeds the initialisation.
        **overrides: config fields to change (e.g. ``num_hidden_layers=2``).

    Its outputs are meaningless; use it to time and size K-FAC, eigendecompositions and edit steps.
    Token ids from any tokenizer whose vocabulary is no larger than ``config.vocab_size`` are valid.

    Listed on the book page ``api``.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    if isinstance(name_or_config, str):
        if name_or_config not in SHAPE_PRESETS:
            raise ValueError(
                f"unknown shape preset {name_or_config!r}; presets: {sorted(SHAPE_PRESETS)}")
        fields = dict(SHAPE_PRESETS[name_or_config])
        config = AutoConfig.for_model(fields.pop("model_type"), **fields)
        config._name_or_path = name_or_config
    else:
        config = name_or_config
    for key, value in overrides.items():
        setattr(config, key, value)
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, **dtype_kwargs(dtype))
    if isinstance(name_or_config, str):
        extra = f":{json.dumps(overrides, sort_keys=True, default=str)}" if overrides else ""
        tag_model(model, f"random:{name_or_config}:seed{seed}{extra}")
    return model.eval()


