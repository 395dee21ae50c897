r"""The capability corpus :math:`\mathcal D_{\rm cap}` whose K-FAC curvature CrispEdit protects.

The paper estimates the capability Gauss-Newton matrix on Wikipedia articles (CrispEdit §4.2,
App. E; the official code reads ``wikipedia/20220301.en`` through a dataset *script*, which
``datasets>=3`` no longer runs). :func:`capability_texts` offers

* ``source="wikipedia"``: the parquet dataset ``wikimedia/wikipedia``, config ``20231101.en``,
  **streamed** (nothing like the full 20 GB is downloaded): the first ``n`` articles of a seeded
  shuffle (shard order plus a 10,000-article buffer; the official code instead takes the first ``n``
  of a full seed-1 permutation, ``FixedRandomSubsetSampler``). A newer dump than the paper's, so
  factors differ slightly (see EasyEdit issue #457).
* ``source="offline"``: a **stand-in** that ships with every CPython: the Python Language Reference
  (``pydoc_data.topics``, the text behind ``help("assert")`` etc.), cut into documents of about
  ``chunk_chars`` characters on paragraph boundaries. It is English technical prose with code, not
  encyclopaedic text; use it to run the method without a network, not to reproduce the paper's
  numbers.

The result is a :class:`CapabilityCorpus`: a sequence of strings whose ``meta`` records the source,
whether it is a stand-in, the seed and the Python version (the offline text changes across Python
releases). Tokenise it with :func:`crispedit_lite.data.batches.tokenize_capability`.

Derived in notebook ``06_crispedit_on_a_small_lm``.
"""

from __future__ import annotations

import dataclasses
import random
import sys
from collections.abc import Iterator, Sequence
from typing import Any

__all__ = ["CapabilityCorpus", "capability_texts", "offline_documents"]

WIKIPEDIA = ("wikimedia/wikipedia", "20231101.en")


@dataclasses.dataclass(frozen=True)
class CapabilityCorpus(Sequence):
    """Texts of a capability corpus and their origin (``meta["stand_in"]`` flags a proxy).

    Listed on the book page ``api``.
    """

    texts: tuple[str, ...]
    meta: dict[str, Any]

    def __getitem__(self, i: Any) -> Any:
        return self.texts[i]

    def __len__(self) -> int:
        return len(self.texts)

    def __iter__(self) -> Iterator[str]:
        return iter(self.texts)

    @property
    def stand_in(self) -> bool:
        """Whether this is a stand-in for the paper's Wikipedia corpus."""
        return bool(self.meta.get("stand_in"))


def offline_documents(chunk_chars: int = 2000) -> list[str]:
    """Cut the Python Language Reference (``pydoc_data.topics``) into documents, in a fixed order.

    Prose paragraphs are un-wrapped (their line breaks become spaces); indented blocks (grammar,
    code) are kept verbatim. Consecutive paragraphs of one topic are packed into documents of at
    most about ``chunk_chars`` characters (a longer paragraph stands alone), roughly the paper's
    512-token truncation for ``chunk_chars=2000``.

    Listed on the book page ``api``.
    """
    if chunk_chars < 100:
        raise ValueError(f"chunk_chars must be at least 100, got {chunk_chars}")
    from pydoc_data.topics import topics

    docs = []
    for key in sorted(topics):
        current: list[str] = []
        size = 0
        for para in topics[key].split("\n\n"):
            para = para.strip("\n")
            if not para.strip() or set(para.strip()) <= set("*=-"):
                continue
            para = _unwrap(para)
            if current and size + len(para) > chunk_chars:
                docs.append("\n\n".join(current))
                current, size = [], 0
            current.append(para)
            size += len(para) + 2
        if current:
            docs.append("\n\n".join(current))
    return [d for d in docs if len(d) >= 200]  # drop headings-only scraps


def _unwrap(para: str) -> str:
    """Join a prose paragraph's lines; keep code and grammar lines; drop heading underlines."""
    lines = [ln for ln in para.splitlines() if not set(ln.strip()) <= set("*=-")]
    indents = {len(ln) - len(ln.lstrip()) for ln in lines}
    prose = len(indents) == 1 and lines[-1].rstrip().endswith(".") and "::=" not in para \
        and ">>>" not in para
    return " ".join(ln.strip() for ln in lines) if prose else "\n".join(lines)


def _wikipedia(n: int, seed: int, buffer_size: int) -> list[str]:
    try:
        import datasets

        stream = datasets.load_dataset(*WIKIPEDIA, split="train", streaming=True)
        stream = stream.shuffle(seed=seed, buffer_size=buffer_size)
        texts = [row["text"] for row in stream.take(n)]
    except Exception as err:  # ConnectionError, FileNotFoundError, offline-mode errors, ...
        raise OSError(
            f"could not stream {WIKIPEDIA[0]!r} ({WIKIPEDIA[1]}) with the datasets library: "
            f"{type(err).__name__}: {err}. Without a network use source='offline' (a stand-in)."
        ) from err
    if len(texts) < n:
        raise ValueError(f"{WIKIPEDIA[0]} yielded {len(texts)} articles, fewer than n={n}")
    return texts


def capability_texts(
    source: str = "offline",
    n: int = 64,
    seed: int = 0,
    chunk_chars: int = 2000,
    buffer_size: int = 10_000,
) -> CapabilityCorpus:
    """Return ``n`` capability texts: Wikipedia (network) or the offline stand-in.

    Args:
        source: ``"wikipedia"`` or ``"offline"`` (see the module docstring).
        n: number of texts (the paper: 10,000 articles for batch editing, 30-200 for CrispEdit-Seq,
            and "as few as 100" suffice, Table 7).
        seed: seeds the shuffle; the first ``n`` texts of the shuffled corpus are returned.
        chunk_chars: document size of the offline stand-in.
        buffer_size: shuffle buffer of the Wikipedia stream.

    Returns:
        A :class:`CapabilityCorpus`; ``meta["stand_in"]`` is ``True`` for ``"offline"``.

    Derived in notebook ``06_crispedit_on_a_small_lm``.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    meta: dict[str, Any] = {"source": source, "n": n, "seed": seed}
    if source == "wikipedia":
        texts = _wikipedia(n, seed, buffer_size)
        meta.update(dataset=WIKIPEDIA[0], config=WIKIPEDIA[1], stand_in=False,
                    sampling=f"streaming shuffle, buffer {buffer_size}, first n")
    elif source == "offline":
        docs = offline_documents(chunk_chars)
        if n > len(docs):
            raise ValueError(f"the offline stand-in has {len(docs)} documents of ~{chunk_chars} "
                             f"characters, fewer than n={n}; lower n or chunk_chars")
        random.Random(seed).shuffle(docs)
        texts = docs[:n]
        meta.update(dataset="pydoc_data.topics (Python Language Reference)", stand_in=True,
                    python=sys.version.split()[0], chunk_chars=chunk_chars,
                    note="stand-in for Wikipedia: offline, not the paper's corpus")
    else:
        raise ValueError(f"source must be 'wikipedia' or 'offline', got {source!r}")
    return CapabilityCorpus(tuple(texts), meta)
