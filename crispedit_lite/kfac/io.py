"""Save and load K-FAC factors: one safetensors file whose header carries JSON metadata and a checksum.

Writes are atomic (a temporary file in the same directory, then ``os.replace``), so an interrupted
run never leaves a half-written cache, and an existing cache is only replaced by a complete one.
Loading checks the checksum and, when asked, that the cache was made for the requested settings.
Derived in notebook ``04_kfac_step_by_step``; reused across runs by ``crispedit_lite.editing``.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from crispedit_lite.kfac.factors import KFACFactors

__all__ = ["save_kfac", "load_kfac", "FORMAT_VERSION"]

FORMAT_VERSION = 1


def _checksum(tensors: Mapping[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for key in sorted(tensors):
        t = tensors[key].contiguous()
        h.update(key.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save_kfac(factors: Mapping[str, KFACFactors], path: str | os.PathLike) -> Path:
    """Write ``{module: KFACFactors}`` to ``path`` (a ``.safetensors`` file), atomically.

    Returns the path written. Derived in notebook ``04_kfac_step_by_step``.
    """
    if not factors:
        raise ValueError("save_kfac: nothing to save (empty factors)")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    modules: dict[str, Any] = {}
    for name, f in factors.items():
        tensors[f"{name}::A"] = f.A.detach().to("cpu", torch.float32).contiguous()
        tensors[f"{name}::S"] = f.S.detach().to("cpu", torch.float32).contiguous()
        modules[name] = {"n_tokens": int(f.n_tokens), "meta": f.meta}
    header = {"format_version": FORMAT_VERSION, "modules": modules, "sha256": _checksum(tensors)}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={"crispedit_lite": json.dumps(header, sort_keys=True)})
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def load_kfac(
    path: str | os.PathLike, expect: Mapping[str, Any] | None = None
) -> dict[str, KFACFactors]:
    """Load factors written by :func:`save_kfac`, verifying the checksum.

    Args:
        path: the ``.safetensors`` cache file.
        expect: metadata that every module's factors must carry (e.g. ``{"model_id": ...,
            "labels": "true"}``), and optionally ``"modules"``: the list of module names required.

    Raises:
        FileNotFoundError: no cache at ``path``.
        ValueError: not a crispedit-lite cache, corrupt (checksum), or metadata that does not match
            ``expect``; the message names the module and the field.

    Derived in notebook ``04_kfac_step_by_step``.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no K-FAC cache at {path}")
    try:
        with safe_open(str(path), framework="pt") as fh:
            raw = (fh.metadata() or {}).get("crispedit_lite")
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except Exception as err:  # safetensors raises its own error types
        raise ValueError(f"{path} is not a readable safetensors file: {err}") from err
    if raw is None:
        raise ValueError(f"{path} has no crispedit_lite header: not a K-FAC cache of this package")
    header = json.loads(raw)
    if header.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: format_version {header.get('format_version')} != {FORMAT_VERSION}")
    if _checksum(tensors) != header["sha256"]:
        raise ValueError(f"{path}: checksum mismatch, the cache is corrupt; delete it and recollect")
    expect = dict(expect or {})
    wanted = expect.pop("modules", None)
    if wanted is not None:
        missing = [m for m in wanted if m not in header["modules"]]
        if missing:
            raise ValueError(f"{path}: cache lacks modules {missing}; it has {list(header['modules'])}")
    out = {}
    for name, info in header["modules"].items():
        for key, value in expect.items():
            have = info["meta"].get(key)
            if have != value:
                raise ValueError(
                    f"{path}: module {name!r} was collected with {key}={have!r}, requested {value!r}"
                )
        if wanted is None or name in wanted:
            out[name] = KFACFactors(A=tensors[f"{name}::A"], S=tensors[f"{name}::S"],
                                    n_tokens=info["n_tokens"], meta=info["meta"])
    return out
