r"""Graders for the exercises of notebook ``04_kfac_step_by_step``.

The judges compare with independent computations of a different form: permutation properties
(4.1), :func:`crispedit_lite.kfac.collect_kfac` on a tiny random LLaMA (4.2; the library is itself
tested against a perturbation computation), and dense :math:`\mathbf J^\top\mathbf H\mathbf J` from
autograd Jacobians (4.3). Derived in notebook ``04_kfac_step_by_step``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from crispedit_lite.exercises.core import exercise

__all__ = ["check_commutation", "check_kfac_hooks", "check_exact_output_block"]


@exercise("ex-04-1")
def check_commutation(answer: tuple) -> None:
    r"""Exercise 4.1: ``P`` maps the row-major ``vec`` of a ``(d_out, d_in)`` matrix to the column-major one.

    Called as ``check_commutation(P, d_out, d_in)``. Checked: ``P`` is a permutation matrix, it
    reorders the entries of random matrices as required, and it turns ``torch.kron(S, A)`` into
    ``torch.kron(A, S)``. Derived in notebook ``04_kfac_step_by_step``.
    """
    P, d_out, d_in = answer
    d_out, d_in = int(d_out), int(d_in)
    n = d_out * d_in
    P = torch.as_tensor(P, dtype=torch.float64)
    assert P.shape == (n, n), f"P must be ({n}, {n}) for a ({d_out}, {d_in}) weight, got {tuple(P.shape)}"
    ones = torch.ones(n, dtype=P.dtype)
    is_perm = (
        bool(((P == 0) | (P == 1)).all()) and torch.equal(P.sum(0), ones) and torch.equal(P.sum(1), ones)
    )
    assert is_perm, "P must be a permutation matrix (exactly one 1 in every row and column)"
    g = torch.Generator().manual_seed(1)
    W = torch.randn(d_out, d_in, generator=g, dtype=torch.float64)
    assert torch.allclose(P @ W.reshape(-1), W.T.reshape(-1)), (
        "P moves the entries of W.reshape(-1) to the wrong places (is it the inverse permutation?)"
    )
    A = torch.randn(d_in, d_in, generator=g, dtype=torch.float64)
    S = torch.randn(d_out, d_out, generator=g, dtype=torch.float64)
    assert torch.allclose(P @ torch.kron(S, A) @ P.T, torch.kron(A, S)), (
        "P kron(S, A) P^T should equal kron(A, S)"
    )


MODULE = "model.layers.1.mlp.down_proj"


def _llama_and_batch():
    """A tiny random LLaMA and a right-padded batch with prompt masks (seeded, the same everywhere)."""
    import transformers
    from transformers import LlamaConfig, LlamaForCausalLM

    transformers.logging.set_verbosity_error()
    with torch.random.fork_rng():
        torch.manual_seed(41)
        config = LlamaConfig(
            vocab_size=60,
            hidden_size=16,
            intermediate_size=24,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            max_position_embeddings=32,
        )
        model = LlamaForCausalLM(config).eval()
        lengths, prompts = [9, 6, 8], [4, 3, 5]
        ids = torch.randint(1, 60, (3, 9))
    mask = torch.zeros(3, 9, dtype=torch.long)
    labels = ids.clone()
    for i, (n, p) in enumerate(zip(lengths, prompts)):
        mask[i, :n] = 1
        ids[i, n:] = 0
        labels[i, :p] = -100  # the prompt is no target
        labels[i, n:] = -100  # nor is padding
    return model, {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _probe_kfac_hooks(fn) -> dict[str, Any]:
    model, batch = _llama_and_batch()
    before = {n: p.requires_grad for n, p in model.named_parameters()}
    out = fn(model, MODULE, {k: v.clone() for k, v in batch.items()})
    assert isinstance(out, (tuple, list)) and len(out) == 3, "return a tuple (A, S, n_tokens)"
    A, S, n = out
    mod = model.get_submodule(MODULE)
    hooks = len(mod._forward_hooks) + len(mod._forward_pre_hooks) + len(mod._backward_hooks)
    changed = sorted(n for n, p in model.named_parameters() if p.requires_grad != before[n])
    grads = sorted(n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0)
    return {
        "A": torch.as_tensor(A).detach().double(),
        "S": torch.as_tensor(S).detach().double(),
        "n": int(n),
        "hooks_left": hooks,
        "requires_grad_changed": changed,
        "grads_left": grads,
    }


@exercise(
    "ex-04-2",
    probe=_probe_kfac_hooks,
    forbidden=["collect_kfac", "accumulate_kfac", "capability_factors"],
    piece="the hooks",
)
def check_kfac_hooks(obs: dict[str, Any]) -> None:
    r"""Exercise 4.2: ``kfac_by_hooks(model, module_name, batch)``: a causal LM layer's factors, by hooks.

    On a tiny random ``LlamaForCausalLM`` and a right-padded batch whose prompt and padding carry
    the label ``-100``, ``(A, S, n_tokens)`` must equal :func:`crispedit_lite.kfac.collect_kfac` with
    the data's labels (``labels="true"``, ``approx="expand"``); the model must be left as it was (no
    hook, no accumulated gradient, the same ``requires_grad`` flags). Derived in notebook
    ``04_kfac_step_by_step``.
    """
    from crispedit_lite.kfac import collect_kfac

    model, batch = _llama_and_batch()
    ref = collect_kfac(model, [MODULE], [batch], labels="true", progress=False)[MODULE]
    A, S, n = obs["A"], obs["S"], obs["n"]
    A_ref, S_ref = ref.A.double(), ref.S.double()
    assert A.shape == A_ref.shape, (
        f"A is (d_in, d_in) = {tuple(A_ref.shape)} for this layer, got {tuple(A.shape)}"
    )
    assert S.shape == S_ref.shape, (
        f"S is (d_out, d_out) = {tuple(S_ref.shape)} for this layer, got {tuple(S.shape)}"
    )
    assert n == ref.n_tokens, (
        f"n_tokens counts the positions whose next token is a target: {n} is not that count (padding, the "
        "prompt and the last position predict no target)"
    )

    def rel(x, y):
        return float(torch.linalg.norm(x - y) / torch.linalg.norm(y))

    assert rel(A, A_ref) < 1e-4, (
        f"A is off by a relative {rel(A, A_ref):.2g}: average the outer products of the layer's inputs over "
        "exactly the positions that predict a target (after the shift by one)"
    )
    for factor, name in ((n * n, "a mean of the loss instead of its sum"), (n, "a sum instead of a mean")):
        if rel(S * factor, S_ref) < 1e-4 or rel(S / factor, S_ref) < 1e-4:
            raise AssertionError(
                f"S has the wrong scale: {name} (backpropagate the summed loss of the targets, "
                "then average the outer products over the positions)"
            )
    assert rel(S, S_ref) < 1e-4, (
        f"S is off by a relative {rel(S, S_ref):.2g}: the output gradients must come from the cross-entropy "
        "of the target tokens only, with the labels of the batch"
    )
    assert obs["hooks_left"] == 0, "remove your hooks when you are done (the handles' .remove())"
    assert not obs["requires_grad_changed"], (
        f"restore requires_grad of the parameters you froze: {obs['requires_grad_changed'][:3]}"
    )
    assert not obs["grads_left"], f"leave no gradient in the model's parameters: {obs['grads_left'][:3]}"


def _dense_output_block(a: Tensor, logits: Tensor) -> Tensor:
    """Independent reference: per example, J^T H J with the Jacobian of W -> W a from autograd."""
    a, logits = a.double(), logits.double()
    d_out, d_in = logits.shape[1], a.shape[1]
    G = torch.zeros(d_out * d_in, d_out * d_in, dtype=torch.float64)
    W = torch.zeros(d_out, d_in, dtype=torch.float64)
    for t in range(len(a)):
        J = torch.autograd.functional.jacobian(lambda w, t=t: w @ a[t], W).reshape(d_out, -1)
        p = torch.softmax(logits[t], -1)
        G += J.T @ (torch.diag(p) - torch.outer(p, p)) @ J
    return G / len(a)


def _block_cases() -> list[tuple[Tensor, Tensor]]:
    g = torch.Generator().manual_seed(4)
    return [
        (
            torch.randn(T, d_in, generator=g, dtype=torch.float64),
            2 * torch.randn(T, C, generator=g, dtype=torch.float64),
        )
        for T, d_in, C in ((7, 3, 4), (1, 2, 3), (12, 4, 2))
    ]


def _probe_exact_output_block(fn) -> dict[str, Any]:
    return {
        "blocks": [torch.as_tensor(fn(a.clone(), z.clone())).detach().double() for a, z in _block_cases()]
    }


@exercise(
    "ex-04-3",
    probe=_probe_exact_output_block,
    forbidden=["gauss_newton_matrix"],
    piece="the block from the inputs and the logits",
)
def check_exact_output_block(obs: dict[str, Any]) -> None:
    r"""Exercise 4.3: ``exact_output_block(a, logits)``: the exact Gauss-Newton block of an output layer.

    Compared with a dense :math:`\mathbf J^\top\mathbf H\mathbf J` built from autograd Jacobians of
    :math:`\mathbf W\mapsto\mathbf W\mathbf a_t`, on random inputs, in PyTorch's row-major order.
    Derived in notebook ``04_kfac_step_by_step``.
    """
    for (a, logits), got in zip(_block_cases(), obs["blocks"]):
        T, d_in = a.shape
        C = logits.shape[1]
        want = _dense_output_block(a, logits)
        n = C * d_in
        assert got.shape == (n, n), (
            f"the block of a ({C}, {d_in}) weight is ({n}, {n}), got {tuple(got.shape)}"
        )
        p = torch.softmax(logits, -1)
        S = (torch.diag_embed(p) - p[:, :, None] * p[:, None, :]).mean(0)
        kfac = torch.kron(S, a.T @ a / T)
        if T > 1 and torch.allclose(got, kfac, atol=1e-9) and not torch.allclose(want, kfac, atol=1e-9):
            raise AssertionError(
                "that is K-FAC's approximation (the Kronecker product of two means), not the exact block"
            )
        perm = torch.arange(n).reshape(C, d_in).T.reshape(-1)
        swapped = want[perm][:, perm]
        if torch.allclose(got, swapped, atol=1e-9) and not torch.allclose(want, swapped, atol=1e-9):
            raise AssertionError(
                "the entries are in column-major order; PyTorch's W.reshape(-1) is row-major"
            )
        if torch.allclose(got, T * want, atol=1e-9) and T > 1:
            raise AssertionError("off by a factor of T: the loss is a mean over the examples")
        assert torch.allclose(got, want, atol=1e-9), (
            f"wrong for T={T}, d_in={d_in}, C={C} (max deviation {float((got - want).abs().max()):.2g})"
        )
