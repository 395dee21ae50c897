"""crispedit_lite.editing.editors.memit and .alphaedit: MEMIT, MEMIT-Chunked, MEMIT-Seq, AlphaEdit and
AlphaEdit-Seq through ``edit()`` on a random tiny Llama (float64)."""

from __future__ import annotations

import hashlib

import pytest
import torch

from crispedit_lite.data import EditRequest
from crispedit_lite.editing import EditConfig, EditJob, edit, get_editor
from crispedit_lite.editing.editors import memit as memit_mod
from crispedit_lite.editing.loops.keys_values import layer_outputs
from crispedit_lite.editing.loops.sequential import chunk_requests
from crispedit_lite.editing.updates.closed_form import alphaedit_projector
from crispedit_lite.evaluation.teacher_forced import target_nll
from crispedit_lite.kfac import KFACFactors
from crispedit_lite.models import random_init_model
from crispedit_lite.models.compat import dtype_kwargs
from tests.helpers import EDIT_WORDS as WORDS

REQS = [EditRequest("the capital of france is", "rome", subject="france", case_id=0),
        EditRequest("the river of germany is", "blue", subject="the river", case_id=1),
        EditRequest("a big dog is", "green", subject="big dog", case_id=2)]
LAYERS = (1, 2)
_gen = torch.Generator().manual_seed(0)
# 4 x 60 random words: more tokens than d_in = 64, so C is full rank (MEMIT's solve is well posed)
CAP_TEXTS = [" ".join(WORDS[3 + int(i)] for i in torch.randint(0, len(WORDS) - 3, (60,), generator=_gen))
             for _ in range(4)]
INIT = 0.3  # O(1) activations: keys of the default 0.02 init are ~1e-3
MODULES = [f"model.layers.{i}.mlp.down_proj" for i in LAYERS]


def _model():
    return random_init_model("tiny-llama", dtype=torch.float64, seed=0, initializer_range=INIT)


def _config(method, **kw):
    base = dict(method=method, layers=LAYERS, n_capability=4, capability_max_length=64,
                capability_source="offline", chunk_size=2, cf_lambda=1.0, cf_v_lr=0.5, cf_v_steps=6,
                cf_nullspace_rule="energy", cf_nullspace_gamma=0.9)
    base.update(kw)
    return EditConfig(**base)


def _edit(method, tok, tmp_path, model=None, requests=REQS, **kw):
    model = _model() if model is None else model
    res = edit(model, tok, requests, _config(method, **kw), capability_texts=CAP_TEXTS,
               cache_dir=str(tmp_path / "cache"), progress=False)
    return model, res


@pytest.mark.parametrize("method", ["memit", "memit_chunked", "memit_seq", "alphaedit", "alphaedit_seq"])
def test_edit_changes_only_the_closed_form_layers_and_moves_the_output(method, tok, tmp_path):
    base = _model()
    model, res = _edit(method, tok, tmp_path)
    assert res.modules == MODULES and res.statistics == ["input_covariance"]
    assert get_editor(method).update == "closed_form"
    norms = res.changed_norms(model)
    assert set(norms) == {f"{m}.weight" for m in MODULES} and min(norms.values()) > 0
    edited, orig = dict(model.named_parameters()), dict(base.named_parameters())
    for name, p in orig.items():
        same = torch.equal(edited[name], p)
        assert same == (name not in norms), name
    for chunk in res.details["chunks"]:  # the top-layer output moved toward z
        assert chunk["residual_after"]["mean"] < 0.9 * chunk["residual_before"]["mean"]
    if not get_editor(method).sequential:  # the batch edit lowers every target's NLL
        prompts, targets = [r.prompt for r in REQS], [r.target_new for r in REQS]
        after, before = target_nll(model, tok, prompts, targets), target_nll(base, tok, prompts, targets)
        assert all(a < b for a, b in zip(after, before))
    res.restore(model)
    assert all(torch.equal(edited[n], p) for n, p in orig.items())


def test_the_base_model_on_disk_is_untouched(tok, tmp_path):
    from transformers import AutoModelForCausalLM

    _model().save_pretrained(tmp_path / "base")
    files = sorted((tmp_path / "base").iterdir())
    digest = {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in files}
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "base", **dtype_kwargs(torch.float64))
    model, res = _edit("memit", tok, tmp_path, model=model)
    assert min(res.changed_norms(model).values()) > 0
    assert digest == {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in files}
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "base", **dtype_kwargs(torch.float64))
    for name, w in res.original.items():
        assert torch.equal(dict(reloaded.named_parameters())[name], w)


def test_statistics_come_from_the_kfac_cache_and_the_second_run_hits(tok, tmp_path):
    _, first = _edit("memit", tok, tmp_path)
    _, second = _edit("alphaedit", tok, tmp_path)
    assert first.capability["hit"] is False and second.capability["hit"] is True
    assert first.capability["cache"] == second.capability["cache"]
    assert first.details["covariance"]["cache_hit"] is False
    assert second.details["covariance"]["cache_hit"] is True


def test_one_chunk_sequential_equals_batch(tok, tmp_path):
    # one chunk holds every edit, in chunk_requests' order: the zero cache changes nothing
    order = chunk_requests(REQS, len(REQS), 0)[0]
    assert [r.case_id for r in order] != [0, 1, 2]
    pairs = (("memit", "memit_seq"), ("memit", "memit_chunked"), ("alphaedit", "alphaedit_seq"))
    for method, chunked in pairs:
        batch, _ = _edit(method, tok, tmp_path, requests=order, chunk_size=len(REQS))
        seq, res = _edit(chunked, tok, tmp_path, chunk_size=len(REQS))
        assert res.details["schedule"]["n_chunks"] == 1
        for name in (f"{m}.weight" for m in MODULES):
            torch.testing.assert_close(dict(seq.named_parameters())[name],
                                       dict(batch.named_parameters())[name], rtol=1e-12, atol=1e-14)
    # with two chunks the sequential edit is a different one
    seq2, res2 = _edit("memit_seq", tok, tmp_path, chunk_size=2)
    assert res2.details["schedule"] == {"batch_size": 2, "n_chunks": 2, "order_seed": 0, "chunks_before": 0,
                                        "sequential": True, "evaluated": "once, after the last chunk",
                                        "cache": "sum of earlier chunks' K K^T"}
    assert [c["n_edits"] for c in res2.details["chunks"]] == [2, 1]
    w = f"{MODULES[0]}.weight"
    assert not torch.allclose(dict(seq2.named_parameters())[w], dict(batch.named_parameters())[w])


def _spy_solves(monkeypatch) -> list[dict]:
    """Record every call of MEMIT's per-layer solve: its inputs and the update it returned."""
    calls, solve = [], memit_mod.memit_delta

    def spy(R, K1, C, lam, cache=None):
        out = solve(R, K1, C, lam, cache)
        calls.append({"R": R.clone(), "K": K1.clone(), "C": C.clone(), "lam": lam,
                      "cache": None if cache is None else cache.clone(), "delta": out.clone()})
        return out

    monkeypatch.setattr(memit_mod, "memit_delta", spy)
    return calls


def test_the_chunked_update_ignores_earlier_chunks_and_the_cached_one_does_not(tok, tmp_path, monkeypatch):
    """Second chunk, each layer: Delta solves the normal equations of lambda C + K2 K2^T (memit_chunked)
    or of lambda C + K1 K1^T + K2 K2^T (memit_seq), checked against a dense inverse."""
    runs = {}
    for method in ("memit_chunked", "memit_seq"):
        calls = _spy_solves(monkeypatch)
        _, res = _edit(method, tok, tmp_path, chunk_size=2)
        assert [c["n_edits"] for c in res.details["chunks"]] == [2, 1]
        runs[method] = calls
        assert len(calls) == 2 * len(MODULES)  # one solve per layer and chunk
    for i in range(len(MODULES)):  # the first chunk: the same keys and update in both
        a, b = runs["memit_chunked"][i], runs["memit_seq"][i]
        assert a["cache"] is None and b["cache"].abs().max() == 0
        torch.testing.assert_close(a["delta"], b["delta"], rtol=1e-10, atol=1e-12)
    for i in range(len(MODULES)):
        first = runs["memit_seq"][i]["K"]  # chunk 1's keys at this layer
        for method, earlier in (("memit_chunked", 0 * first @ first.T), ("memit_seq", first @ first.T)):
            c = runs[method][len(MODULES) + i]
            K2, R, lam = c["K"], c["R"], c["lam"]
            if method == "memit_chunked":
                assert c["cache"] is None
            else:
                torch.testing.assert_close(c["cache"], earlier, rtol=1e-12, atol=1e-12)
            M = lam * c["C"] + earlier + K2 @ K2.T
            dense = R @ K2.T @ torch.linalg.inv(M)
            torch.testing.assert_close(c["delta"], dense, rtol=1e-7, atol=1e-9)
            # the stationarity condition of min lam tr(D C D^T) + tr(D (cache) D^T) + ||D K2 - R||^2
            torch.testing.assert_close(c["delta"] @ M, R @ K2.T, rtol=1e-8, atol=1e-9)
        # the first chunk's keys change the second update: the two variants differ
        assert not torch.allclose(runs["memit_chunked"][len(MODULES) + i]["delta"],
                                  runs["memit_seq"][len(MODULES) + i]["delta"], rtol=1e-3, atol=0)


@pytest.mark.parametrize("method", ["memit_chunked", "memit_seq"])
def test_chunk_callback_sees_each_chunk_and_only_observes(tok, tmp_path, method):
    seen = []

    def after_chunk(k, chunk, state):
        seen.append((k, [r.case_id for r in chunk], state.n_chunks, state.log["n_edits"],
                     state.model.get_submodule(MODULES[0]).weight.detach().clone()))

    plain, _ = _edit(method, tok, tmp_path, chunk_size=2)
    model = _model()
    res = edit(model, tok, REQS, _config(method, chunk_size=2), capability_texts=CAP_TEXTS,
               cache_dir=str(tmp_path / "cache"), progress=False, after_chunk=after_chunk)
    chunks = chunk_requests(REQS, 2, 0)
    assert [s[:4] for s in seen] == [(k, [r.case_id for r in c], 2, len(c)) for k, c in enumerate(chunks)]
    assert torch.equal(seen[-1][4], model.get_submodule(MODULES[0]).weight)
    assert not torch.equal(seen[0][4], seen[1][4])  # the first call saw the model after chunk 1 only
    for m in MODULES:  # observe-only: the same edit as without the callback
        assert torch.equal(model.get_submodule(m).weight, plain.get_submodule(m).weight)
    assert "after_chunk_s" in res.timings


def test_alphaedit_update_lies_in_the_null_space_of_the_covariance(tok, tmp_path):
    model, res = _edit("alphaedit", tok, tmp_path)
    cache = next((tmp_path / "cache").glob("*.safetensors"))
    from crispedit_lite.kfac import load_kfac

    factors = load_kfac(cache)
    for m in MODULES:
        assert isinstance(factors[m], KFACFactors)
        ns = alphaedit_projector(factors[m].A, rule="energy", gamma=0.9)
        delta = (model.get_submodule(m).weight - res.original[f"{m}.weight"]).double()
        eye = torch.eye(ns.P.shape[0], dtype=torch.float64)
        assert (delta @ (eye - ns.P)).abs().max() < 1e-9 * max(1.0, delta.abs().max().item())
        assert res.projector_stats[m]["rank"] == ns.rank == res.details["nullspace"]["rank"][m]
        assert 0 < ns.rank < ns.P.shape[0]


def test_details_record_every_setting(tok, tmp_path):
    _, memit = _edit("memit", tok, tmp_path)
    d = memit.details
    assert d["lambda"] == 1.0 and d["l2"] is None and d["layers"] == [1, 2]
    assert d["value"]["lr"] == 0.5 and d["value"]["steps"] == 6 and d["value"]["clamp_norm"] == 4.0
    assert d["schedule"]["batch_size"] == 3 and d["schedule"]["n_chunks"] == 1
    assert len(d["context_templates"][1]) == 5 and d["editor"]["name"] == "memit"
    _, alpha = _edit("alphaedit", tok, tmp_path, cf_l2=10.0)
    n = alpha.details["nullspace"]
    assert alpha.details["l2"] == 10.0 and n["rule"] == "energy" and n["gamma"] == 0.9
    assert n["threshold"] is None and set(n["rank"]) == set(MODULES)
    _, absolute = _edit("alphaedit", tok, tmp_path, cf_nullspace_rule="absolute",
                        cf_nullspace_threshold=1e9)  # every direction is below: P = I
    n = absolute.details["nullspace"]
    assert n["rule"] == "absolute" and n["threshold"] == 1e9 and n["gamma"] is None
    assert set(n["rank"].values()) == {64}
    assert alpha.to_dict()["details"]["l2"] == 10.0


def test_padding_side_does_not_change_the_edit(tok, tmp_path):
    right, _ = _edit("memit", tok, tmp_path)
    tok.padding_side = "left"
    try:
        left, _ = _edit("memit", tok, tmp_path)
    finally:
        tok.padding_side = "right"
    for m in MODULES:
        torch.testing.assert_close(left.get_submodule(m).weight, right.get_submodule(m).weight,
                                   rtol=1e-9, atol=1e-11)


def test_layers_default_to_the_closed_form_preset(tok, tmp_path, monkeypatch):
    monkeypatch.setitem(memit_mod.CLOSED_FORM_PRESETS, "tiny", {
        "shape": ("llama", 4, 32, 64), "layers": [2, 0], "lambda": 3.0, "nullspace_threshold": 1e-3,
        "memit": {"v_lr": 0.2, "v_steps": 3, "v_weight_decay": 0.0, "clamp_norm": 2.0, "kl_factor": 0.0}})
    model = _model()
    cfg = EditConfig(method="memit", n_capability=4, capability_max_length=64)
    job = EditJob(model=model, tokenizer=tok, requests=REQS, config=cfg, modules=[],
                  capability_texts=CAP_TEXTS, cache_dir=str(tmp_path), progress=False)
    res = get_editor("memit").run(job)
    assert res.modules == ["model.layers.0.mlp.down_proj", "model.layers.2.mlp.down_proj"]  # ascending
    assert res.details["lambda"] == 3.0 and res.details["value"]["steps"] == 3
    assert res.details["preset"] == "CLOSED_FORM_PRESETS"
    assert layer_outputs(model, tok, REQS, "model.layers.2").shape == (3, 32)


def test_no_preset_and_no_layers_is_a_clear_error(tok):
    job = EditJob(model=_model(), tokenizer=tok, requests=REQS,
                  config=EditConfig(method="alphaedit"), modules=[], capability_texts=CAP_TEXTS)
    with pytest.raises(ValueError, match="CLOSED_FORM_PRESETS"):
        get_editor("alphaedit").run(job)
    with pytest.raises(ValueError, match="cf_nullspace_rule"):
        EditConfig(method="alphaedit", cf_nullspace_rule="relative")
    with pytest.raises(ValueError, match="cf_l2"):
        EditConfig(method="alphaedit", cf_l2=0.0)
