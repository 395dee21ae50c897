"""crispedit_lite.editing.kfac_cache: hits and misses, the key, self-healing, locking, permissions,
checkpointed resumption, and ``build_projectors`` from the cached factors."""

from __future__ import annotations

import os
import shutil
import stat
import threading
import time

import pytest
import torch

import crispedit_lite.kfac.capture as khooks  # the forward pass of the K-FAC capture
from crispedit_lite.editing import build_projectors, cache_key, capability_factors
from crispedit_lite.editing.kfac_cache import corpus_fingerprint
from crispedit_lite.kfac import load_kfac, save_kfac
from crispedit_lite.kfac.io import file_lock
from crispedit_lite.models import random_init_model
from tests.helpers import CACHE_MODULES as MODULES
from tests.helpers import CACHE_TEXTS as TEXTS
from tests.helpers import CAP_TEXT, LAYERS, ROOT


@pytest.fixture()
def model():
    """The tiny Llama in float32, the dtype the cache stores (``tok`` is the shared editing tokenizer)."""
    return random_init_model("tiny-llama", seed=0)


@pytest.fixture()
def model64():
    """The tiny Llama in float64, as the editing tests use it."""
    return random_init_model("tiny-llama", dtype=torch.float64, seed=0)


def _cap(model, tok, tmp_path, **kw):
    kw = {"max_length": 64, "cache_dir": tmp_path, "progress": False, **kw}
    return capability_factors(model, tok, MODULES, TEXTS, **kw)


def _equal(f, g):
    assert list(f) == list(g)
    for m in f:
        assert torch.equal(f[m].A, g[m].A) and torch.equal(f[m].S, g[m].S)
        assert f[m].n_tokens == g[m].n_tokens


# --- hits, misses, the key, the projectors --------------------------------------------------------


def test_kfac_cache_hit_returns_identical_factors(tok, tmp_path):
    model = random_init_model("tiny-llama", dtype=torch.float32, seed=0)  # the cache stores fp32
    modules = [f"model.layers.{i}.mlp.down_proj" for i in LAYERS]
    texts = [CAP_TEXT, "the dog runs"]
    f1, info1 = capability_factors(model, tok, modules, texts, max_length=64, cache_dir=tmp_path,
                                   progress=False)
    f2, info2 = capability_factors(model, tok, modules, texts, max_length=64, cache_dir=tmp_path,
                                   progress=False)
    assert not info1["hit"] and info2["hit"] and info1["cache"] == info2["cache"]
    for m in modules:
        assert torch.equal(f1[m].A, f2[m].A) and torch.equal(f1[m].S, f2[m].S)
        assert f1[m].n_tokens == f2[m].n_tokens
    assert len(list(tmp_path.glob("*.safetensors"))) == 1


@pytest.mark.parametrize("change", ["texts", "labels", "max_length", "modules", "seed"])
def test_kfac_cache_for_other_settings_is_not_reused(model64, tok, tmp_path, change):
    modules = [f"model.layers.{i}.mlp.down_proj" for i in LAYERS]
    kw = dict(max_length=64, labels="true", seed=0)
    texts = [CAP_TEXT]
    capability_factors(model64, tok, modules, texts, cache_dir=tmp_path, progress=False, **kw)
    if change == "texts":
        texts = [CAP_TEXT + " the cat"]
    elif change == "modules":
        modules = modules[:1]
    else:
        kw[change] = {"labels": "sampled", "max_length": 16, "seed": 1}[change]
    _, info = capability_factors(model64, tok, modules, texts, cache_dir=tmp_path, progress=False, **kw)
    assert not info["hit"]
    assert len(list(tmp_path.glob("*.safetensors"))) == 2


def test_cache_key_depends_on_every_setting():
    base = dict(max_length=8, labels="true", seed=0)
    k = cache_key("m", ["a"], ["x"], **base)
    assert k == cache_key("m", ["a"], ["x"], **base)
    others = [cache_key("m2", ["a"], ["x"], **base), cache_key("m", ["b"], ["x"], **base),
              cache_key("m", ["a"], ["y"], **base), cache_key("m", ["a"], ["x", "x"], **base),
              cache_key("m", ["a"], ["x"], **dict(base, max_length=9)),
              cache_key("m", ["a"], ["x"], **dict(base, labels="sampled")),
              cache_key("m", ["a"], ["x"], **dict(base, seed=1))]
    assert len({k, *others}) == len(others) + 1


def test_build_projectors_kinds(model64, tok, tmp_path):
    modules = [f"model.layers.{i}.mlp.down_proj" for i in LAYERS]
    f, _ = capability_factors(model64, tok, modules, [CAP_TEXT], max_length=64, cache_dir=tmp_path,
                              progress=False)
    lo, s_lo = build_projectors(model64, f, 0.5)
    hi, s_hi = build_projectors(model64, f, 0.99)
    for m in modules:
        assert s_lo[m]["editable_fraction"] > s_hi[m]["editable_fraction"]  # larger gamma protects more
    assert set(lo) == {model64.get_submodule(m).weight for m in modules}
    with pytest.raises(ValueError, match="kind must be"):
        build_projectors(model64, f, 0.5, kind="nope")


# --- self-healing ------------------------------------------------------------------------------------


def _flip_last_byte(path):
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 0xFF
    path.write_bytes(bytes(raw))


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _wrong_model(path):
    f = load_kfac(path)
    for x in f.values():
        x.meta["model_id"] = "another-model"
    save_kfac(f, path)


@pytest.mark.parametrize("damage, reason", [(_flip_last_byte, "checksum mismatch"),
                                            (_truncate, "not a readable safetensors"),
                                            (_wrong_model, "collected with model_id='another-model'")])
def test_unusable_cache_is_moved_aside_with_a_warning_and_recollected(model, tok, tmp_path,
                                                                       damage, reason):
    good, info = _cap(model, tok, tmp_path)
    path = tmp_path / os.path.basename(info["cache"])
    damage(path)
    with pytest.warns(UserWarning, match=rf"{path.name} is unusable \(.*{reason}.*moved it to "
                                         rf"{path.name}\.corrupt-\d{{8}}T"):
        again, info2 = _cap(model, tok, tmp_path)
    assert not info2["hit"]
    _equal(again, good)
    aside = list(tmp_path.glob(f"{path.name}.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes() != path.read_bytes()
    _, info3 = _cap(model, tok, tmp_path)  # the new entry is a clean hit
    assert info3["hit"]


# --- key, metadata, permissions ------------------------------------------------------------------------


def test_cache_key_covers_dtype_approx_and_the_corpus():
    base = dict(max_length=8, labels="true", seed=0)
    k = cache_key("m", ["a"], ["x", "y"], **base)
    assert k == cache_key("m", ["a"], ["x", "y"], **base, dtype="float32", approx="expand")
    others = {cache_key("m", ["a"], ["x", "y"], **base, dtype="bfloat16"),
              cache_key("m", ["a"], ["x", "y"], **base, approx="reduce"),
              cache_key("m", ["a"], ["x\x00y"], **base),
              cache_key("m", ["a"], ["y", "x"], **base)}
    assert len(others | {k}) == 5
    assert corpus_fingerprint(["a\x00b", "c"]) != corpus_fingerprint(["a", "b\x00c"])


def test_dtype_and_approx_get_their_own_entries(model, tok, tmp_path):
    _, a = _cap(model, tok, tmp_path)
    _, b = _cap(model, tok, tmp_path, approx="reduce")
    _, c = _cap(model.to(torch.float64), tok, tmp_path)
    assert len({a["cache"], b["cache"], c["cache"]}) == 3 and not (b["hit"] or c["hit"])


def test_entry_states_its_normalisation_in_the_metadata(model, tok, tmp_path):
    from safetensors import safe_open

    f, info = _cap(model, tok, tmp_path, approx="reduce")
    with safe_open(info["cache"], framework="pt") as fh:
        meta = fh.metadata()
    assert meta["approx"] == "reduce" and meta["dtype"] == "float32"
    assert meta["model_dtype"] == "float32" and int(meta["n_tokens"]) == len(TEXTS)  # sequences
    assert "divided by the sequence count" in meta["normalisation"]


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_cache_files_respect_the_umask(model, tok, tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        _, info = _cap(model, tok, tmp_path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(info["cache"]).st_mode) == mode


# --- concurrency -------------------------------------------------------------------------------------


def test_second_process_waits_for_the_lock_then_hits(model, tok, tmp_path):
    first, info = _cap(model, tok, tmp_path / "elsewhere")
    path = tmp_path / os.path.basename(info["cache"])
    out = {}
    with file_lock(path.with_suffix(".lock")):  # "the first process" is collecting
        worker = threading.Thread(target=lambda: out.update(r=_cap(model, tok, tmp_path)))
        worker.start()
        time.sleep(1.0)
        assert worker.is_alive() and not path.exists()  # blocked, not collecting on its own
        shutil.copy(info["cache"], path)  # the first process's entry appears
    worker.join(60)
    factors, info2 = out["r"]
    assert info2["hit"]
    _equal(factors, first)


# --- checkpointed collection -------------------------------------------------------------------------


class Killed(Exception):
    pass


@pytest.mark.parametrize("labels", ["true", "sampled"])
def test_resumed_collection_equals_an_uninterrupted_one_exactly(model, tok, tmp_path, monkeypatch,
                                                                 labels):
    whole, _ = _cap(model, tok, tmp_path / "whole", labels=labels)
    forward = khooks._forward
    calls = {"n": 0}

    def dies_in_batch_5(*args):
        calls["n"] += 1
        if calls["n"] == 5:
            raise Killed  # killed after 4 batches; the last checkpoint holds 2
        return forward(*args)

    monkeypatch.setattr(khooks, "_forward", dies_in_batch_5)
    with pytest.raises(Killed):
        _cap(model, tok, tmp_path, labels=labels, checkpoint_every=2)
    assert len(list(tmp_path.glob("*.ckpt"))) == 1 and not list(tmp_path.glob("*.safetensors"))
    calls["n"] = -100
    resumed, info = _cap(model, tok, tmp_path, labels=labels, checkpoint_every=2)
    assert info["resumed_from_batch"] == 4 and calls["n"] == -100 + len(TEXTS) - 4
    _equal(resumed, whole)
    assert not list(tmp_path.glob("*.ckpt"))  # removed once the entry is written


def test_checkpoint_for_other_settings_is_set_aside(model, tok, tmp_path, monkeypatch):
    forward = khooks._forward
    calls = {"n": 0}

    def dies(*args):
        calls["n"] += 1
        if calls["n"] == 4:
            raise Killed
        return forward(*args)

    monkeypatch.setattr(khooks, "_forward", dies)
    with pytest.raises(Killed):
        _cap(model, tok, tmp_path, checkpoint_every=3)
    monkeypatch.setattr(khooks, "_forward", forward)
    ckpt = next(tmp_path.glob("*.ckpt"))
    shutil.copy(ckpt, tmp_path / "keep")
    with pytest.warns(UserWarning, match="written with batch_size=1, now 2"):
        got, info = _cap(model, tok, tmp_path, checkpoint_every=3, batch_size=2)
    assert info["resumed_from_batch"] == 0
    whole, _ = _cap(model, tok, tmp_path / "whole", batch_size=2)
    _equal(got, whole)


def test_checkpoint_every_must_be_positive(model, tok, tmp_path):
    with pytest.raises(ValueError, match="checkpoint_every must be a positive integer"):
        _cap(model, tok, tmp_path, checkpoint_every=0)


_KILLED_RUN = """
import os, signal, sys
import crispedit_lite.kfac.capture as khooks  # the forward pass of the K-FAC capture
from tests.helpers import CACHE_MODULES as MODULES, CACHE_TEXTS as TEXTS, tiny_tokenizer
from crispedit_lite.editing import capability_factors
from crispedit_lite.models import random_init_model
forward, calls = khooks._forward, [0]
def dies(*args):
    calls[0] += 1
    if calls[0] == 4:
        os.kill(os.getpid(), signal.SIGKILL)
    return forward(*args)
khooks._forward = dies
capability_factors(random_init_model("tiny-llama", seed=0), tiny_tokenizer(), MODULES, TEXTS,
                   max_length=64, cache_dir=sys.argv[1], progress=False, checkpoint_every=2)
"""


@pytest.mark.slow
def test_kill_9_during_collection_resumes_from_the_last_checkpoint(model, tok, tmp_path):
    import signal
    import subprocess
    import sys

    # the repository root: this checkout's crispedit_lite and tests.helpers
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", _KILLED_RUN, str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert len(list(tmp_path.glob("*.ckpt"))) == 1 and not list(tmp_path.glob("*.safetensors"))
    resumed, info = _cap(model, tok, tmp_path, checkpoint_every=2)  # the dead holder's lock is gone
    assert info["resumed_from_batch"] == 2
    whole, _ = _cap(model, tok, tmp_path / "whole")
    _equal(resumed, whole)


def test_build_projectors_refuses_offloaded_weights(model, tok, tmp_path):
    f, _ = _cap(model, tok, tmp_path)
    projectors, _ = build_projectors(model, f, 0.9)
    assert all(p.U_in.device == w.device for w, p in projectors.items())
    with pytest.raises(ValueError, match=r"module 'model.layers.1.mlp.down_proj' is offloaded"):
        build_projectors(random_init_model("tiny-llama", device="meta"), f, 0.9)


# --- a tampered header, a read-only cache, a key by content ------------------------------------------------


def test_a_tampered_header_is_detected_and_healed(model, tok, tmp_path):
    first, info = _cap(model, tok, tmp_path)
    path = tmp_path / info["cache"].rsplit("/", 1)[1]
    n = first[MODULES[0]].n_tokens
    raw = path.read_bytes()
    old = f'\\"n_tokens\\": {n}'.encode()
    changed = ("9" if str(n)[0] != "9" else "8") + str(n)[1:]  # one digit, as 508 -> 908
    new = f'\\"n_tokens\\": {changed}'.encode()
    assert old in raw and len(old) == len(new) and old != new
    path.write_bytes(raw.replace(old, new, 1))  # one changed count in the metadata, tensors intact
    with pytest.warns(UserWarning, match=r"is unusable \(checksum mismatch \(tensors or metadata changed\)"):
        again, info2 = _cap(model, tok, tmp_path)
    assert not info2["hit"] and len(list(tmp_path.glob("*.corrupt-*"))) == 1
    _equal(first, again)
    assert _cap(model, tok, tmp_path)[1]["hit"]


def test_a_read_only_cache_with_the_entry_is_used(model, tok, tmp_path, monkeypatch):
    import crispedit_lite.editing.kfac_cache as kc

    first, _ = _cap(model, tok, tmp_path)

    def no_writes(*args, **kwargs):
        raise AssertionError("a cache hit wrote to the cache")

    monkeypatch.setattr(kc, "_writable", lambda folder: False)
    monkeypatch.setattr(kc, "file_lock", no_writes)
    monkeypatch.setattr(kc, "save_kfac", no_writes)
    again, info = _cap(model, tok, tmp_path)
    assert info["hit"]
    _equal(first, again)
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(PermissionError, match=r"the K-FAC cache .* is read-only and holds no entry for these "
                                              r"factors \(\w+.safetensors\); pass a writable cache folder"):
        _cap(model, tok, tmp_path, seed=5)
    assert sorted(os.listdir(tmp_path)) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder")
def test_a_read_only_cache_folder_with_the_entry_is_used(model, tok, tmp_path):
    _cap(model, tok, tmp_path)
    tmp_path.chmod(0o555)
    try:
        assert _cap(model, tok, tmp_path)[1]["hit"]
        with pytest.raises(PermissionError, match="is read-only and holds no entry"):
            _cap(model, tok, tmp_path, seed=5)
    finally:
        tmp_path.chmod(0o755)


def test_the_key_follows_the_weights_not_the_path(tok, tmp_path):
    from crispedit_lite.models import load_model

    random_init_model("tiny-llama", seed=0).save_pretrained(tmp_path / "a")
    tok.save_pretrained(tmp_path / "a")
    net, _ = load_model(str(tmp_path / "a"))
    _, info = _cap(net, tok, tmp_path / "cache")
    (tmp_path / "a").rename(tmp_path / "moved")  # a moved model (or a moved $CRISPEDIT_CACHE) still hits
    net, _ = load_model(str(tmp_path / "moved"))
    moved = _cap(net, tok, tmp_path / "cache")[1]
    assert moved["hit"] and moved["cache"] == info["cache"]
    random_init_model("tiny-llama", seed=1).save_pretrained(tmp_path / "moved")  # other weights, same path
    net, _ = load_model(str(tmp_path / "moved"))
    other = _cap(net, tok, tmp_path / "cache")[1]
    assert not other["hit"] and other["cache"] != info["cache"]
    with torch.no_grad():  # an edit in memory changes what the model is ...
        net.model.layers[1].mlp.down_proj.weight.mul_(2)
    assert not _cap(net, tok, tmp_path / "cache")[1]["hit"]
    with torch.no_grad():  # ... and undoing it (bit for bit) makes it the loaded model again
        net.model.layers[1].mlp.down_proj.weight.div_(2)
    undone = _cap(net, tok, tmp_path / "cache")[1]
    assert undone["hit"] and undone["cache"] == other["cache"]


def test_entries_of_the_older_format_are_reported_once_not_used(model, tok, tmp_path):
    import json

    from safetensors.torch import save_file

    t = {"m::A": torch.eye(2), "m::S": torch.eye(2)}
    save_file(t, str(tmp_path / "0123456789abcdef0123.safetensors"),
              metadata={"crispedit_lite": json.dumps({"format_version": 1, "sha256": "0", "modules": {}})})
    older = r"holds 1 K-FAC entry written by an older version \(keyed by the model's path, checksum"
    with pytest.warns(UserWarning, match=older + r" without the metadata\); they are never used"):
        _, info = _cap(model, tok, tmp_path)
    assert not info["hit"]
