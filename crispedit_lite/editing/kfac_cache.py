r"""Capability-side curvature for editing: K-FAC factors of the capability corpus, cached on disk.

The K-FAC factors of the capability loss are the expensive, reusable part of CrispEdit (the paper
collects them once on 10,000 Wikipedia articles and reuses them across runs). They are cached as one
safetensors file per (model, model dtype, modules, corpus fingerprint, n, max length, labels,
approx, seed), under ``$CRISPEDIT_CACHE/kfac/`` (see :func:`crispedit_lite.models.cache_root`).
The model enters the key by its content (:func:`crispedit_lite.models.digest.model_identity`: the
digest of its weights), not by its path, so moving the model or the cache keeps every entry.
A cache is never modified in place, a cache made for other settings is never returned, and an
unusable one (truncated, bad checksum over the tensors and the metadata, wrong metadata, an older
format) is moved aside with a warning and recollected. A read-only cache folder is fine when it holds
the entry; when it does not, the error says so before any collection starts.
Collection holds a file lock (``<key>.lock``, :mod:`crispedit_lite.kfac.lock`), so two processes
asking for the same factors collect them once; a waiting process says whom it waits for and gives
up after a stated time. With ``checkpoint_every`` the running sums are checkpointed and a killed run resumes
bit-identically; under ``torch.distributed`` the texts are sharded over ranks and the sums
all-reduced (:mod:`crispedit_lite.kfac.distributed`).

Derived in notebook ``06_crispedit_on_a_small_lm``.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch
from torch import nn

from crispedit_lite.kfac import KFACFactors, load_kfac, save_kfac
from crispedit_lite.kfac import distributed as kdist
from crispedit_lite.kfac.checkpoint import KFACSums, load_checkpoint, save_checkpoint
from crispedit_lite.kfac.hooks import accumulate_kfac
from crispedit_lite.kfac.io import file_lock, move_aside
from crispedit_lite.projector import InputNullspaceProjector, KroneckerProjector

__all__ = ["capability_factors", "build_projectors", "cache_key", "corpus_fingerprint"]


def _model_id(model: nn.Module) -> str:
    from crispedit_lite.models.digest import model_identity

    return model_identity(model)


def _older_entries(folder: Path) -> int:
    """How many entries of ``folder`` an older version wrote (``format_version`` 1, keyed by the path)."""
    from safetensors import safe_open

    count = 0
    for p in folder.glob("*.safetensors") if folder.is_dir() else []:
        try:
            with safe_open(str(p), framework="pt") as fh:
                header = json.loads((fh.metadata() or {}).get("crispedit_lite", "{}"))
        except Exception:  # unreadable entries are reported when they are looked up
            continue
        count += isinstance(header, dict) and header.get("format_version") == 1
    return count


def _writable(folder: Path) -> bool:
    """Whether ``folder`` (or the nearest existing folder above it) takes new files."""
    while not folder.exists():
        folder = folder.parent
    return os.access(folder, os.W_OK | os.X_OK)


def corpus_fingerprint(texts: Sequence[str]) -> str:
    """SHA-256 over the texts' own SHA-256 digests, in order (unambiguous for any separator).

    Listed on the book page ``api``.
    """
    h = hashlib.sha256()
    for t in texts:
        h.update(hashlib.sha256(t.encode()).digest())
    return h.hexdigest()


def cache_key(model_id: str, modules: Sequence[str], texts: Sequence[str], *, max_length: int,
              labels: str, seed: int, dtype: str = "float32", approx: str = "expand") -> str:
    """Hash of everything that determines the factors (the texts enter by :func:`corpus_fingerprint`).

    ``dtype`` is the model's parameter dtype (``"bfloat16"``), ``approx`` K-FAC's ``"expand"`` or
    ``"reduce"``.

    Listed on the book page ``api``.
    """
    payload = json.dumps({"model": model_id, "modules": list(modules),
                          "corpus": corpus_fingerprint(texts), "n": len(texts),
                          "max_length": max_length, "labels": labels, "seed": seed,
                          "dtype": str(dtype).replace("torch.", ""), "approx": approx},
                         sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def _load(path: Path, expect: dict[str, Any], heal: bool) -> dict[str, KFACFactors] | None:
    """The cached factors, or ``None`` if absent or (``heal``: moved aside as) unusable."""
    if not path.exists():
        return None
    try:
        return load_kfac(path, expect=expect)
    except ValueError as err:
        if heal:
            move_aside(path, str(err).replace(f"{path}: ", "").replace(str(path), "the file"))
        return None


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
    approx: str = "expand",
    checkpoint_every: int | None = None,
    distributed: bool | None = None,
) -> tuple[dict[str, KFACFactors], dict[str, Any]]:
    """K-FAC factors of ``modules`` on the capability ``texts``, from the cache when possible.

    Args:
        model, tokenizer, modules, texts: what to collect (``modules`` as in ``named_modules``).
        max_length, batch_size: tokenisation (the paper: 512 tokens, one text per batch).
        labels, approx, seed: K-FAC settings (see :func:`crispedit_lite.kfac.collect_kfac`).
        cache_dir: default ``$CRISPEDIT_CACHE/kfac``. use_cache: read and write the cache.
        progress: a tqdm bar over batches.
        checkpoint_every: save the running sums (with the batch count and the sampler state)
            atomically every this many batches to ``<key>.ckpt`` beside the cache entry; a rerun
            resumes from it and returns bit-identical factors. Removed once the entry is written.
        distributed: shard the texts over the ranks of ``torch.distributed`` and all-reduce the
            sums (``None``: when a process group of more than one rank is initialised). Every rank
            returns the same factors; rank 0 writes the entry, the others wait at a barrier. With
            ``labels="sampled"`` rank :math:`r` samples with seed ``seed + r``.

    Returns ``(factors, info)`` where ``info`` holds the cache path, whether it was a cache hit, the
    token count, the collection time, the batch a checkpoint resumed from and the world size.
    Derived in notebook ``06_crispedit_on_a_small_lm``.
    """
    from crispedit_lite.data.batches import tokenize_capability

    if len(texts) == 0:
        raise ValueError("no capability texts: K-FAC needs at least one")
    if checkpoint_every is not None and (int(checkpoint_every) != checkpoint_every or checkpoint_every < 1):
        raise ValueError(f"checkpoint_every must be a positive integer or None, got {checkpoint_every!r}")
    dist_on = kdist.use_distributed(distributed)
    rank, world = kdist.rank_and_world() if dist_on else (0, 1)
    model_id = _model_id(model)
    dtype = str(next(model.parameters()).dtype).replace("torch.", "")
    key = cache_key(model_id, modules, texts, max_length=max_length, labels=labels, seed=seed,
                    dtype=dtype, approx=approx)
    if cache_dir is None:
        from crispedit_lite.models import cache_root

        cache_dir = Path(cache_root()) / "kfac"
    path = Path(cache_dir) / f"{key}.safetensors"
    expect = {"model_id": model_id, "labels": labels, "approx": approx, "model_dtype": dtype,
              "modules": list(modules)}
    start = time.perf_counter()

    def result(factors: dict[str, KFACFactors], hit: bool, resumed: int = 0):
        return factors, {"cache": str(path) if use_cache else None, "hit": hit,
                         "seconds": time.perf_counter() - start, "resumed_from_batch": resumed,
                         "n_tokens": next(iter(factors.values())).n_tokens, "world_size": world}

    with ExitStack() as stack:
        factors = None
        if use_cache and rank == 0:
            factors = _load(path, expect, heal=False)  # a hit needs no lock: entries are atomic
            if factors is None and not _writable(path.parent):
                raise PermissionError(f"the K-FAC cache {path.parent} is read-only and holds no entry for "
                                      f"these factors ({path.name}); pass a writable cache folder")
            if factors is None:
                older = _older_entries(path.parent)
                if older:
                    warnings.warn(f"{path.parent} holds {older} K-FAC entr{'y' if older == 1 else 'ies'} "
                                  "written by an older version (keyed by the model's path, checksum "
                                  "without the metadata); they are never used and may be deleted",
                                  stacklevel=2)
                stack.enter_context(file_lock(path.with_suffix(".lock")))
                factors = _load(path, expect, heal=True)  # written meanwhile, or unusable
        if dist_on and kdist.broadcast_object(factors is not None) and rank != 0:
            factors = load_kfac(path, expect=expect)
        if factors is not None:
            return result(factors, hit=True)
        ckpt = Path(cache_dir) / (f"{key}.ckpt" if world == 1 else f"{key}.rank{rank}-of-{world}.ckpt")
        own = kdist.shard(list(texts), rank, world)
        batches = tokenize_capability(own, tokenizer, max_length=max_length, batch_size=batch_size)
        sums, resumed = _collect(model, modules, batches, ckpt, checkpoint_every, progress,
                        {"cache_key": key, "batch_size": batch_size, "rank": rank, "world": world,
                         "n_batches": len(batches)},
                        labels=labels, approx=approx, seed=seed + (rank if labels == "sampled" else 0),
                        model_id=model_id)
        if dist_on:
            sums = kdist.all_reduce_sums(sums)
        factors = sums.to_factors()
        for f in factors.values():
            f.meta.update(seed=seed, n_texts=len(texts), max_length=max_length, cache_key=key)
        if use_cache and rank == 0:
            save_kfac(factors, path)
        if dist_on:
            kdist.barrier()
        if ckpt.exists():
            ckpt.unlink()
    return result(factors, hit=False, resumed=resumed)


def _collect(model: nn.Module, modules: Sequence[str], batches: list, ckpt: Path,
             every: int | None, progress: bool, info: dict[str, Any], **kw: Any
             ) -> tuple[KFACSums, int]:
    """K-FAC sums over ``batches`` resumed from and checkpointed to ``ckpt``; and the resumed batch."""
    resume = None
    if every is not None and ckpt.exists():
        try:
            resume = load_checkpoint(ckpt, info=info)
        except ValueError as err:
            move_aside(ckpt, str(err).replace(f"{ckpt}: ", ""))

    def on_batch(sums: KFACSums) -> None:
        if sums.batches % every == 0 and sums.batches < len(batches):
            save_checkpoint(sums, ckpt, info)

    sums = accumulate_kfac(model, list(modules), batches, progress=progress, resume=resume,
                           on_batch=on_batch if every is not None else None, **kw)
    return sums, resume.batches if resume is not None else 0


def build_projectors(
    model: nn.Module,
    factors: dict[str, KFACFactors],
    gamma: float,
    *,
    kind: str = "kronecker",
    rule: str = "code",
    eigh_dtype: torch.dtype = torch.float64,
    projection: str = "reference",
) -> tuple[dict[torch.Tensor, Any], dict[str, dict[str, float]]]:
    """One projector per edited module, keyed by its weight, on the weight's device.

    ``kind="kronecker"`` is CrispEdit's :class:`KroneckerProjector`; ``kind="input"`` the
    Adam-NSCL :class:`InputNullspaceProjector`. Returns ``(projectors, stats)`` with each module's
    protected rank, editable fraction and threshold. ``projection="fast"`` applies each Kronecker
    projector through :func:`~crispedit_lite.fastproject.guard.guarded_projector` (the same
    projection, cheaper, where a precision check passes) and records its choice in ``stats``.
    Derived in notebook ``08_one_framework``.
    """
    if projection not in ("reference", "fast"):
        raise ValueError(f"projection must be 'reference' or 'fast', got {projection!r}")
    projectors, stats = {}, {}
    for name, f in factors.items():
        weight = model.get_submodule(name).weight
        if weight.device.type == "meta":
            raise ValueError(f"module {name!r} is offloaded (its weight is on the meta device); an "
                             "edited layer must live on a CPU or GPU: map it to one in device_map")
        # eigendecompose where the weight lives: on a GPU, eigh of a 14336^2 factor takes ~1.5 s;
        # on the CPU (where factors are cached) it takes minutes
        f = KFACFactors(A=f.A.to(weight.device), S=f.S.to(weight.device), n_tokens=f.n_tokens,
                        meta=f.meta)
        if kind == "kronecker":
            proj = KroneckerProjector.from_kfac(f, gamma, rule=rule, eigh_dtype=eigh_dtype).to(weight.device)
            stats[name] = {"rank": proj.rank, "editable_fraction": proj.editable_fraction,
                           "threshold": proj.threshold}
            if projection == "fast":
                from crispedit_lite.fastproject.guard import guarded_projector

                proj, how = guarded_projector(proj)
                stats[name].update(how)
        elif kind == "input":
            proj = InputNullspaceProjector.from_factor(
                f.A, d_out=f.d_out, gamma=gamma, rule=rule, eigh_dtype=eigh_dtype,
                transposed=bool(f.meta.get("transposed", False))).to(weight.device)
            stats[name] = {"rank": proj.rank, "editable_fraction": proj.editable_fraction}
        else:
            raise ValueError(f"kind must be 'kronecker' or 'input', got {kind!r}")
        projectors[weight] = proj
    return projectors, stats
