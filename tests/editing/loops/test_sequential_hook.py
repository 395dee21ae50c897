"""CrispEdit-Seq's per-chunk callback: once per chunk, in order, after the chunk, and observe-only."""

from __future__ import annotations

import pytest
import torch

from crispedit_lite.data import EditRequest
from crispedit_lite.data.batches import edit_kfac_batches
from crispedit_lite.editing import EditConfig, edit
from crispedit_lite.editing.loops.sequential import ChunkState, chunk_requests
from crispedit_lite.kfac import collect_kfac
from crispedit_lite.models import random_init_model

CAP_TEXT = "the big red dog and the small blue cat the river of germany the city of berlin " * 2
REQUESTS = [EditRequest("the capital of france is", "rome"), EditRequest("the river of germany is", "blue"),
            EditRequest("a big dog is", "green"), EditRequest("the small cat is", "red"),
            EditRequest("the city of germany is", "paris"), EditRequest("a blue river is", "big")]


def _model():
    return random_init_model("tiny-llama", dtype=torch.float64, seed=0)


def _config(method="crispedit_seq"):
    return EditConfig(method=method, layers=(1, 2), epochs=3, batch_size=2, lr=1e-2, gamma=0.9,
                      n_capability=1, capability_max_length=64, capability_source="offline", chunk_size=2,
                      early_stop=1e-6, seed=3)


def _run(tok, tmp_path, after_chunk=None, method="crispedit_seq"):
    model = _model()
    res = edit(model, tok, REQUESTS, _config(method), capability_texts=[CAP_TEXT], cache_dir=tmp_path,
               progress=False, after_chunk=after_chunk)
    return model, res


def test_called_once_per_chunk_in_order_on_the_model_after_the_chunk(tok, tmp_path):
    cfg = _config()
    calls: list[tuple[int, list, ChunkState, dict]] = []

    def after_chunk(k, chunk, state):
        weights = {m: state.model.get_submodule(m).weight.detach().clone() for m in res_modules}
        # the chunk's edit K-FAC, collected again here: the state's equals it only on this model
        batches = edit_kfac_batches(chunk, tok, batch_size=8, max_length=cfg.capability_max_length)
        again = collect_kfac(state.model, res_modules, batches, labels=cfg.kfac_labels, seed=cfg.seed,
                             progress=False)
        for m in res_modules:
            torch.testing.assert_close(again[m].A, state.edit_factors[m].A, rtol=0, atol=0)
            torch.testing.assert_close(again[m].S, state.edit_factors[m].S, rtol=0, atol=0)
        calls.append((k, chunk, state, weights))

    res_modules = [f"model.layers.{i}.mlp.down_proj" for i in (1, 2)]
    model, res = _run(tok, tmp_path, after_chunk)
    chunks = chunk_requests(REQUESTS, cfg.chunk_size, cfg.seed)
    assert [c[0] for c in calls] == [0, 1, 2] and [c[1] for c in calls] == chunks
    assert all(c[2].index == c[0] and c[2].n_chunks == 3 for c in calls)
    assert [c[2].log for c in calls] == res.logs
    for m in res_modules:  # the last call sees the final weights; earlier ones earlier weights
        assert torch.equal(calls[-1][3][m], model.get_submodule(m).weight)
        assert not torch.equal(calls[0][3][m], calls[1][3][m])
    for (_, _, s, _), (_, _, nxt, _) in zip(calls, calls[1:]):  # chunk k's merge feeds chunk k+1
        assert s.factors is nxt.factors_before
        assert s.factors[res_modules[0]].n_tokens == (s.factors_before[res_modules[0]].n_tokens
                                                      + s.edit_factors[res_modules[0]].n_tokens)
    per_chunk = res.projector_stats["editable_fraction_per_chunk"]
    fractions = [{m: st["editable_fraction"] for m, st in c[2].projector_stats.items()} for c in calls]
    assert fractions == per_chunk
    assert all(len(c[2].projectors) == 2 for c in calls)


def test_a_run_with_a_callback_gives_bit_identical_weights(tok, tmp_path):
    def meddling(k, chunk, state):  # evaluation-like work: forward, backward, random numbers
        torch.randn(100)
        ids = torch.tensor([[3, 4, 5, 6, 7]])
        state.model(input_ids=ids, labels=ids).loss.backward()
        state.model.eval()

    plain, res_plain = _run(tok, tmp_path / "a")
    hooked, res_hooked = _run(tok, tmp_path / "b", meddling)
    for (n, p), (_, q) in zip(plain.named_parameters(), hooked.named_parameters()):
        assert torch.equal(p, q), n
    assert [lg.epoch_losses for lg in res_plain.logs] == [lg.epoch_losses for lg in res_hooked.logs]
    assert "after_chunk_s" in res_hooked.timings and "after_chunk_s" not in res_plain.timings


def test_ft_seq_calls_it_too_without_curvature(tok, tmp_path):
    seen = []
    _run(tok, tmp_path, lambda k, chunk, s: seen.append((k, s.projectors, s.factors)), method="ft_seq")
    assert seen == [(0, None, None), (1, None, None), (2, None, None)]


@pytest.mark.parametrize("method", ["crispedit", "ft", "memit"])
def test_methods_without_chunk_callbacks_refuse_it(tok, tmp_path, method):
    refused = rf"after_chunk: method '{method}' does not call it; .*crispedit_seq"
    with pytest.raises(ValueError, match=refused):
        edit(_model(), tok, REQUESTS, _config(method), capability_texts=[CAP_TEXT], cache_dir=tmp_path,
             progress=False, after_chunk=lambda *a: None)
    with pytest.raises(ValueError, match="after_chunk must be callable"):
        edit(_model(), tok, REQUESTS, _config(), capability_texts=[CAP_TEXT], cache_dir=tmp_path,
             progress=False, after_chunk="print")
