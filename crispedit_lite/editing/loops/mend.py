r"""MEND's passes over the model and its editor files.

:func:`collect_factors` runs the model once on an edit batch and returns, for every edited
``nn.Linear``, the token inputs :math:`\mathbf u_t` and output gradients :math:`\boldsymbol\delta_t`
of the mean target NLL (:func:`target_nll`), which MEND's editor network maps to a weight change
(:mod:`crispedit_lite.editing.updates.mend`). :func:`save_editor` / :func:`load_editor` write and read a
trained network as safetensors (architecture in the header metadata, digest checked at load), and
:func:`editor_file` finds the file a run names (a path, or ``"shipped"``: :data:`SHIPPED_EDITORS`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from crispedit_lite.editing.updates.mend import MendNetwork
from crispedit_lite.models.filehash import file_sha256

__all__ = ["SHIPPED_EDITORS", "collect_factors", "editor_file", "editor_shapes", "file_sha256", "load_editor",
           "save_editor", "target_nll"]

# The trained editors shipped in crispedit_lite/resources/, by the model they edit, with the model's
# shape (model_type, num_hidden_layers, hidden_size, intermediate_size) and the file's SHA-256.
SHIPPED_EDITORS: dict[str, dict[str, Any]] = {
    "smollm2-135m-instruct": {"shape": ("llama", 30, 576, 1536), "file": "mend_smollm2_135m.safetensors",
                              "sha256": "ee451318618f4a7ae400bb9de86f37eedbb6589f3dc92871c9d8347e55c79058"},
}
_HEX64 = frozenset("0123456789abcdef")


def target_nll(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """``(mean NLL over the target tokens, share of sequences whose every target token is the argmax)``.

    Position ``t`` predicts label ``t + 1`` (the official ``multiclass_log_probs`` with ``shift=True``;
    the same mean as :func:`~crispedit_lite.editing.loops.trainer.ft_m_loss`). Sequences without a target
    token count as hits.

    Listed on the book page ``api``.
    """
    logits, labels = logits[:, :-1].float(), labels[:, 1:].to(logits.device)
    mask = labels != -100
    if not mask.any():
        raise ValueError("MEND: the edit batch has no target tokens (every label is -100)")
    nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.clamp_min(0).reshape(-1),
                          reduction="none").view_as(labels)
    hit = ((logits.argmax(-1) == labels) | ~mask).all(-1)
    return (nll * mask).sum() / mask.sum(), hit.float().mean()


def collect_factors(model: nn.Module, batch: Mapping[str, Tensor], modules: Sequence[str]
                    ) -> tuple[Tensor, dict[str, tuple[Tensor, Tensor]], Tensor]:
    r"""``(loss, {module: (u, delta)}, logits)``: inputs and output gradients of the mean target NLL.

    One forward and one backward pass that stops at the lowest edited module (only the edited
    outputs are differentiated, with ``torch.autograd.grad``; no ``.grad`` is left behind). ``u`` has
    shape ``(batch, length, d_in)``, ``delta`` ``(batch, length, d_out)``, as the official hooks
    record them (``hooks.py``); everything returned is detached. Sequences of the batch without labels
    get zero output gradients (MEND drops their rows), so the trainer runs its locality texts in the
    same pass.

    Listed on the book page ``api``.
    """
    mods = {name: model.get_submodule(name) for name in modules}
    for name, mod in mods.items():
        if not isinstance(mod, nn.Linear):
            raise ValueError(f"module {name!r} is a {type(mod).__name__}; MEND edits nn.Linear")
    inputs: dict[str, Tensor] = {}
    outputs: dict[str, Tensor] = {}

    def hook(name: str):
        def fn(_mod: nn.Module, args: tuple[Tensor, ...], out: Tensor) -> None:
            inputs[name], outputs[name] = args[0].detach(), out
        return fn

    flags = {name: mod.weight.requires_grad for name, mod in mods.items()}
    handles = [mod.register_forward_hook(hook(name)) for name, mod in mods.items()]
    device = next(model.parameters()).device
    try:
        for mod in mods.values():  # puts the edited outputs on the autograd graph
            mod.weight.requires_grad_(True)
        with torch.enable_grad():
            logits = model(input_ids=batch["input_ids"].to(device),
                           attention_mask=batch["attention_mask"].to(device)).logits
            loss, _ = target_nll(logits, batch["labels"])
            grads = torch.autograd.grad(loss, [outputs[n] for n in modules])
    finally:
        for h in handles:
            h.remove()
        for name, mod in mods.items():
            mod.weight.requires_grad_(flags[name])
    factors = {n: (inputs[n], g.detach()) for n, g in zip(modules, grads, strict=True)}
    return loss.detach(), factors, logits.detach()




def editor_file(editor: str, sha256: str | None, shape: Sequence[Any]) -> tuple[Path, str | None]:
    """``(path, pinned digest)`` of the editor a run names, for a model of ``shape``; a ``ValueError`` else.

    ``editor`` is ``"shipped"`` (the :data:`SHIPPED_EDITORS` entry of that shape, with its digest) or a
    file, looked up from the working directory and then its parents when relative (so that a path
    relative to a checkout's root also works from ``notebooks/``). ``sha256`` pins a file's digest
    (64 hexadecimal digits). Errors name the setting (``mend_editor``, ``mend_editor_sha256``).

    Listed on the book page ``api``.
    """
    if sha256 is not None and not (len(sha256) == 64 and set(sha256.lower()) <= _HEX64):
        raise ValueError(f"mend_editor_sha256 must be 64 hexadecimal digits (a SHA-256), got {sha256!r}")
    if editor != "shipped":
        path = Path(editor).expanduser()
        found = [d / path for d in (Path.cwd(), *Path.cwd().parents) if (d / path).is_file()]
        if not found:
            raise ValueError(f"mend_editor: no file {str(path)!r} (from {str(Path.cwd())!r} or a parent); "
                             "train one with python -m crispedit_lite.editing.mend_train")
        return (path if path.is_absolute() else found[0]), sha256
    for entry in SHIPPED_EDITORS.values():
        if tuple(entry["shape"]) == tuple(shape):
            ref = resources.files("crispedit_lite") / "resources" / entry["file"]
            return Path(str(ref)), sha256 or entry["sha256"]
    raise ValueError(f"mend_editor: no shipped editor for a model of shape {tuple(shape)} (model_type, "
                     f"layers, hidden, intermediate); shipped: {sorted(SHIPPED_EDITORS)}. Train one with "
                     "python -m crispedit_lite.editing.mend_train and set mend_editor to its file")


def editor_shapes(path: str | Path) -> dict[str, tuple[int, int]]:
    """``{module: (d_out, d_in)}`` that the editor file at ``path`` was trained for (its header only).

    Listed on the book page ``api``.
    """
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if "mend" not in meta:
        raise ValueError(f"mend_editor: {str(path)!r} is not a MEND editor file (its safetensors metadata "
                         "has no 'mend' entry)")
    return {name: (int(s[0]), int(s[1])) for name, s in json.loads(meta["mend"])["shapes"].items()}


def load_editor(path: str | Path, sha256: str | None = None, device: Any = "cpu",
                dtype: torch.dtype = torch.float32) -> MendNetwork:
    """A trained :class:`MendNetwork` from a safetensors file (eval mode), digest checked first.

    ``dtype``: the network's computation dtype (float32; float64 for a float64 model).

    Listed on the book page ``api``.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    if sha256 is not None and (got := file_sha256(path)) != sha256:
        raise ValueError(f"MEND editor {str(path)!r}: SHA-256 {got} differs from the pinned {sha256}")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    net = MendNetwork.from_metadata(meta)
    state = {k: v.to(dtype) for k, v in load_file(str(path)).items()}
    net.load_state_dict(state, strict=True)
    return net.to(device=device, dtype=dtype).eval()


def save_editor(net: MendNetwork, path: str | Path, *, half: bool = False,
                metadata: Mapping[str, str] | None = None) -> Path:
    """Write ``net`` as safetensors (atomically); ``half``: the low-rank factors U, V in float16.

    Small tensors (step sizes, normalisation statistics, scales, shifts, biases) stay float32.

    Listed on the book page ``api``.
    """
    from safetensors.torch import save_file

    from crispedit_lite.atomic import atomic_path

    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    if half:
        state = {k: v.half() if k.endswith((".u", ".v")) else v.float() for k, v in state.items()}
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={**net.metadata(), **dict(metadata or {})})
    return path
