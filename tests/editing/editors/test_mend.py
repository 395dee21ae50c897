"""MEND through the registry: an untrained edit is a gradient step, edits are low rank, the shipped editor.

A tiny random Llama (float64) with a word-level tokenizer for the exact checks; the embedded SmolLM2 and
the shipped editor for the regression (slow).
"""

from __future__ import annotations

import copy
import json

import pytest
import torch

from crispedit_lite.data import EditRequest, load_edits
from crispedit_lite.data.batches import tokenize_edits
from crispedit_lite.editing import EditConfig, edit, ft_m_loss, get_editor
from crispedit_lite.editing.editors.mend import MEND_PRESETS, MendSettings, mend_modules
from crispedit_lite.editing.loops.mend import (
    SHIPPED_EDITORS,
    collect_factors,
    file_sha256,
    load_editor,
    save_editor,
)
from crispedit_lite.editing.loops.mend_trainer import MendTrainer
from crispedit_lite.editing.loops.sequential import chunk_requests
from crispedit_lite.editing.updates.mend import MendNetwork
from crispedit_lite.models import random_init_model
from tests.helpers import CAP_TEXT, ROOT

REQS = [EditRequest("the capital of france is", "rome", rephrase_prompt="the city of france is",
                    locality_prompt="the capital of germany is", locality_answer="berlin"),
        EditRequest("the river of germany is", "blue", rephrase_prompt="the river in germany is"),
        EditRequest("a big dog is", "green", rephrase_prompt="the big dog is")]


def _untrained(model, path, **network) -> MendNetwork:
    modules = mend_modules(model, MendSettings())
    net = MendNetwork({m: tuple(model.get_submodule(m).weight.shape) for m in modules}, **network)
    save_editor(net, path)
    return net


def _config(method: str, path, **mend) -> EditConfig:
    return EditConfig(method=method, seed=0, mend_editor=str(path), **mend)


def _grads(model, requests, tok, modules):
    twin = copy.deepcopy(model)
    for p in twin.parameters():
        p.requires_grad_(False)
    ws = [twin.get_submodule(m).weight.requires_grad_(True) for m in modules]
    return dict(zip(modules, torch.autograd.grad(ft_m_loss(twin, tokenize_edits(requests, tok)), ws)))


def test_registry_entries_and_the_paper_row_run_one_edit_at_a_time():
    mend, seq = get_editor("mend"), get_editor("mend_seq")
    assert (mend.statistics, mend.update, mend.sequential, mend.label) == ((), "learned", False, "MEND")
    assert (seq.update, seq.sequential, seq.label, mend.sequential_form) == ("learned", True, "MEND-Seq",
                                                                              "mend_seq")
    assert mend.settings is seq.settings is MendSettings and EditConfig("mend").settings == MendSettings()
    # the paper's row (EasyEdit edit.py --num_edits 1): its cells run the sequential form, one edit per
    # step, which is what MEND-Seq does with its settings' official value
    assert mend.paper_row == "MEND" and not seq.paper_row
    assert mend.paper_run["chunk_size"] == MendSettings.paper["mend_edits_per_step"] == \
        MendSettings().mend_edits_per_step == 1
    assert mend.paper_run["dtype"] == "float32" and mend.paper_run["config"]["mend_editor"].endswith(
        ".safetensors")
    assert EditConfig("mend_seq", mend_rank=8).settings.mend_rank == 8
    with pytest.raises(ValueError, match="unknown setting 'mend_rnak' for method mend"):
        EditConfig(method="mend", mend_rnak=3)
    with pytest.raises(ValueError, match="mend_edits_per_step must be positive"):
        MendSettings(mend_edits_per_step=0)
    with pytest.raises(ValueError, match="mend_combine must be false with mend_x_only"):
        MendSettings(mend_x_only=True).network()
    assert MendSettings(mend_x_only=True, mend_combine=False).network()["x_only"]


def test_presets_are_the_last_three_layers_of_each_architecture(model):
    from crispedit_lite.models.presets import ARCHITECTURES

    expected = {"meta-llama/Meta-Llama-3-8B-Instruct": (29, 30, 31),
                "Qwen/Qwen2.5-1.5B-Instruct": (25, 26, 27), "Qwen/Qwen2.5-7B-Instruct": (25, 26, 27),
                "smollm2-135m-instruct": (27, 28, 29)}
    assert set(MEND_PRESETS) == set(expected)
    for name, layers in expected.items():
        assert MEND_PRESETS[name]["shape"] == ARCHITECTURES[name]
        assert MEND_PRESETS[name]["modules"] == {f"model.layers.{{i}}.mlp.{p}": layers
                                                 for p in ("gate_proj", "up_proj", "down_proj")}
    # a model without a preset gets the same rule: tiny-llama has 4 layers
    assert mend_modules(model, MendSettings()) == [f"model.layers.{i}.mlp.{p}" for i in (1, 2, 3)
                                                   for p in ("gate_proj", "up_proj", "down_proj")]


def test_an_old_record_with_extra_mend_loads_with_the_prefixed_settings():
    old = {**EditConfig("mend_seq").to_dict(), "extra": {"mend": {"editor": "runs/x.safetensors", "rank": 8}}}
    for k in MendSettings.field_names():
        old.pop(k)
    cfg = EditConfig.from_dict(old)
    assert (cfg.settings.mend_editor, cfg.settings.mend_rank, cfg.mend_edits_per_step) == \
        ("runs/x.safetensors", 8, 1)
    with pytest.raises(ValueError, match="extra\\['mend'\\] has 'rnak'"):
        EditConfig.from_dict({**old, "extra": {"mend": {"rnak": 3}}})
    assert EditConfig.from_dict({**old, "method": "ft"}).settings is None  # another method's block


def test_untrained_mend_edit_is_one_gradient_step_with_the_initial_step_size(model, tok, tmp_path):
    """Identity network, no normalisation: Delta W = alpha * grad_W L exactly (float64), every matrix."""
    path = tmp_path / "untrained.safetensors"
    net = _untrained(model, path, norm=False, rank=4)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    res = edit(model, tok, REQS[:2], _config("mend", path), progress=False)
    twin = random_init_model("tiny-llama", dtype=torch.float64, seed=0)  # the same base weights
    grads = _grads(twin, REQS[:2], tok, res.modules)
    alpha = float(net.edit_lrs.detach()[0])  # the official initial edit_lr, +1e-4 (the sign is learned)
    assert alpha == pytest.approx(1e-4, rel=1e-6)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed == {f"{m}.weight" for m in res.modules}
    for m in res.modules:
        delta = model.get_submodule(m).weight.detach() - before[f"{m}.weight"]
        torch.testing.assert_close(delta, alpha * grads[m], rtol=1e-9, atol=1e-15)
        assert grads[m].norm() > 0
    m = res.modules[-1]  # a wrong answer fails: the opposite sign
    delta = model.get_submodule(m).weight.detach() - before[f"{m}.weight"]
    assert not torch.allclose(delta, -alpha * grads[m])
    res.restore(model)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_normalised_untrained_edit_is_the_product_of_standardised_factors(model, tok, tmp_path):
    torch.manual_seed(0)
    modules = mend_modules(model, MendSettings())
    net = MendNetwork({m: tuple(model.get_submodule(m).weight.shape) for m in modules}, rank=4).double()
    batch = tokenize_edits(REQS, tok)
    _, factors, _ = collect_factors(model, batch, modules)
    net.train()
    net.deltas(factors)  # statistics of the three edits, shared by the matrices of one shape
    net.eval()
    deltas = net.deltas(factors)
    for m in modules:
        g = net.transforms[net.key[m]]
        u, d = factors[m]
        u, d = u.reshape(-1, u.shape[-1]), d.reshape(-1, d.shape[-1])
        keep = (u != 0).any(-1) & (d != 0).any(-1)
        uh = (u[keep] - g.u_norm.mean) / ((g.u_norm.m2 / (g.u_norm.count - 1)).sqrt() + 1e-7)
        dh = (d[keep] - g.delta_norm.mean) / ((g.delta_norm.m2 / (g.delta_norm.count - 1)).sqrt() + 1e-7)
        torch.testing.assert_close(deltas[m], net.edit_lrs[0].item() * dh.T @ uh)


def test_every_edited_matrix_changes_by_rank_at_most_the_number_of_tokens(model, tok, tmp_path):
    path = tmp_path / "e.safetensors"
    net = _untrained(model, path, rank=4)
    net.train()
    _, factors, _ = collect_factors(model, tokenize_edits(REQS, tok), net.shapes)
    net.deltas(factors)  # give the normalisation statistics
    torch.nn.init.normal_(net.transforms[next(iter(net.transforms))].nets["both"].layers[0].u, std=0.1)
    save_editor(net, path)
    batch = tokenize_edits(REQS[:1], tok)
    n_tokens = int(batch["attention_mask"].sum())
    before = {m: model.get_submodule(m).weight.detach().clone() for m in net.shapes}
    res = edit(model, tok, REQS[:1], _config("mend", path), progress=False)
    rows = res.details["per_step"][0]["token_rows"]
    for m in res.modules:
        delta = model.get_submodule(m).weight.detach() - before[m]
        rank = int(torch.linalg.matrix_rank(delta))
        assert 1 <= rank <= rows[m] <= n_tokens < min(delta.shape)



def _normalised_editor(model, tok, path):
    """An untrained editor whose normalisation has seen the factors of REQS, saved at ``path``."""
    net = _untrained(model, path, rank=4)
    net.train()
    _, factors, _ = collect_factors(model, tokenize_edits(REQS, tok), net.shapes)
    net.deltas(factors)
    save_editor(net, path)
    return path

def test_mend_seq_is_single_edits_in_the_chunk_order_never_restored(model, tok, tmp_path):
    path = _normalised_editor(model, tok, tmp_path / "e.safetensors")
    twin = copy.deepcopy(model)
    res = edit(model, tok, REQS, _config("mend_seq", path), progress=False)
    assert res.details["schedule"]["n_steps"] == 3 and not res.details["schedule"]["restored_between_steps"]
    for chunk in chunk_requests(REQS, 1, seed=0):
        edit(twin, tok, chunk, _config("mend", path), progress=False)
    for m in res.modules:
        torch.testing.assert_close(model.get_submodule(m).weight, twin.get_submodule(m).weight)
    steps = res.details["per_step"]
    assert [s["case_ids"] for s in steps] == [[r.case_id] for c in chunk_requests(REQS, 1, 0) for r in c]


def test_mend_seq_continues_a_stream_over_calls_with_nothing_but_a_step_count(model, tok, tmp_path):
    """The carry protocol: one call per step with ``carry`` equals one call; only the count is carried."""
    path = _normalised_editor(model, tok, tmp_path / "e.safetensors")
    whole, stepped = copy.deepcopy(model), copy.deepcopy(model)
    res = edit(whole, tok, REQS, _config("mend_seq", path), progress=False)
    carry: dict = {}
    for k, chunk in enumerate(chunk_requests(REQS, 1, seed=0)):
        out = edit(stepped, tok, chunk, _config("mend_seq", path), carry=carry, progress=False)
        assert carry == {"chunks_done": k + 1} and out.details["per_step"][0]["step"] == k
    for m in res.modules:
        assert not torch.equal(whole.get_submodule(m).weight, model.get_submodule(m).weight)
        torch.testing.assert_close(stepped.get_submodule(m).weight, whole.get_submodule(m).weight)
    ignored: dict = {}  # the batch form runs one step and continues nothing
    edit(copy.deepcopy(model), tok, REQS[:1], _config("mend", path), carry=ignored, progress=False)
    assert ignored == {}


def test_wrong_digest_is_refused_with_one_line(model, tok, tmp_path):
    path = tmp_path / "e.safetensors"
    _untrained(model, path, norm=False, rank=4)
    with pytest.raises(ValueError) as err:
        load_editor(path, sha256="0" * 64)
    assert "differs from the pinned" in str(err.value) and "\n" not in str(err.value)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with pytest.raises(ValueError, match="mend_editor_sha256: .* differs from the pinned"):
        edit(model, tok, REQS[:1], _config("mend", path, mend_editor_sha256="f" * 64), progress=False)
    with pytest.raises(ValueError, match="mend_editor_sha256 must be 64 hexadecimal digits"):
        edit(model, tok, REQS[:1], _config("mend", path, mend_editor_sha256="abc"), progress=False)
    assert load_editor(path, sha256=file_sha256(path)).shapes  # the right digest loads
    with pytest.raises(ValueError, match="mend_editor: no file"):
        edit(model, tok, REQS[:1], _config("mend", tmp_path / "missing.safetensors"), progress=False)
    with pytest.raises(ValueError, match="no shipped editor for a model of shape"):
        edit(model, tok, REQS[:1], EditConfig(method="mend"), progress=False)
    other = tmp_path / "other.safetensors"  # trained for other matrices
    save_editor(MendNetwork({"model.layers.3.mlp.up_proj": (64, 32)}, norm=False, rank=2), other)
    with pytest.raises(ValueError, match="mend_editor: .* was trained for"):
        edit(model, tok, REQS[:1], _config("mend", other), progress=False)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())  # nothing changed


def test_tiny_mend_trains_with_decreasing_loss(tok, tmp_path):
    net = random_init_model("tiny-llama", dtype=torch.float32, seed=0)
    s = MendSettings(mend_rank=8, mend_steps=40, mend_accumulate=2, mend_val_every=20, mend_val_size=3,
                     mend_lr=1e-3, mend_lr_lr=1e-3, mend_loc_max_length=16, mend_outer="prompt+paraphrase")
    trainer = MendTrainer(net, tok, mend_modules(net, s), s, REQS, REQS, [CAP_TEXT], tmp_path / "run")
    curve = trainer.train(progress=False, log_every=10)
    losses = [r["loss"] for r in curve["train"]]
    assert losses[-1] < losses[0] and curve["val"][-1]["total_edit"] < curve["val"][0]["total_edit"]
    assert all(lr < 0 for lr in curve["train"][-1]["edit_lrs"])  # the learned step turned into descent
    assert (tmp_path / "run" / "best.safetensors").is_file()
    # resume: a finished run does nothing more and keeps its curve
    again = MendTrainer(net, tok, mend_modules(net, s), s, REQS, REQS, [CAP_TEXT], tmp_path / "run")
    assert again.resume() and again.step == 40 and again.train(progress=False)["train"] == curve["train"]
    other = MendSettings(**{**s.to_dict(), "mend_c_loc": 0.5})  # other settings: refused, not mixed
    with pytest.raises(ValueError, match=r"other MEND settings \(\['mend_c_loc'\]\)"):
        MendTrainer(net, tok, mend_modules(net, other), other, REQS, REQS, [CAP_TEXT],
                    tmp_path / "run").resume()


def test_gpu_training_script_runs_at_tiny_shapes_on_a_zsre_file(tok, tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_mend_gpu", ROOT / "tools" / "train_mend_gpu.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    gpu_main = script.main
    tok.save_pretrained(tmp_path / "tok")
    recs = [{"subject": s, "src": f"{p}", "alt": a, "rephrase": f"the {p}", "loc": f"nq question: {q}",
             "loc_ans": "berlin", "answers": ["paris"]}
            for s, p, a, q in [("france", "capital of france is", "rome", "capital of germany is"),
                               ("germany", "river of germany is", "blue", "small cat is"),
                               ("dog", "big dog is", "green", "red house is"),
                               ("cat", "small cat is", "red", "big tree is")] * 2]
    (tmp_path / "zsre.json").write_text(json.dumps(recs))
    out = tmp_path / "out"
    rc = gpu_main(["llama3-8b", str(tmp_path / "zsre.json"), str(out), "--model", "random:tiny-llama",
                   "--tokenizer", str(tmp_path / "tok"), "--device", "cpu", "--rank", "4", "--steps", "6",
                   "--val-every", "3", "--val-size", "2", "--no-progress"])
    assert rc == 0
    record = json.loads((out / "train_curve.json").read_text())
    assert record["settings"]["mend_lr"] == 1e-6 and record["settings"]["mend_rank"] == 4  # preset, override
    assert {k: record["settings"][k] for k in MendSettings.paper if k in record["settings"]} == {
        **{k: v for k, v in MendSettings.paper.items() if k in record["settings"]}, "mend_rank": 4}
    assert record["capability"]["source"] == "none" and record["split"]["n_val"] == 2
    assert load_editor(out / "editor_fp16.safetensors").shapes == load_editor(out / "best.safetensors").shapes


@pytest.mark.slow
def test_shipped_editor_loads_and_edits_a_training_request_on_smollm2():
    """The trained editor on a request of its training split: log P(new) rises above log P(old)."""
    from crispedit_lite.evaluation import sequence_logprobs
    from crispedit_lite.models import load_model

    model, tok = load_model("smollm2-135m-instruct")
    r = next(x for x in load_edits("smollm2-mend-train") if x.extra["split"] == "train")
    (new0, old0), _ = sequence_logprobs(model, tok, [r.prompt] * 2, [r.target_new, r.ground_truth])
    assert new0 < old0  # before: the model prefers the original object
    res = edit(model, tok, [r], EditConfig(method="mend", seed=0), progress=False)
    assert res.details["editor_sha256"] == SHIPPED_EDITORS["smollm2-135m-instruct"]["sha256"]
    (new1, old1), _ = sequence_logprobs(model, tok, [r.prompt] * 2, [r.target_new, r.ground_truth])
    assert new1 > old1 and new1 > new0 + 1.0
    res.restore(model)


def test_shipped_file_is_package_data_with_its_pinned_digest():
    from importlib import resources

    entry = SHIPPED_EDITORS["smollm2-135m-instruct"]
    ref = resources.files("crispedit_lite") / "resources" / entry["file"]
    with resources.as_file(ref) as path:
        assert file_sha256(path) == entry["sha256"] and path.stat().st_size < 20e6
        net = load_editor(path, entry["sha256"])
    assert set(net.shapes) == {f"model.layers.{i}.mlp.{p}" for i in (27, 28, 29)
                               for p in ("gate_proj", "up_proj", "down_proj")}


def test_training_split_is_held_out_from_the_evaluation_set_and_pinned():
    import re
    from importlib import resources

    from crispedit_lite.data import read_records
    from crispedit_lite.editing.mend_train import load_split, records_sha256

    data = json.loads((resources.files("crispedit_lite") / "resources" / "smollm2_mend_train.json")
                      .read_text(encoding="utf-8"))
    assert records_sha256(data["records"]) == data["meta"]["records_sha256"]
    evaluation = read_records("smollm2-counterfacts")
    eval_subjects = {r["subject"].lower() for r in evaluation}
    train, val, info = load_split("smollm2-mend-train", "auto", 50, 0)
    assert (info["n_train"], info["n_val"]) == (734, 80)
    assert info["records_sha256"] == data["meta"]["records_sha256"]
    subjects = {r.subject for r in train + val}
    assert not {s.lower() for s in subjects} & eval_subjects
    assert not any(re.search(r"\b" + re.escape(s) + r"\b", e["locality_prompt"], re.I)
                   for s in subjects for e in evaluation)
    assert not {r.subject for r in train} & {r.subject for r in val}
    for r in data["records"]:
        assert r["target_new"].lower() not in {a.lower() for a in r["answers"]}
        assert r["prompt"] != r["rephrase_prompt"] and r["subject"] not in r["locality_prompt"]
