"""crispedit_lite.data.capability: the offline stand-in is labelled, seeded, sized; Wikipedia fails clearly.
"""

from __future__ import annotations

import pytest

from crispedit_lite.data.capability import CapabilityCorpus, capability_texts, offline_documents


def test_offline_stand_in_is_labelled_and_seeded():
    a = capability_texts("offline", n=10, seed=3)
    assert isinstance(a, CapabilityCorpus) and len(a) == 10 and a.stand_in
    assert a.meta["stand_in"] is True and "stand-in" in a.meta["note"]
    assert list(a) == list(capability_texts("offline", n=10, seed=3))
    assert list(a) != list(capability_texts("offline", n=10, seed=4))
    assert all(isinstance(t, str) and len(t) >= 200 for t in a)
    assert a[0] == a.texts[0]


def test_offline_documents_are_sized_prose():
    docs = offline_documents(2000)
    assert len(docs) > 200
    sizes = sorted(len(d) for d in docs)
    assert 1000 < sizes[len(sizes) // 2] <= 2000
    assert not any("\n****" in d or "\n----" in d for d in docs)  # heading underlines dropped
    with pytest.raises(ValueError, match="chunk_chars"):
        offline_documents(10)


def test_bad_arguments():
    with pytest.raises(ValueError, match="n must be at least 1"):
        capability_texts("offline", n=0)
    with pytest.raises(ValueError, match="source must be 'wikipedia' or 'offline'"):
        capability_texts("wikitext", n=2)
    with pytest.raises(ValueError, match="fewer than n=100000"):
        capability_texts("offline", n=100_000)


def test_wikipedia_offline_error_is_clear(monkeypatch):
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True, raising=False)
    with pytest.raises(OSError, match=r"could not stream 'wikimedia/wikipedia' \(20231101.en\).*"
                                      r"source='offline'"):
        capability_texts("wikipedia", n=2)
