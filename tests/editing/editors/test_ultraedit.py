"""crispedit_lite.editing.editors.ultraedit: feature collection and the editor end to end.

A randomly initialised tiny Llama with a word-level tokenizer (offline, seconds); the ridge solve and
the lifelong normaliser are in ``tests/editing/updates/test_ultraedit.py``.
"""

from __future__ import annotations

import hashlib
import json
from types import SimpleNamespace

import pytest
import torch

from crispedit_lite.data import EditRequest
from crispedit_lite.data.batches import tokenize_edits
from crispedit_lite.editing import EditConfig, edit, ft_m_loss, get_editor
from crispedit_lite.editing.editors import ultraedit
from crispedit_lite.editing.loops.sequential import chunk_requests
from crispedit_lite.editing.registry import EditJob
from crispedit_lite.models import random_init_model
from crispedit_lite.models.compat import dtype_kwargs
from tests.helpers import REQUESTS, tiny_tokenizer

GATE = "model.layers.{i}.mlp.gate_proj"
MORE = REQUESTS + [EditRequest("the dog runs in the", "river"), EditRequest("a small cat is", "red"),
                   EditRequest("the house of the cat is", "blue tree")]


def _model(tied: bool = False):
    if not tied:
        return random_init_model("tiny-llama", dtype=torch.float64, seed=0)
    from transformers import AutoConfig

    from crispedit_lite.models import SHAPE_PRESETS

    fields = dict(SHAPE_PRESETS["tiny-llama"], tie_word_embeddings=True)
    return random_init_model(AutoConfig.for_model(fields.pop("model_type"), **fields),
                             dtype=torch.float64, seed=0)


def _config(**kw) -> EditConfig:
    base = dict(method="ultraedit", layers=(1, 2), module_pattern=GATE, ultra_modules="pattern",
                chunk_size=2, ultra_batch_size=2, ultra_lr=0.05)
    base.update(kw)
    return EditConfig(**base)


# --- feature collection and the editor -----------------------------------------------------------


def test_collected_features_give_the_weight_gradient(tok):
    model = _model()
    batch = tokenize_edits(REQUESTS, tok)
    names = [GATE.format(i=1), GATE.format(i=2)]
    feats = ultraedit.collect_features(model, batch, names, token="all")
    assert all(p.grad is None for p in model.parameters())  # autograd.grad leaves no .grad behind
    w = model.get_submodule(names[0]).weight
    w.requires_grad_(True)
    ft_m_loss(model, batch).backward()
    K, G = feats[names[0]]
    assert K.shape == (int(batch["attention_mask"].sum()), 32) and G.shape[1] == 64
    assert torch.allclose(G.T @ K, w.grad, atol=1e-12)  # dL/dW = sum_t g_t k_t^T
    ans = ultraedit.collect_features(model, batch, names, token="ans")
    assert ans[names[1]][0].shape[0] == int((batch["labels"] != -100).sum())  # one row per target


@pytest.mark.parametrize("tied", [False, True])
def test_ultraedit_changes_only_its_modules_and_moves_toward_targets(tok, tied):
    model = _model(tied)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    batch = tokenize_edits(MORE, tok)
    with torch.no_grad():
        loss0 = ft_m_loss(model, batch).item()
    res = edit(model, tok, MORE, _config(), progress=False)
    with torch.no_grad():
        loss1 = ft_m_loss(model, batch).item()
    assert res.modules == [GATE.format(i=1), GATE.format(i=2)]
    changed = {n for n, p in model.named_parameters() if not torch.equal(before[n], p.detach())}
    assert changed == {f"{m}.weight" for m in res.modules}
    assert all(v > 0 for v in res.changed_norms(model).values())
    assert loss1 < loss0 - 0.05  # the edit targets became more likely
    d = res.details
    assert d["schedule"] == {"chunk_size": 2, "n_chunks": 3, "order_seed": 0,
                             "evaluated": "once, after the last chunk"}
    assert d["modules_source"] == "pattern" and d["solve_dtype"] == "float64"
    json.dumps(res.to_dict())
    res.restore(model)
    assert all(torch.equal(before[n], p.detach()) for n, p in model.named_parameters())


def test_ultraedit_walks_the_chunks_of_chunk_requests(tok):
    seen: list[list[str]] = []

    class RecordingJob(EditJob):
        def collate(self, batch):
            seen.append([r.prompt for r in batch])
            return super().collate(batch)

    cfg = _config(chunk_size=3, ultra_batch_size=2, seed=5)
    model = _model()
    job = RecordingJob(model=model, tokenizer=tok, requests=MORE, config=cfg,
                       modules=[GATE.format(i=1)], progress=False)
    res = ultraedit.run(job)
    chunks = chunk_requests(list(MORE), 3, 5)
    want = [[r.prompt for r in c[i:i + 2]] for c in chunks for i in range(0, len(c), 2)]
    assert seen == want
    assert [c["n_edits"] for c in res.details["per_chunk"]] == [len(c) for c in chunks]


def test_base_on_disk_is_untouched(tok, tmp_path):
    from transformers import AutoModelForCausalLM

    _model().save_pretrained(tmp_path / "base")
    digest = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (tmp_path / "base").iterdir()}
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "base", **dtype_kwargs(torch.float64))
    res = edit(model, tok, MORE, _config(), progress=False)
    assert all(v > 0 for v in res.changed_norms(model).values())
    assert digest == {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
                      for p in (tmp_path / "base").iterdir()}


def test_presets_registry_and_config():
    fake = SimpleNamespace(config=SimpleNamespace(model_type="llama", num_hidden_layers=30,
                                                  hidden_size=576, intermediate_size=1536))
    name, table = ultraedit.ultra_preset(fake)
    assert name == "smollm2-135m-instruct" and table[GATE] == (10, 11, 12, 13, 14)
    fake.config.num_hidden_layers = 32
    fake.config.hidden_size, fake.config.intermediate_size = 4096, 14336
    name, table = ultraedit.ultra_preset(fake)
    assert table == {GATE: (11, 12, 13, 14, 15), "model.layers.{i}.mlp.up_proj": tuple(range(18, 25))}
    fake.config.hidden_size = 5
    with pytest.raises(ValueError, match="no UltraEdit module preset"):
        ultraedit.ultra_preset(fake)
    with pytest.raises(ValueError, match="no UltraEdit module preset"):  # tiny-llama has none
        edit(_model(), tiny_tokenizer(), REQUESTS, _config(ultra_modules="preset"), progress=False)
    e = get_editor("ultraedit")
    assert (e.update, e.sequential, e.paper_row, e.statistics) == ("closed_form", True, "UltraEdit", ())
    for bad in (dict(ultra_token="mask"), dict(ultra_lr=0.0), dict(ultra_normalizer="global")):
        with pytest.raises(ValueError, match="ultra_"):
            _config(**bad)
