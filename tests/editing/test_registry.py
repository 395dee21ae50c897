"""crispedit_lite.editing.registry and the editors it added: FT-Seq, LoRA-Seq, the official LoRA, Table 6
masking."""

from __future__ import annotations

import copy

import pytest
import torch

from crispedit_lite.data import EditRequest
from crispedit_lite.data.batches import edit_kfac_batches
from crispedit_lite.editing import Editor, edit, editor_names, get_editor, needs_capability, registry
from crispedit_lite.editing.loops.sequential import chunk_requests
from tests.helpers import CAP_TEXT, LAYERS, REQUESTS, changed_since, edit_config, weights_of

REQS = REQUESTS + [EditRequest("the small cat is", "red")]



def test_registry_declares_every_editor_of_table1():
    from crispedit_lite.editing.registry import UPDATES

    names = set(editor_names())
    assert {"crispedit", "crispedit_seq", "ft", "ft_seq", "locbf_ft", "lora", "lora_seq", "adam_nscl",
            "memit", "memit_chunked", "memit_seq", "alphaedit", "alphaedit_seq", "ultraedit", "mend",
            "mend_seq"} <= names
    assert set(UPDATES) == {"projected_gradient", "closed_form", "learned"}
    for e in registry().values():
        assert isinstance(e, Editor) and e.update in UPDATES
        assert e.describe()["name"] == e.name
    assert get_editor("memit").update == "closed_form" and get_editor("ft_seq").sequential
    assert needs_capability("alphaedit") and needs_capability("crispedit") and not needs_capability("ft")
    with pytest.raises(ValueError, match=r"unknown method 'memmit' \(did you mean 'memit'\?\); known"):
        get_editor("memmit")


def test_chunks_are_one_seeded_order_shared_by_every_sequential_editor():
    chunks = chunk_requests(list(range(10)), 4, seed=3)
    assert [len(c) for c in chunks] == [4, 4, 2] and sorted(sum(chunks, [])) == list(range(10))
    assert chunks == chunk_requests(list(range(10)), 4, seed=3) != chunk_requests(list(range(10)), 4, seed=4)
    with pytest.raises(ValueError, match="chunk_size must be at least 1"):
        chunk_requests([1], 0, seed=0)


def test_ft_seq_equals_ft_run_chunk_by_chunk(model, tok):
    """FT-Seq = FT-M on each chunk of chunk_requests in turn, one Adam throughout, no projection."""
    cfg = edit_config("ft_seq", chunk_size=2, epochs=2)
    twin = copy.deepcopy(model)
    res = edit(model, tok, REQS, cfg, progress=False)
    assert len(res.logs) == 2 and res.details["schedule"]["n_chunks"] == 2 and not res.projector_stats
    from crispedit_lite.data.batches import tokenize_edits
    from crispedit_lite.editing.loops.projected import make_optimizer, select_weights
    from crispedit_lite.editing.loops.trainer import train_edits

    params, _ = select_weights(twin, res.modules)
    opt = make_optimizer(cfg, params, {})
    for k, chunk in enumerate(chunk_requests(REQS, 2, cfg.seed)):
        train_edits(twin, chunk, lambda b: tokenize_edits(b, tok), opt, epochs=2, batch_size=cfg.batch_size,
                    early_stop=cfg.early_stop, seed=cfg.seed + k, reshuffle=False, progress=False)
    for m in res.modules:
        assert torch.equal(model.get_submodule(m).weight, twin.get_submodule(m).weight)


def test_lora_official_keeps_rank_init_r_and_uses_outputs_loss(model, tok):
    pytest.importorskip("peft")
    before = weights_of(model)
    res = edit(model, tok, REQUESTS, edit_config("lora", epochs=2, lr=1e-2), progress=False)
    assert res.details["lora_variant"] == "official" and res.details["adapter_ranks"] == [12]
    assert res.details["dropout_active"] and "orthogonal" in res.details["loss"]
    assert changed_since(before, model) == {f"model.layers.{i}.self_attn.{t}.weight"
                                       for i in LAYERS for t in ("q_proj", "v_proj")}
    res.restore(model)
    res = edit(model, tok, REQUESTS, edit_config("lora", epochs=2, lr=1e-2, lora_variant="allocate"),
               progress=False)
    assert res.details["lora_variant"] == "allocate" and not res.details["dropout_active"]


def test_lora_seq_trains_one_adapter_set_through_the_chunks(model, tok):
    pytest.importorskip("peft")
    before = weights_of(model)
    res = edit(model, tok, REQS, edit_config("lora_seq", chunk_size=2, epochs=1, lr=1e-2), progress=False)
    assert len(res.logs) == 2 and res.details["schedule"]["n_chunks"] == 2
    assert changed_since(before, model) and not any("lora" in n for n, _ in model.named_modules())


def test_table6_prompt_masked_edit_factors_count_target_tokens_only(tok):
    full = edit_kfac_batches(REQS[:2], tok, batch_size=2)
    masked = edit_kfac_batches(REQS[:2], tok, batch_size=2, mask_prompt=True)
    n_full, n_masked = int((full[0]["labels"] != -100).sum()), int((masked[0]["labels"] != -100).sum())
    assert n_masked == 2 and n_full > n_masked  # one target token per edit here


def test_seq_mask_prompt_reaches_crispedit_seq(model, tok, tmp_path):
    reqs = REQS
    kw = dict(gamma=0.9, chunk_size=2, epochs=1, lr=1e-2)
    a = edit(copy.deepcopy(model), tok, reqs, edit_config("crispedit_seq", **kw), capability_texts=[CAP_TEXT],
             cache_dir=tmp_path, progress=False)
    b = edit(copy.deepcopy(model), tok, reqs, edit_config("crispedit_seq", seq_mask_prompt=True, **kw),
             capability_texts=[CAP_TEXT], cache_dir=tmp_path, progress=False)
    assert a.config.seq_mask_prompt is False and b.config.seq_mask_prompt is True
    fa = a.projector_stats["editable_fraction_per_chunk"][1]
    fb = b.projector_stats["editable_fraction_per_chunk"][1]
    assert fa != fb  # the second chunk's projector saw different edit factors
