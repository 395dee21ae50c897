"""crispedit_lite.editing.editors.lora: the official LoRA's loss includes AdaLoRA's orthogonal regulariser
(checked on its value), and LoRA-Seq's two adapter schedules."""

from __future__ import annotations

import pytest
import torch

from crispedit_lite.data import EditRequest
from crispedit_lite.data.batches import tokenize_edits
from crispedit_lite.editing import edit
from crispedit_lite.editing.editors.lora import (
    LoraSettings,
    _outputs_loss,
    adalora_model,
    orthogonal_regulariser,
)
from crispedit_lite.editing.loops.trainer import ft_m_loss
from tests.helpers import LAYERS, REQUESTS, edit_config

peft = pytest.importorskip("peft")

REQS = REQUESTS + [EditRequest("the small cat is", "red")]


def _regulariser_by_hand(peft_model, weight: float) -> float:
    """w / n * sum ||A A^T - I||_F + ||B^T B - I||_F over the adapters, from the raw parameters."""
    terms = []
    for name, p in peft_model.named_parameters():
        if name.endswith("lora_A.default"):
            terms.append(torch.dist(p @ p.T, torch.eye(p.shape[0], dtype=p.dtype)).item())
        elif name.endswith("lora_B.default"):
            terms.append(torch.dist(p.T @ p, torch.eye(p.shape[1], dtype=p.dtype)).item())
    assert len(terms) == 2 * 2 * len(LAYERS)  # A and B of q_proj and v_proj in each edited layer
    return weight * sum(terms) / len(terms)


def test_outputs_loss_is_cross_entropy_plus_the_orthogonal_regulariser(model, tok):
    """loss - CE equals orth_reg_weight * mean ||PP^T - I||_F recomputed here, and is far from zero."""
    peft_model = adalora_model(model, LoraSettings(), list(LAYERS), total_step=10)
    assert isinstance(peft_model, peft.PeftModelForCausalLM)  # task_type="CAUSAL_LM"
    peft_model.eval()  # no dropout: the two forwards see the same network
    batch = tokenize_edits(REQS, tok)
    with torch.no_grad():
        loss = float(_outputs_loss(peft_model, batch))
        ce = float(ft_m_loss(peft_model, batch))
    weight = peft_model.peft_config["default"].orth_reg_weight
    expected = _regulariser_by_hand(peft_model, weight)
    assert weight == 0.5 and expected > 0.5  # random A, B are far from orthonormal
    assert loss - ce == pytest.approx(expected, rel=1e-6)  # both cross-entropies are float32 sums
    assert orthogonal_regulariser(peft_model) == pytest.approx(expected, rel=1e-12)


def test_without_the_task_type_the_regulariser_drops_out(model, tok):
    """The bug this guards against: a plain PeftModel's outputs.loss is the cross-entropy alone."""
    from peft import AdaLoraConfig, get_peft_model

    plain = get_peft_model(model, AdaLoraConfig(init_r=12, target_r=8, target_modules=["q_proj", "v_proj"],
                                                layers_to_transform=list(LAYERS), total_step=10))
    plain.eval()
    batch = tokenize_edits(REQS, tok)
    with torch.no_grad():
        assert float(_outputs_loss(plain, batch)) == pytest.approx(float(ft_m_loss(plain, batch)), rel=1e-12)


def test_official_lora_records_the_regulariser_it_trained_with(model, tok):
    res = edit(model, tok, REQUESTS, edit_config("lora", epochs=2, lr=1e-2), progress=False)
    reg = res.details["orth_reg"]
    assert res.details["loss"] == "outputs.loss (CE + orthogonal regulariser)"
    assert reg["start"] > 0.5 and reg["end"] != reg["start"]
    # the loss the skip and stop tests saw includes it: it cannot fall below the regulariser's scale
    assert min(res.logs[0].epoch_losses) > 0.1


def test_lora_seq_per_chunk_adapters_merge_after_every_chunk(model, tok):
    one = edit(model, tok, REQS, edit_config("lora_seq", chunk_size=2, epochs=1), progress=False)
    assert isinstance(one.details["orth_reg"], dict)
    assert "one adapter set" in one.details["schedule"]["adapters"]
    one.restore(model)
    cfg = edit_config("lora_seq", chunk_size=2, epochs=1, lora_seq_adapters="per_chunk")
    per = edit(model, tok, REQS, cfg, progress=False)
    assert len(per.logs) == 2 and "fresh adapters" in per.details["schedule"]["adapters"]
    assert [r["start"] for r in per.details["orth_reg"]] and len(per.details["orth_reg"]) == 2
    assert not any("lora" in n for n, _ in model.named_modules())  # merged, no adapter left
    changed = {n for n in per.original if not torch.equal(per.original[n], model.get_submodule(
        n.removesuffix(".weight")).weight.detach())}
    assert changed == set(per.original)
