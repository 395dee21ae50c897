r"""Capability-side curvature for editing: K-FAC factors of the capability corpus, cached on disk.

The K-FAC factors of the capability loss are the expensive, reusable part of CrispEdit (the paper
collects them once on 10,000 Wikipedia articles and reuses them across runs). They are cached as one
safetensors file per (model, modules, corpus fingerprint, n, max length, labels, seed), under
``$CRISPEDIT_CACHE/kfac/`` (see :func:`crispedit_lite.models.cache_root`); a cache is never
modified in place, and a cache made for other settings is never returned.

Derived in notebook ``06_crispedit_on_a_small_lm``.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from crispedit_lite.kfac import KFACFactors, collect_kfac, load_kfac, save_kfac
from crispedit_lite.projector import InputNullspaceProjector, KroneckerProjector

__all__ = ["capability_factors", "build_projectors", "cache_key"]


def _model_id(model: nn.Module) -> str:
    return str(getattr(getattr(model, "config", None), "_name_or_path", "") or type(model).__name__)


def cache_key(model_id: str, modules: Sequence[str], texts: Sequence[str], *, max_length: int,
              labels: str, seed: int) -> str:
    """Hash of everything that determines the factors (the texts enter by their SHA-256)."""
    corpus = hashlib.sha256("\x00".join(texts).encode()).hexdigest()
    payload = json.dumps({"model": model_id, "modules": list(modules), "corpus": corpus,
                          "n": len(texts), "max_length": max_length, "labels": labels,
                          "seed": seed}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def capability_factors(
    model: nn.Module,
    tokenizer: Any,
    modules: Sequence[str],
    texts: Sequence[str],
    *,
    max_length: int = 512,
    batch_size: int = 1,
    labels: str = "true",
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
    progress: bool = True,
) -> tuple[dict[str, KFACFactors], dict[str, Any]]:
    """K-FAC factors of ``modules`` on the capability ``texts``, from the cache when possible.

    Returns ``(factors, info)`` where ``info`` holds the cache path, whether it was a cache hit, the
    token count and the collection time. Derived in notebook ``06_crispedit_on_a_small_lm``.
    """
    from crispedit_lite.batches import tokenize_capability

    if len(texts) == 0:
        raise ValueError("no capability texts: K-FAC needs at least one")
    model_id = _model_id(model)
    key = cache_key(model_id, modules, texts, max_length=max_length, labels=labels, seed=seed)
    if cache_dir is None:
        from crispedit_lite.models import cache_root

        cache_dir = Path(cache_root()) / "kfac"
    path = Path(cache_dir) / f"{key}.safetensors"
    expect = {"model_id": model_id, "labels": labels, "modules": list(modules)}
    if use_cache and path.exists():
        start = time.perf_counter()
        factors = load_kfac(path, expect=expect)
        return factors, {"cache": str(path), "hit": True, "seconds": time.perf_counter() - start,
                         "n_tokens": next(iter(factors.values())).n_tokens}
    batches = tokenize_capability(texts, tokenizer, max_length=max_length, batch_size=batch_size)
    start = time.perf_counter()
    factors = collect_kfac(model, list(modules), batches, labels=labels, seed=seed,
                           model_id=model_id, progress=progress)
    seconds = time.perf_counter() - start
    for f in factors.values():
        f.meta.update(n_texts=len(texts), max_length=max_length, cache_key=key)
    if use_cache:
        save_kfac(factors, path)
    return factors, {"cache": str(path) if use_cache else None, "hit": False, "seconds": seconds,
                     "n_tokens": next(iter(factors.values())).n_tokens}


def build_projectors(
    model: nn.Module,
    factors: dict[str, KFACFactors],
    gamma: float,
    *,
    kind: str = "kronecker",
    rule: str = "code",
    eigh_dtype: torch.dtype = torch.float64,
) -> tuple[dict[torch.Tensor, Any], dict[str, dict[str, float]]]:
    """One projector per edited module, keyed by its weight, on the weight's device.

    ``kind="kronecker"`` is CrispEdit's :class:`KroneckerProjector`; ``kind="input"`` the
    Adam-NSCL :class:`InputNullspaceProjector`. Returns ``(projectors, stats)`` with each module's
    protected rank, editable fraction and threshold. Derived in notebook ``06_crispedit_on_a_small_lm``.
    """
    projectors, stats = {}, {}
    for name, f in factors.items():
        weight = model.get_submodule(name).weight
        # eigendecompose where the weight lives: on a GPU, eigh of a 14336^2 factor takes ~1.5 s;
        # on the CPU (where factors are cached) it takes minutes
        f = KFACFactors(A=f.A.to(weight.device), S=f.S.to(weight.device), n_tokens=f.n_tokens,
                        meta=f.meta)
        if kind == "kronecker":
            proj = KroneckerProjector.from_kfac(f, gamma, rule=rule, eigh_dtype=eigh_dtype)
            stats[name] = {"rank": proj.rank, "editable_fraction": proj.editable_fraction,
                           "threshold": proj.threshold}
        elif kind == "input":
            proj = InputNullspaceProjector.from_factor(
                f.A, d_out=f.d_out, gamma=gamma, rule=rule, eigh_dtype=eigh_dtype,
                transposed=bool(f.meta.get("transposed", False)))
            stats[name] = {"rank": proj.rank, "editable_fraction": proj.editable_fraction}
        else:
            raise ValueError(f"kind must be 'kronecker' or 'input', got {kind!r}")
        projectors[weight] = proj.to(weight.device)
    return projectors, stats
