"""crispedit_lite.editing.methods (``edit()``) on a random tiny Llama with a word-level tokenizer.

Covers the FT-M loss (prompt masked), null-space preservation through the whole CrispEdit pipeline
(K-FAC -> projector -> projected Adam), Adam-NSCL's input null space, undoing an edit, CrispEdit-Seq's
factor merging, LoRA's merge and LoC-BF-FT's single layer (offline). The K-FAC cache, ``save_edited``
and the configs have their own files (``test_kfac_cache.py``, ``test_save.py``, ``test_config.py``).
"""

from __future__ import annotations

import json

import pytest
import torch

from crispedit_lite.data import EditRequest
from crispedit_lite.editing import edit, ft_m_loss
from tests.helpers import CAP_TEXT, LAYERS, REQUESTS, changed_since, edit_config, weights_of


def _logits(model, tok, text: str) -> torch.Tensor:
    ids = tok(text, return_tensors="pt").input_ids
    with torch.no_grad():
        return model(input_ids=ids).logits[0]


# --- FT-M loss -----------------------------------------------------------------------------------


def test_ft_m_loss_masks_the_prompt(model, tok):
    from crispedit_lite.data.batches import tokenize_edits

    batch = tokenize_edits([("the capital of france is", "rome paris"), ("a b", "c")], tok)
    loss = ft_m_loss(model, batch)
    # by hand: cross-entropy of the target tokens only (prompt and padding excluded)
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=batch["input_ids"],
                                       attention_mask=batch["attention_mask"]).logits, -1)
    terms = []
    for row, (n_prompt, n_target) in enumerate([(5, 2), (2, 1)]):
        for t in range(n_prompt, n_prompt + n_target):
            terms.append(-logp[row, t - 1, batch["input_ids"][row, t]])
    assert torch.allclose(loss.double(), torch.stack(terms).mean(), atol=1e-6)
    # changing a prompt token's label does not change the loss; per-sample averages differently
    per = ft_m_loss(model, batch, per_sample=True)
    want = (torch.stack(terms[:2]).mean() + terms[2]) / 2
    assert torch.allclose(per.double(), want, atol=1e-6)
    bad = dict(batch, labels=torch.full_like(batch["labels"], -100))
    with pytest.raises(ValueError, match="no target tokens"):
        ft_m_loss(model, bad)
    with pytest.raises(ValueError, match="lacks 'labels'"):
        ft_m_loss(model, {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]})


def test_ft_learns_the_edit_and_restore_is_exact(model, tok, tmp_path):
    before = weights_of(model)
    res = edit(model, tok, REQUESTS, edit_config("ft", epochs=10, lr=3e-2), progress=False)
    assert res.modules == [f"model.layers.{i}.mlp.down_proj" for i in LAYERS]
    assert changed_since(before, model) == {f"{m}.weight" for m in res.modules}
    losses = res.logs[0].epoch_losses
    assert losses[-1] < losses[0] - 0.3
    assert all(not p.requires_grad for p in model.parameters())
    assert {"train_s", "total_s"} <= set(res.timings)
    json.dumps(res.to_dict())
    res.restore(model)
    assert changed_since(before, model) == set()  # bit-exact


# --- CrispEdit: null-space preservation through the pipeline --------------------------------------


def test_crispedit_gamma_1_preserves_capability_outputs(model, tok, tmp_path):
    """gamma = 1, rank-deficient A, full-rank S: only the input null space is editable (Prop. 1).

    Then Delta W a = 0 for every capability input a of the first edited layer, so its outputs and
    hence the next edited layer's inputs are unchanged, and so on: the logits on the capability
    text are unchanged at every position K-FAC saw (all but the last), while the edit moves.
    """
    n_tokens = len(tok(CAP_TEXT).input_ids)
    assert 32 < n_tokens - 1 < 64  # d_out = 32 <= terms < d_in = 64
    base_cap = _logits(model, tok, CAP_TEXT)
    base_edit = _logits(model, tok, "the capital of france is rome")
    cfg = edit_config("crispedit", gamma=1.0, epochs=5, lr=3e-2, project_update=True)
    res = edit(model, tok, REQUESTS, cfg, capability_texts=[CAP_TEXT], cache_dir=tmp_path,
               progress=False)
    for name, s in res.projector_stats.items():
        # S full rank -> editable = null space of A: (64 - rank A) * 32 of 64 * 32 directions
        assert 0 < s["editable_fraction"] < 1, name
        assert s["editable_fraction"] == pytest.approx((64 - (n_tokens - 1)) / 64), name
    edited_cap = _logits(model, tok, CAP_TEXT)
    # unchanged up to the float32 eigenbases of the projector (FT moves these logits by ~0.4)
    assert torch.allclose(edited_cap[:-1], base_cap[:-1], atol=1e-6)
    assert not torch.allclose(_logits(model, tok, "the capital of france is rome"), base_edit,
                              atol=1e-3)
    assert res.logs[0].epoch_losses[-1] < res.logs[0].epoch_losses[0]
    assert {"kfac_s", "eigh_s", "train_s", "total_s"} <= set(res.timings)


def test_unprojected_ft_does_change_capability_outputs(model, tok):
    base_cap = _logits(model, tok, CAP_TEXT)
    edit(model, tok, REQUESTS, edit_config("ft", epochs=5, lr=3e-2), progress=False)
    assert not torch.allclose(_logits(model, tok, CAP_TEXT)[:-1], base_cap[:-1], atol=1e-2)


def test_adam_nscl_projects_onto_input_null_space(model, tok, tmp_path):
    base_cap = _logits(model, tok, CAP_TEXT)
    cfg = edit_config("adam_nscl", nscl_gamma=1.0, nscl_early_stop=1e-6, epochs=3, lr=3e-2,
                  project_update=True)
    res = edit(model, tok, REQUESTS, cfg, capability_texts=[CAP_TEXT], cache_dir=tmp_path,
               progress=False)
    assert all(0 < s["editable_fraction"] < 1 for s in res.projector_stats.values())
    assert torch.allclose(_logits(model, tok, CAP_TEXT)[:-1], base_cap[:-1], atol=1e-6)


def test_projection_methods_need_capability_texts(model, tok):
    with pytest.raises(ValueError, match="needs capability_texts"):
        edit(model, tok, REQUESTS, edit_config("crispedit"), progress=False)
    with pytest.raises(ValueError, match="no edit requests"):
        edit(model, tok, [], edit_config("ft"), progress=False)


# --- CrispEdit-Seq ----------------------------------------------------------------------------------


def test_crispedit_seq_runs_chunks_and_merges_factors(model, tok, tmp_path):
    reqs = REQUESTS + [EditRequest("the small cat is", "red")]
    cfg = edit_config("crispedit_seq", gamma=0.9, chunk_size=2, epochs=2, lr=1e-2)
    res = edit(model, tok, reqs, cfg, capability_texts=[CAP_TEXT], cache_dir=tmp_path,
               progress=False)
    assert len(res.logs) == 2  # two chunks of two
    per_chunk = res.projector_stats["editable_fraction_per_chunk"]
    assert len(per_chunk) == 2
    for m in res.modules:
        # the edit factors of chunk 1 join the running factors: chunk 2 may edit less
        assert per_chunk[1][m] < per_chunk[0][m]
    assert {"train_s", "edit_kfac_s", "eigh_s", "kfac_s"} <= set(res.timings)


# --- LoRA ---------------------------------------------------------------------------------------------


def test_lora_merges_adapters_into_q_and_v_only(model, tok):
    pytest.importorskip("peft")
    before = weights_of(model)
    res = edit(model, tok, REQUESTS, edit_config("lora", epochs=3, lr=1e-2), progress=False)
    changed = changed_since(before, model)
    want = {f"model.layers.{i}.self_attn.{t}.weight" for i in LAYERS for t in ("q_proj", "v_proj")}
    assert changed == want
    assert set(dict(model.named_parameters())) == set(before)  # adapters merged and removed
    assert not any("lora" in n for n, _ in model.named_modules())
    res.restore(model)
    assert changed_since(before, model) == set()


def test_locbf_ft_trains_one_layer(model, tok):
    before = weights_of(model)
    res = edit(model, tok, REQUESTS, edit_config("locbf_ft", epochs=2), progress=False)
    assert res.modules == ["model.layers.1.mlp.down_proj"]  # second-to-last of (1, 2)
    assert changed_since(before, model) == {"model.layers.1.mlp.down_proj.weight"}
    res = edit(model, tok, REQUESTS, edit_config("locbf_ft", epochs=1, locbf_layer=3), progress=False)
    assert res.modules == ["model.layers.3.mlp.down_proj"]
