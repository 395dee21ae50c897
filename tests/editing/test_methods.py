"""crispedit_lite.editing on a randomly initialised tiny Llama with a word-level tokenizer (offline).

Covers the FT-M loss (prompt masked), null-space preservation through the whole CrispEdit pipeline
(K-FAC -> projector -> projected Adam), undoing an edit, the K-FAC cache, ``save_edited``,
CrispEdit-Seq's factor merging, LoRA's merge, and the config presets.
"""

from __future__ import annotations

import json

import pytest
import torch

from crispedit_lite.data import EditRequest
from crispedit_lite.editing import (
    EditConfig,
    build_projectors,
    cache_key,
    capability_factors,
    cpu_config,
    edit,
    ft_m_loss,
    paper_config,
    save_edited,
)
from crispedit_lite.models import random_init_model

WORDS = ["<unk>", "<s>", "</s>", "the", "capital", "of", "france", "is", "paris", "rome", "city",
         "germany", "berlin", "a", "b", "c", "d", "e", "f", "g", "h", "and", "in", "river", "on",
         "lies", "big", "small", "red", "blue", "green", "tree", "house", "dog", "cat", "runs"]
LAYERS = (1, 2)
CAP_TEXT = ("the big red dog runs in the small house and the blue cat lies on a green tree "
            "the river lies in the city of berlin and a b c d e f g h the dog and the cat "
            "runs on the red house")  # 47 tokens: A (64 x 64) is rank-deficient, S (32 x 32) is not


def tiny_tokenizer():
    """A word-level tokenizer built offline (no BOS; EOS pads, as the library sets up)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from crispedit_lite.models import prepare_tokenizer

    tk = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", eos_token="</s>",
                                  bos_token="<s>")
    return prepare_tokenizer(tok)


REQUESTS = [
    EditRequest("the capital of france is", "rome", rephrase_prompt="the city of france is",
                locality_prompt="the capital of germany is", locality_answer="berlin"),
    EditRequest("the river of germany is", "blue"),
    EditRequest("a big dog is", "green"),
]


@pytest.fixture()
def model():
    return random_init_model("tiny-llama", dtype=torch.float64, seed=0)


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def _config(method: str, **kw) -> EditConfig:
    base = dict(method=method, layers=LAYERS, epochs=3, batch_size=2, lr=1e-2, gamma=0.7,
                n_capability=1, capability_max_length=64, capability_source="offline",
                chunk_size=2, early_stop=1e-6)
    base.update(kw)
    return EditConfig(**base)


def _weights(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _changed(before: dict, model) -> set[str]:
    return {n for n, p in model.named_parameters() if not torch.equal(before[n], p.detach())}


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
    before = _weights(model)
    res = edit(model, tok, REQUESTS, _config("ft", epochs=10, lr=3e-2), progress=False)
    assert res.modules == [f"model.layers.{i}.mlp.down_proj" for i in LAYERS]
    assert _changed(before, model) == {f"{m}.weight" for m in res.modules}
    losses = res.logs[0].epoch_losses
    assert losses[-1] < losses[0] - 0.3
    assert all(not p.requires_grad for p in model.parameters())
    assert {"train_s", "total_s"} <= set(res.timings)
    json.dumps(res.to_dict())
    res.restore(model)
    assert _changed(before, model) == set()  # bit-exact


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
    cfg = _config("crispedit", gamma=1.0, epochs=5, lr=3e-2, project_update=True)
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
    edit(model, tok, REQUESTS, _config("ft", epochs=5, lr=3e-2), progress=False)
    assert not torch.allclose(_logits(model, tok, CAP_TEXT)[:-1], base_cap[:-1], atol=1e-2)


def test_adam_nscl_projects_onto_input_null_space(model, tok, tmp_path):
    base_cap = _logits(model, tok, CAP_TEXT)
    cfg = _config("adam_nscl", nscl_gamma=1.0, nscl_early_stop=1e-6, epochs=3, lr=3e-2,
                  project_update=True)
    res = edit(model, tok, REQUESTS, cfg, capability_texts=[CAP_TEXT], cache_dir=tmp_path,
               progress=False)
    assert all(0 < s["editable_fraction"] < 1 for s in res.projector_stats.values())
    assert torch.allclose(_logits(model, tok, CAP_TEXT)[:-1], base_cap[:-1], atol=1e-6)


def test_projection_methods_need_capability_texts(model, tok):
    with pytest.raises(ValueError, match="needs capability_texts"):
        edit(model, tok, REQUESTS, _config("crispedit"), progress=False)
    with pytest.raises(ValueError, match="no edit requests"):
        edit(model, tok, [], _config("ft"), progress=False)


# --- K-FAC cache ------------------------------------------------------------------------------------


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
def test_kfac_cache_for_other_settings_is_not_reused(model, tok, tmp_path, change):
    modules = [f"model.layers.{i}.mlp.down_proj" for i in LAYERS]
    kw = dict(max_length=64, labels="true", seed=0)
    texts = [CAP_TEXT]
    capability_factors(model, tok, modules, texts, cache_dir=tmp_path, progress=False, **kw)
    if change == "texts":
        texts = [CAP_TEXT + " the cat"]
    elif change == "modules":
        modules = modules[:1]
    else:
        kw[change] = {"labels": "sampled", "max_length": 16, "seed": 1}[change]
    _, info = capability_factors(model, tok, modules, texts, cache_dir=tmp_path, progress=False, **kw)
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


def test_build_projectors_kinds(model, tok, tmp_path):
    modules = [f"model.layers.{i}.mlp.down_proj" for i in LAYERS]
    f, _ = capability_factors(model, tok, modules, [CAP_TEXT], max_length=64, cache_dir=tmp_path,
                              progress=False)
    lo, s_lo = build_projectors(model, f, 0.5)
    hi, s_hi = build_projectors(model, f, 0.99)
    for m in modules:
        assert s_lo[m]["editable_fraction"] > s_hi[m]["editable_fraction"]  # larger gamma protects more
    assert set(lo) == {model.get_submodule(m).weight for m in modules}
    with pytest.raises(ValueError, match="kind must be"):
        build_projectors(model, f, 0.5, kind="nope")


# --- save_edited ---------------------------------------------------------------------------------------


def test_save_edited_writes_a_new_dir_atomically(model, tok, tmp_path):
    base_dir = tmp_path / "base"
    model.save_pretrained(base_dir)
    out = save_edited(model, tok, tmp_path / "edited", info={"method": "ft"}, base_dir=base_dir)
    assert json.loads((out / "edit_info.json").read_text()) == {"method": "ft"}
    assert (out / "config.json").exists() and (out / "tokenizer.json").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left
    with pytest.raises(ValueError, match="already exists"):
        save_edited(model, tok, out)
    with pytest.raises(ValueError, match="over its base model"):
        save_edited(model, tok, base_dir, base_dir=base_dir)
    model.config._name_or_path = str(base_dir)
    with pytest.raises(ValueError, match="over its base model"):
        save_edited(model, tok, base_dir)


def test_save_edited_leaves_nothing_when_writing_fails(model, tok, tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(model, "save_pretrained", boom)
    with pytest.raises(OSError, match="disk full"):
        save_edited(model, tok, tmp_path / "edited")
    assert list(tmp_path.iterdir()) == []


# --- CrispEdit-Seq ----------------------------------------------------------------------------------


def test_crispedit_seq_runs_chunks_and_merges_factors(model, tok, tmp_path):
    reqs = REQUESTS + [EditRequest("the small cat is", "red")]
    cfg = _config("crispedit_seq", gamma=0.9, chunk_size=2, epochs=2, lr=1e-2)
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
    before = _weights(model)
    res = edit(model, tok, REQUESTS, _config("lora", epochs=3, lr=1e-2), progress=False)
    changed = _changed(before, model)
    want = {f"model.layers.{i}.self_attn.{t}.weight" for i in LAYERS for t in ("q_proj", "v_proj")}
    assert changed == want
    assert set(dict(model.named_parameters())) == set(before)  # adapters merged and removed
    assert not any("lora" in n for n, _ in model.named_modules())
    res.restore(model)
    assert _changed(before, model) == set()


def test_locbf_ft_trains_one_layer(model, tok):
    before = _weights(model)
    res = edit(model, tok, REQUESTS, _config("locbf_ft", epochs=2), progress=False)
    assert res.modules == ["model.layers.1.mlp.down_proj"]  # second-to-last of (1, 2)
    assert _changed(before, model) == {"model.layers.1.mlp.down_proj.weight"}
    res = edit(model, tok, REQUESTS, _config("locbf_ft", epochs=1, locbf_layer=3), progress=False)
    assert res.modules == ["model.layers.3.mlp.down_proj"]


# --- configs --------------------------------------------------------------------------------------------


def test_configs_validate_and_presets():
    with pytest.raises(ValueError, match="unknown method 'rome'; known methods: crispedit, "):
        EditConfig(method="rome")
    with pytest.raises(ValueError, match="gamma must lie in"):
        EditConfig(gamma=0.0)
    with pytest.raises(ValueError, match="epochs must be positive"):
        EditConfig(epochs=0)
    with pytest.raises(ValueError, match="lr must be positive"):
        EditConfig(lr=-1.0)
    p = paper_config("crispedit", "counterfact")
    assert (p.epochs, p.batch_size, p.lr, p.early_stop, p.gamma, p.n_capability) == (
        25, 32, 5e-4, 0.01, 0.9, 10_000)
    assert paper_config("crispedit_seq", "wikibigedit").gamma == 0.995
    c = cpu_config("ft", layers=[18])
    assert c.capability_source == "offline" and c.layers == (18,)
    assert json.loads(json.dumps(c.with_(gamma=0.5).to_dict()))["gamma"] == 0.5
