r"""What a model *is*, by content: a digest of its weights, so that caches follow the weights, not a path.

The K-FAC cache key (:func:`crispedit_lite.editing.kfac_cache.cache_key`) names the model by
:func:`model_identity`, so moving a model folder or ``$CRISPEDIT_CACHE`` keeps every cache entry
valid, and two folders with different weights never share one. The identity is, in order of cost:

* the tag that :func:`~crispedit_lite.models.load_model` and
  :func:`~crispedit_lite.models.random_init_model` attach (:func:`tag_model`): the embedded model's
  pinned GGUF digest, the digest of a folder's weight files (:func:`folder_digest`; a hub snapshot's
  files are named by their SHA-256 already), or ``random:<preset>`` with its seed and overrides;
* otherwise, or once any parameter has changed in place since it was tagged (an edit, an optimiser
  step: PyTorch counts in-place changes in each tensor's version), a SHA-256 over the parameters'
  names, dtypes, shapes and bytes. An edit that was undone (``EditResult.restore`` copies the
  original weights back) keeps the tag: the first time the identity is asked for, a fingerprint of
  the weights is taken (per parameter, the exact integer sum of its elements' bit patterns, computed
  where the weights live), and a model whose weights changed in place but match that fingerprint
  again is the tagged model.

Folder digests are remembered in ``$CRISPEDIT_CACHE/digests.json`` by (path, size, modification
time), so a large checkpoint is read once.

Described on the book page ``running``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from crispedit_lite.models.filehash import file_sha256

__all__ = ["WEIGHT_SUFFIXES", "folder_digest", "model_identity", "tag_model"]

#: Files whose bytes are the weights (and the config that gives them a meaning).
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
_ATTR = "_crispedit_identity"


def _versions(model: nn.Module) -> tuple[int, int]:
    params = list(model.parameters())
    return len(params), sum(int(p._version) for p in params)


def tag_model(model: nn.Module, identity: str) -> nn.Module:
    """Attach ``identity`` (valid while the weights are the tagged ones) to ``model``; return the model.

    Listed on the book page ``api``.
    """
    object.__setattr__(model, _ATTR, (identity, _versions(model), None))
    return model


_INT_VIEW = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _fingerprint(model: nn.Module) -> str:
    """Per parameter, the sum of its elements' bit patterns as integers (exact, order-free), hashed."""
    h = hashlib.sha256()
    for name, p in model.named_parameters():
        bits = p.detach().reshape(-1).view(_INT_VIEW[p.element_size()])
        h.update(f"{name}:{p.dtype}:{tuple(p.shape)}:{int(bits.sum(dtype=torch.int64))};".encode())
    return h.hexdigest()


def _parameter_digest(model: nn.Module) -> str:
    h = hashlib.sha256()
    for name, p in model.named_parameters():
        t = p.detach().to("cpu").contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return "parameters-sha256:" + h.hexdigest()


def model_identity(model: nn.Module) -> str:
    """The model's content identity: its valid tag (:func:`tag_model`), else a digest of its parameters.

    Listed on the book page ``api``.
    """
    tag: Any = getattr(model, _ATTR, None)
    if tag is None:
        return _parameter_digest(model)
    identity, versions, seen = tag
    now, dtypes = _versions(model), tuple(p.dtype for p in model.parameters())
    if versions == now:
        if seen is None or seen[0] != dtypes:  # still the tagged weights: remember what they look like
            object.__setattr__(model, _ATTR, (identity, now, (dtypes, _fingerprint(model))))
        return str(identity)
    if seen is not None and seen[0] == dtypes and _fingerprint(model) == seen[1]:  # an edit undone
        object.__setattr__(model, _ATTR, (identity, now, seen))
        return str(identity)
    return _parameter_digest(model)


def _file_sha256(path: Path) -> str:
    real = path.resolve()
    if path.is_symlink() and len(real.name) == 64 and real.parent.name == "blobs":
        return real.name  # a Hugging Face hub blob is named by its SHA-256
    return file_sha256(real)


def _memo_path() -> Path:
    from crispedit_lite.models.embedded import cache_root

    return cache_root() / "digests.json"


def _read_memo(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def folder_digest(folder: str | os.PathLike) -> str:
    """SHA-256 over a model folder's ``config.json`` and weight files (names and contents).

    Each file's digest is remembered by (resolved path, size, modification time) in
    ``$CRISPEDIT_CACHE/digests.json`` (written atomically, skipped when that folder is read-only).

    Listed on the book page ``api``.
    """
    from crispedit_lite.atomic import write_json_atomic

    folder = Path(folder).expanduser()
    files = sorted(p for p in folder.iterdir() if p.is_file() and
                   (p.name == "config.json" or p.name.endswith(WEIGHT_SUFFIXES)))
    memo_file = _memo_path()
    memo, changed = _read_memo(memo_file), False
    h = hashlib.sha256()
    for p in files:
        st = p.stat()
        key = f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}"
        digest = memo.get(key)
        if not isinstance(digest, str):
            digest, changed = _file_sha256(p), True
            memo[key] = digest
        h.update(f"{p.name}:{digest};".encode())
    if changed:
        try:
            write_json_atomic(memo_file, memo, indent=None, sort_keys=True)
        except OSError:
            pass  # a read-only cache: the digest is computed again next time
    return "files-sha256:" + h.hexdigest()
