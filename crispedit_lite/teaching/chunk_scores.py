r"""Chunk-by-chunk scores of a sequential edit: what chapter 7 measures after every chunk.

After chunk :math:`k` of :math:`N` every edit of the stream is scored teacher-forced (token accuracy of
its target given its prompt, and of its paraphrase) and the model's KL to the base on held-out text is
measured. Stacked over :math:`k`, the per-chunk means form the *retention matrix*
:math:`R_{kj}` (row: after chunk :math:`k`; column: chunk :math:`j`): its diagonal is what each chunk
holds right after its own edit, the entries below it what the later chunks left of it.

:func:`score_chunks` is one row of it. :func:`memit_chunk_runs` runs chapter 7's section 7.7, MEMIT in
chunks with and without the cache of earlier keys, and scores every chunk; ``benchmarks/ch07_memit_chunks.py``
runs it with the chapter's settings and writes the JSON the chapter reads, because the two runs take
longer than the book's build can afford on a CPU. :data:`RECORD_KEYS` names the chapter parameters the
file records, so that the chapter uses it only when its own parameters match.

Derived in notebook ``07_sequential_editing``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from torch import nn

__all__ = ["MEMIT_RUNS", "RECORD_KEYS", "memit_chunk_runs", "record_differences", "score_chunks"]

#: Section 7.7's two runs: label -> registry method.
MEMIT_RUNS = {"MEMIT-Chunked": "memit_chunked", "MEMIT-Seq": "memit_seq"}
#: Chapter 7's parameters and the keys under which ``benchmarks/ch07_memit_chunks.py`` records them.
RECORD_KEYS = {"MODEL": "model", "SEED": "seed", "N_CHUNKS": "n_chunks", "CHUNK_SIZE": "chunk_size",
               "N_CAPABILITY": "n_capability", "CAPABILITY_MAX_LENGTH": "capability_max_length",
               "N_PROXY": "n_proxy", "PROXY_MAX_LENGTH": "proxy_max_length"}


def score_chunks(model: nn.Module, tokenizer: Any, flat: Sequence[Any], *, n_chunks: int, chunk_size: int,
                 proxy_texts: Sequence[str], base_logprobs: Any, proxy_max_length: int) -> dict[str, Any]:
    """One row of the retention matrix: mean TF Rel and Gen (x100) per chunk, and the KL to the base.

    ``flat`` holds the edits in chunk order (``n_chunks * chunk_size`` of them); ``base_logprobs`` is
    :func:`~crispedit_lite.evaluation.token_logprobs` of the unedited model on ``proxy_texts``.

    Derived in notebook ``07_sequential_editing``.
    """
    from crispedit_lite.evaluation import kl_to_base, teacher_forced_evaluate

    if len(flat) != n_chunks * chunk_size:
        raise ValueError(f"score_chunks: {len(flat)} edits for {n_chunks} chunks of {chunk_size}")
    tf = teacher_forced_evaluate(model, tokenizer, flat)
    rel = np.array([r["rel"] for r in tf["records"]]) * 100
    gen = np.array([r["gen"] for r in tf["records"]]) * 100
    kl = kl_to_base(model, tokenizer, proxy_texts, base=base_logprobs, max_length=proxy_max_length)
    return {"rel_chunk": rel.reshape(n_chunks, chunk_size).mean(1),
            "gen_chunk": gen.reshape(n_chunks, chunk_size).mean(1), "kl": float(kl)}


def memit_chunk_runs(model: nn.Module, tokenizer: Any, requests: Sequence[Any], capability: Sequence[str], *,
                     chunk_size: int, n_capability: int, capability_max_length: int, seed: int,
                     proxy_texts: Sequence[str], base_logprobs: Any, proxy_max_length: int,
                     **changes: Any) -> dict[str, Any]:
    """MEMIT-Chunked and MEMIT-Seq on the same chunks, every edit scored after every chunk (section 7.7).

    Each run starts from the current weights and restores them afterwards; ``changes`` go to both
    editors' :func:`~crispedit_lite.editing.cpu_config` (e.g. ``layers``). Returns ``{"rel": {label:
    (N, N) retention matrix}, "gen": ..., "kl": {label: N values}, "chunks": [[case ids]], "seconds":
    {label: s}}`` with lists (JSON-ready).

    Derived in notebook ``07_sequential_editing``.
    """
    from crispedit_lite.editing import cpu_config, edit
    from crispedit_lite.editing.loops.sequential import chunk_requests

    chunks = chunk_requests(list(requests), chunk_size, seed)
    flat = [r for c in chunks for r in c]
    n_chunks = len(chunks)
    if n_chunks * chunk_size != len(flat):
        raise ValueError(f"memit_chunk_runs: {len(flat)} edits do not fill chunks of {chunk_size}")
    out: dict[str, Any] = {"rel": {}, "gen": {}, "kl": {}, "seconds": {},
                           "chunks": [[getattr(r, "case_id", None) for r in c] for c in chunks]}
    for label, method in MEMIT_RUNS.items():
        rows: list[dict[str, Any]] = []

        def after_chunk(k: int, chunk: Sequence[Any], state: Any, rows: list = rows, method: str = method
                        ) -> None:
            if list(chunk) != chunks[k]:
                raise RuntimeError(f"{method}: chunk {k} differs from chunk_requests' order")
            rows.append(score_chunks(model, tokenizer, flat, n_chunks=n_chunks, chunk_size=chunk_size,
                                     proxy_texts=proxy_texts, base_logprobs=base_logprobs,
                                     proxy_max_length=proxy_max_length))

        config = cpu_config(method, chunk_size=chunk_size, n_capability=n_capability,
                            capability_max_length=capability_max_length, seed=seed, **changes)
        t0 = time.perf_counter()
        result = edit(model, tokenizer, list(requests), config, capability_texts=capability, progress=False,
                      after_chunk=after_chunk)
        result.restore(model)
        out["seconds"][label] = round(time.perf_counter() - t0, 1)
        out["rel"][label] = np.stack([r["rel_chunk"] for r in rows]).tolist()
        out["gen"][label] = np.stack([r["gen_chunk"] for r in rows]).tolist()
        out["kl"][label] = [r["kl"] for r in rows]
    return out


def record_differences(record: dict[str, Any], params: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """The chapter parameters in which a committed run and the chapter differ: ``{name: (record, chapter)}``.

    Empty when the committed file was run with the chapter's settings and may stand for a live run.

    Derived in notebook ``07_sequential_editing``.
    """
    from crispedit_lite.reproduction.committed import parameter_differences

    return parameter_differences(record, params, RECORD_KEYS)
