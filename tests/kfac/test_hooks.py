"""crispedit_lite.kfac.hooks (collect_kfac, with merge_kfac and resolve_modules): exactness on deep linear
networks, expand/reduce definitions, masking, labels."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from crispedit_lite.curvature import gauss_newton_matrix
from crispedit_lite.kfac import KFACFactors, collect_kfac, merge_kfac, resolve_modules

f64 = torch.float64


def deep_linear(dims=(4, 5, 3, 2), seed=0):
    torch.manual_seed(seed)
    layers = [nn.Linear(a, b, bias=False) for a, b in zip(dims[:-1], dims[1:])]
    return nn.Sequential(*layers).to(f64)


def mse_mean_over_terms(out, target):
    """Mean over positions of ||f - y||^2 (the convention of collect_kfac(loss='mse'))."""
    return ((out - target) ** 2).sum() / out.shape[:-1].numel()


@pytest.mark.parametrize("layer", ["0", "1", "2"])
def test_type2_kfac_equals_exact_gnh_block_on_deep_linear_network(layer):
    model = deep_linear()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(9, 4, generator=g, dtype=f64)
    y = torch.randn(9, 2, generator=g, dtype=f64)
    f = collect_kfac(model, [layer], [(x, y)], labels="type2", loss="mse", progress=False)[layer]
    G = gauss_newton_matrix(model, mse_mean_over_terms, x, y, [f"{layer}.weight"])
    torch.testing.assert_close(torch.kron(f.S, f.A), G, atol=1e-12, rtol=1e-10)
    assert f.n_tokens == 9


def test_type2_kfac_expand_exact_with_token_dimension_and_several_batches():
    model = deep_linear((3, 4, 2))
    g = torch.Generator().manual_seed(2)
    xs = [torch.randn(2, 5, 3, generator=g, dtype=f64) for _ in range(3)]
    ys = [torch.randn(2, 5, 2, generator=g, dtype=f64) for _ in range(3)]
    f = collect_kfac(model, ["0"], list(zip(xs, ys)), labels="type2", loss="mse", progress=False)["0"]
    X, Y = torch.cat(xs), torch.cat(ys)
    G = gauss_newton_matrix(model, mse_mean_over_terms, X, Y, ["0.weight"])
    torch.testing.assert_close(torch.kron(f.S, f.A), G, atol=1e-12, rtol=1e-10)
    assert f.n_tokens == 30


def _by_hand(lin, x, y, valid):
    """Per-token inputs and output gradients of the summed MSE loss, computed without hooks."""
    s = F.linear(x, lin.weight).detach().requires_grad_(True)
    loss = (((s - y) ** 2).sum(-1) * valid).sum()
    (g,) = torch.autograd.grad(loss, s)
    return x, g


def test_expand_and_reduce_match_their_definitions():
    torch.manual_seed(0)
    lin = nn.Linear(4, 3, bias=False).to(f64)
    x = torch.randn(5, 6, 4, dtype=f64)  # (batch, token, feature)
    y = torch.randn(5, 6, 3, dtype=f64)
    valid = torch.ones(5, 6, dtype=f64)
    a, g = _by_hand(lin, x, y, valid)
    exp = collect_kfac(lin, [""], [(x, y)], loss="mse", approx="expand", progress=False)[""]
    red = collect_kfac(lin, [""], [(x, y)], loss="mse", approx="reduce", progress=False)[""]
    a2, g2 = a.reshape(-1, 4), g.reshape(-1, 3)
    torch.testing.assert_close(exp.A, a2.T @ a2 / 30)
    torch.testing.assert_close(exp.S, g2.T @ g2 / 30)
    a_bar, g_sum = a.mean(1), g.sum(1)  # K-FAC-reduce: mean input, summed gradient per sequence
    torch.testing.assert_close(red.A, a_bar.T @ a_bar / 5)
    torch.testing.assert_close(red.S, g_sum.T @ g_sum / 5)
    assert exp.n_tokens == 30 and red.n_tokens == 5


def test_ignore_index_excludes_tokens_from_both_factors():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6, bias=False), nn.Tanh(), nn.Linear(6, 5, bias=False)).to(f64)
    x = torch.randn(3, 4, 4, dtype=f64)
    y = torch.randint(0, 5, (3, 4))
    y_masked = y.clone()
    y_masked[0, :2] = -100
    y_masked[2, 3] = -100
    full = collect_kfac(model, ["2"], [(x, y_masked)], progress=False)["2"]
    keep = y_masked != -100
    sub = collect_kfac(model, ["2"], [(x[keep][None], y[keep][None])], progress=False)["2"]
    torch.testing.assert_close(full.A, sub.A)
    torch.testing.assert_close(full.S, sub.S)
    assert full.n_tokens == int(keep.sum()) == 9


def test_true_labels_give_the_empirical_fisher_by_hand():
    torch.manual_seed(0)
    lin = nn.Linear(3, 4, bias=False).to(f64)
    x = torch.randn(7, 3, dtype=f64)
    y = torch.randint(0, 4, (7,))
    f = collect_kfac(lin, [""], [(x, y)], labels="true", progress=False)[""]
    p = torch.softmax(lin(x), -1)
    g = p - F.one_hot(y, 4).to(f64)  # d CE / d logits for each sample
    torch.testing.assert_close(f.S, g.T @ g / 7)
    torch.testing.assert_close(f.A, x.T @ x / 7)


def test_sampled_labels_are_an_unbiased_estimate_of_type2():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4, bias=False), nn.Tanh(), nn.Linear(4, 3, bias=False)).to(f64)
    x = torch.randn(40, 3, dtype=f64)
    y = torch.randint(0, 3, (40,))
    exact = collect_kfac(model, ["2"], [(x, y)], labels="type2", progress=False)["2"].S
    draws = [collect_kfac(model, ["2"], [(x, y)], labels="sampled", seed=s, progress=False)["2"].S
             for s in range(300)]
    mc = torch.stack(draws).mean(0)
    assert (mc - exact).norm() / exact.norm() < 0.05
    again = collect_kfac(model, ["2"], [(x, y)], labels="sampled", seed=0, progress=False)["2"].S
    torch.testing.assert_close(again, draws[0])  # seeded
    true = collect_kfac(model, ["2"], [(x, y)], labels="true", progress=False)["2"].S
    assert (true - exact).norm() / exact.norm() > 0.05  # the empirical Fisher is a different matrix


def tiny_llama(dtype=torch.float32):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(cfg).to(dtype).eval()


def test_causal_lm_batches_shift_labels_and_mask_prompt_and_padding():
    model = tiny_llama()
    ids = torch.randint(1, 50, (2, 7))
    attn = torch.ones_like(ids)
    attn[1, 5:] = 0  # right padding
    labels = ids.clone()
    labels[:, :3] = -100  # prompt
    labels[attn == 0] = -100
    batch = {"input_ids": ids, "attention_mask": attn, "labels": labels}
    name = "model.layers.1.mlp.down_proj"
    f = collect_kfac(model, [name], [batch], progress=False)[name]
    # position r predicts labels[r + 1]: valid positions are r = 2..5 (row 0) and r = 2..3 (row 1)
    assert f.n_tokens == 4 + 2
    seen = {}
    h = model.get_submodule(name).register_forward_hook(lambda m, a, o: seen.update(a=a[0]))
    with torch.no_grad():
        model(input_ids=ids, attention_mask=attn)
    h.remove()
    a = seen["a"]
    valid = torch.zeros(2, 7, dtype=torch.bool)
    valid[0, 2:6] = True
    valid[1, 2:4] = True
    rows = a[valid]
    torch.testing.assert_close(f.A, rows.T @ rows / 6, rtol=1e-5, atol=1e-6)
    assert f.meta["module"] == name and f.meta["labels"] == "true"
    # parameters are restored and no gradient leaked into them
    assert all(p.requires_grad for p in model.parameters())
    assert all(p.grad is None for p in model.parameters())


def test_bf16_model_accumulates_in_fp32():
    m32 = tiny_llama()
    m16 = tiny_llama(torch.bfloat16)
    ids = torch.randint(1, 50, (2, 9))
    name = "model.layers.0.mlp.down_proj"
    f32 = collect_kfac(m32, [name], [{"input_ids": ids}], progress=False)[name]
    f16 = collect_kfac(m16, [name], [{"input_ids": ids}], progress=False)[name]
    assert f16.A.dtype == torch.float32 and f16.meta["model_dtype"] == "bfloat16"
    assert (f16.A - f32.A).norm() / f32.A.norm() < 0.05


def test_hf_conv1d_is_treated_as_transposed_linear():
    from transformers.pytorch_utils import Conv1D

    torch.manual_seed(0)
    conv = Conv1D(3, 4)  # nf=3 outputs, nx=4 inputs; weight (4, 3)
    lin = nn.Linear(4, 3)
    with torch.no_grad():
        lin.weight.copy_(conv.weight.T)
        lin.bias.copy_(conv.bias)
    x, y = torch.randn(6, 4), torch.randint(0, 3, (6,))
    fc = collect_kfac(conv, [""], [(x, y)], progress=False)[""]
    fl = collect_kfac(lin, [""], [(x, y)], progress=False)[""]
    torch.testing.assert_close(fc.A, fl.A)
    torch.testing.assert_close(fc.S, fl.S)
    assert fc.meta["transposed"] and not fl.meta["transposed"]


def test_merge_equals_collection_over_the_union():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4, bias=False), nn.Tanh(), nn.Linear(4, 3, bias=False))
    b1 = (torch.randn(5, 3), torch.randint(0, 3, (5,)))
    b2 = (torch.randn(11, 3), torch.randint(0, 3, (11,)))
    f1 = collect_kfac(model, ["0", "2"], [b1], progress=False)
    f2 = collect_kfac(model, ["0", "2"], [b2], progress=False)
    both = collect_kfac(model, ["0", "2"], [b1, b2], progress=False)
    merged = merge_kfac([f1, f2])
    for k in ("0", "2"):
        torch.testing.assert_close(merged[k].A, both[k].A)
        torch.testing.assert_close(merged[k].S, both[k].S)
        assert merged[k].n_tokens == 16


def test_bad_inputs_are_named():
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    with pytest.raises(ValueError, match=r"unknown module '2\.wieght'.*linear modules include"):
        resolve_modules(model, ["2.wieght"])
    with pytest.raises(ValueError, match="Tanh"):
        resolve_modules(model, ["1"])
    with pytest.raises(ValueError, match="no valid tokens"):
        collect_kfac(model, ["0"], [], progress=False)
    y = torch.full((4,), -100)
    with pytest.raises(ValueError, match="no valid tokens"):
        collect_kfac(model, ["0"], [(torch.randn(4, 3), y)], progress=False)
    with pytest.raises(ValueError, match="labels must be"):
        collect_kfac(model, ["0"], [], labels="fisher", progress=False)
    with pytest.raises(ValueError, match="targets of shape"):
        collect_kfac(model, ["0"], [(torch.randn(4, 3), torch.zeros(5).long())], progress=False)
    with pytest.raises(ValueError, match="type2"):
        collect_kfac(model, ["0"], [(torch.randn(4, 3), torch.zeros(4).long())], labels="type2",
                     max_type2_classes=1, progress=False)
    with pytest.raises(ValueError, match="NaN"):
        KFACFactors(A=torch.full((2, 2), float("nan")), S=torch.eye(2), n_tokens=3)
    with pytest.raises(ValueError, match="square"):
        KFACFactors(A=torch.ones(2, 3), S=torch.eye(2), n_tokens=3)
    with pytest.raises(ValueError, match="at least one"):
        merge_kfac([])


def test_merge_refuses_mixed_approx_or_labels():
    eye = torch.eye(2)
    base = KFACFactors(A=eye, S=eye, n_tokens=3, meta={"approx": "expand", "labels": "true"})
    red = KFACFactors(A=eye, S=eye, n_tokens=3, meta={"approx": "reduce", "labels": "true"})
    smp = KFACFactors(A=eye, S=eye, n_tokens=3, meta={"approx": "expand", "labels": "sampled"})
    with pytest.raises(ValueError, match="part 0 has approx='expand' but part 1 has approx='reduce'"):
        merge_kfac([base, red])
    with pytest.raises(ValueError, match="part 0 has labels='true' but part 2 has labels='sampled'"):
        merge_kfac([base, base, smp])
    assert merge_kfac([base, KFACFactors(A=eye, S=eye, n_tokens=1)]).n_tokens == 4  # untagged: allowed
