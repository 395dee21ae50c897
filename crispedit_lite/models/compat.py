r"""One place for the differences between the transformers releases this package supports.

The package declares ``transformers>=4.46`` (the official CrispEdit code pins 4.46.2) and is tested on
that floor as well as on the newest 5.x release (``make test-compat``). Loading keywords changed in
between: ``from_pretrained``/``from_config`` took ``torch_dtype=`` until 4.56 introduced ``dtype=``
(``torch_dtype`` then became a deprecated alias), so every model load in the package passes its dtype
through :func:`dtype_kwargs`.

Decoder layers changed too (a tuple ``(hidden_states, ...)`` up to 4.53, the hidden-state tensor alone
from 4.54 on): code that reads or replaces a layer's output goes through :func:`layer_hidden` and
:func:`replace_hidden`.

``generate()`` in transformers 4.50-4.57 replaces a ``GenerationConfig`` value that equals the library
default (``do_sample=False``, ``temperature=1.0``, ...) with the model's own default, so greedy
decoding of a model whose ``generation_config.json`` asks for sampling (LLaMA-3-Instruct,
Qwen2.5-Instruct) silently samples; :func:`generate_kwargs` turns that off where ``generate()`` has
the switch.

Older GGUF readers load some files wrongly without a word: transformers 4.46 leaves
``tie_word_embeddings`` off for a file that has no ``output.weight`` (SmolLM2 ties its embeddings), so
``lm_head`` keeps its random initialisation, and its Llama tokenizer converter sets the EOS token to
the BOS token and prepends BOS although the file says not to. :func:`repair_gguf_load` sets both right
from the file's own metadata; on a release that reads the file right it changes nothing.

Described on the book page ``running``.
"""

from __future__ import annotations

import functools
import os
import re
from typing import Any

import torch

__all__ = ["DTYPE_KEYWORD_SINCE", "dtype_kwargs", "generate_kwargs", "layer_hidden", "repair_gguf_load",
           "replace_hidden", "transformers_version"]

DTYPE_KEYWORD_SINCE = (4, 56)
"""The first transformers release whose ``from_pretrained``/``from_config`` accept ``dtype=``."""


@functools.lru_cache(maxsize=1)
def transformers_version() -> tuple[int, int]:
    """``(major, minor)`` of the installed transformers (``"4.46.2"`` -> ``(4, 46)``)."""
    import transformers

    found = re.match(r"(\d+)\.(\d+)", transformers.__version__)
    if found is None:
        raise RuntimeError(f"cannot read the transformers version {transformers.__version__!r}")
    return int(found.group(1)), int(found.group(2))


def dtype_kwargs(dtype: torch.dtype | str | None) -> dict[str, Any]:
    """The keyword that sets a model's parameter dtype in the installed transformers.

    ``{"dtype": dtype}`` from transformers 4.56 on, ``{"torch_dtype": dtype}`` before it (4.46-4.55
    pass an unknown ``dtype=`` on to the model's ``__init__``, which raises ``TypeError``); ``{}`` for
    ``None``. Use as ``AutoModelForCausalLM.from_pretrained(path, **dtype_kwargs(torch.float32))``.

    Described on the book page ``running``.
    """
    if dtype is None:
        return {}
    return {"dtype" if transformers_version() >= DTYPE_KEYWORD_SINCE else "torch_dtype": dtype}


def generate_kwargs(model: Any) -> dict[str, Any]:
    """``{"use_model_defaults": False}`` where ``generate`` takes it (transformers 4.50-4.57), else ``{}``.

    With it, the ``GenerationConfig`` passed to ``generate()`` is used as given, as in transformers
    4.46-4.49 and 5.x, instead of taking the model's defaults for every value left at the library
    default (which would turn ``do_sample=False`` into sampling for an instruction-tuned model).

    Described on the book page ``running``.
    """
    import inspect

    return ({"use_model_defaults": False}
            if "use_model_defaults" in inspect.signature(model.generate).parameters else {})


def layer_hidden(output: Any) -> torch.Tensor:
    """The hidden states of a decoder layer's output: ``output[0]`` for a tuple, else ``output``.

    Described on the book page ``running``.
    """
    return output[0] if isinstance(output, tuple) else output


def replace_hidden(output: Any, hidden: torch.Tensor) -> Any:
    """``output`` with its hidden states replaced by ``hidden``, in the same form (tuple or tensor).

    Described on the book page ``running``.
    """
    return (hidden, *output[1:]) if isinstance(output, tuple) else hidden


def _gguf_int(reader: Any, key: str) -> int | None:
    field = reader.fields.get(key)
    return None if field is None or not field.data else int(field.parts[field.data[0]][0])


def repair_gguf_load(model: Any, tokenizer: Any, gguf_path: str | os.PathLike) -> list[str]:
    """Make a GGUF-loaded model and tokenizer agree with the file's metadata; say what was changed.

    * No ``output.weight`` tensor in the file means the output layer is the token embedding
      (``tie_word_embeddings``); an untied ``lm_head`` is tied to the input embedding.
    * ``tokenizer.ggml.{bos,eos,padding,unknown}_token_id`` name the special tokens, and
      ``tokenizer.ggml.add_bos_token`` whether encoding prepends BOS.

    Returns one line per repair (empty where the installed transformers read the file right).
    Raises ``ValueError`` when a tokenizer cannot be made to follow ``add_bos_token``.

    Described on the book page ``running``.
    """
    from gguf import GGUFReader

    reader = GGUFReader(os.fspath(gguf_path))
    fixed: list[str] = []
    has_output = any(t.name == "output.weight" for t in reader.tensors)
    if not has_output and not getattr(model.config, "tie_word_embeddings", False):
        model.config.tie_word_embeddings = True
        model.get_output_embeddings().weight = model.get_input_embeddings().weight
        fixed.append("tied the output layer to the token embedding (the file has no output.weight)")
    for attr, key in (("bos_token", "bos_token_id"), ("eos_token", "eos_token_id"),
                      ("pad_token", "padding_token_id"), ("unk_token", "unknown_token_id")):
        idx = _gguf_int(reader, f"tokenizer.ggml.{key}")
        if idx is None:
            continue
        want = tokenizer.convert_ids_to_tokens(idx)
        if getattr(tokenizer, attr) != want:
            fixed.append(f"{attr} {getattr(tokenizer, attr)!r} -> {want!r} (tokenizer.ggml.{key})")
            setattr(tokenizer, attr, want)
    add_bos = _gguf_int(reader, "tokenizer.ggml.add_bos_token")
    bos = tokenizer.bos_token_id
    if add_bos is not None and bos is not None:
        adds = tokenizer("a").input_ids[:1] == [bos]
        if adds != bool(add_bos):
            if getattr(tokenizer, "add_bos_token", None) is None:
                raise ValueError(f"{type(tokenizer).__name__} has no add_bos_token to set to "
                                 f"{bool(add_bos)} (tokenizer.ggml.add_bos_token in {gguf_path})")
            tokenizer.add_bos_token = bool(add_bos)
            if (tokenizer("a").input_ids[:1] == [bos]) != bool(add_bos):
                raise ValueError(f"{type(tokenizer).__name__} ignores add_bos_token={bool(add_bos)} "
                                 f"(tokenizer.ggml.add_bos_token in {gguf_path})")
            fixed.append(f"add_bos_token -> {bool(add_bos)} (tokenizer.ggml.add_bos_token)")
    return fixed
