r"""Graders for the exercises of notebook ``06_crispedit_on_a_small_lm``.

6.1 compares the student's projected Adam step with ``torch.optim.Adam`` fed the projected
gradients (an independent implementation). 6.2 judges an edit of the embedded SmolLM2 by measuring
it: the judge loads the model itself, applies the student's weight change, scores the edits
teacher-forced, measures the KL to the base model on the chapter's held-out texts, and runs plain
fine-tuning with the same settings for the reference KL. Derived in notebook
``06_crispedit_on_a_small_lm``.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import torch
from torch import Tensor

from crispedit_lite.exercises.core import exercise

__all__ = ["check_projected_adam_step", "check_crispedit_loop", "LOOP"]


def _step_case():
    g = torch.Generator().manual_seed(61)
    d_out, d_in = 5, 4
    Q = torch.linalg.qr(torch.randn(d_out * d_in, d_out * d_in, generator=g, dtype=torch.float64))[0][:, :12]
    P = Q @ Q.T  # a projector of rank 12 on the 20 weights (row-major vec)
    W0 = torch.randn(d_out, d_in, generator=g, dtype=torch.float64)
    grads = [torch.randn(d_out, d_in, generator=g, dtype=torch.float64) * (1 + t) for t in range(6)]
    return P, W0, grads


def _probe_projected_adam_step(fn) -> dict[str, Any]:
    P, W0, grads = _step_case()

    def project(G: Tensor) -> Tensor:
        return (P @ G.reshape(-1)).reshape(G.shape)

    out = {}
    for name, lr, betas in (("default", 1e-2, (0.9, 0.999)), ("betas", 5e-2, (0.5, 0.9))):
        W, state, path = W0.clone(), {}, []
        for g in grads:
            ret = fn(W, g.clone(), project, state, lr=lr, betas=betas, eps=1e-8)
            path.append(torch.as_tensor(ret if ret is not None else W).detach().clone())
        out[name] = path
    return out


@exercise(
    "ex-06-1",
    probe=_probe_projected_adam_step,
    forbidden=["ProjectedAdam", "Adam", "AdamW", "optim"],
    piece="the Adam arithmetic",
)
def check_projected_adam_step(obs: dict[str, Any]) -> None:
    r"""Exercise 6.1: ``projected_adam_step(param, grad, project, state, lr, betas, eps)``: an optimiser step.

    Six steps on a ``5 x 4`` weight with a random rank-12 projector and two settings of the
    hyper-parameters must follow ``torch.optim.Adam`` run on the projected gradients (the official
    code's order: project the raw gradient, then a stock Adam step). Derived in notebook
    ``06_crispedit_on_a_small_lm``.
    """
    P, W0, grads = _step_case()

    def project(G: Tensor) -> Tensor:
        return (P @ G.reshape(-1)).reshape(G.shape)

    for name, lr, betas in (("default", 1e-2, (0.9, 0.999)), ("betas", 5e-2, (0.5, 0.9))):
        w = torch.nn.Parameter(W0.clone())
        opt = torch.optim.Adam([w], lr=lr, betas=betas, eps=1e-8)
        raw = torch.nn.Parameter(W0.clone())
        opt_raw = torch.optim.Adam([raw], lr=lr, betas=betas, eps=1e-8)
        for t, (g, got) in enumerate(zip(grads, obs[name])):
            w.grad, raw.grad = project(g), g.clone()
            opt.step()
            opt_raw.step()
            assert got.shape == W0.shape, f"the parameter must keep its shape {tuple(W0.shape)}"
            if torch.allclose(got, raw.detach(), atol=1e-10):
                raise AssertionError("the step ignores the projector: Adam must see the projected gradient")
            if t == 0 and torch.allclose(got, W0 + project(raw.detach() - W0), atol=1e-10):
                raise AssertionError(
                    "that projects Adam's update; CrispEdit projects the raw gradient before Adam sees it"
                )
            err = float((got - w.detach()).abs().max())
            assert err < 1e-9, (
                f"step {t + 1} (lr={lr}, betas={betas}) differs from Adam on the projected gradients by "
                f"{err:.2g}"
                + (
                    ": check the bias correction of both moments"
                    if t == 0
                    else ": check that the moments accumulate across calls in `state`"
                )
            )


#: The settings of exercise 6.2 (the statement gives them to the student).
LOOP = {
    "layer": 20,
    "n_edits": 4,
    "steps": 30,
    "lr": 1e-3,
    "gamma": 0.7,
    "kl_ratio": 0.5,
    "n_proxy": 8,
    "proxy_max_length": 128,
    "model": "smollm2-135m-instruct",
    "edit_set": "smollm2-counterfacts",
}


@lru_cache(maxsize=1)
def _smollm():
    from crispedit_lite.data import load_edits
    from crispedit_lite.evaluation import default_proxy_texts
    from crispedit_lite.evaluation.proxies import token_logprobs
    from crispedit_lite.models import load_model

    model, tok = load_model(LOOP["model"], dtype=torch.float32, device="cpu")
    requests = list(load_edits(LOOP["edit_set"]))[: LOOP["n_edits"]]
    proxy = default_proxy_texts(LOOP["n_proxy"], seed=0)
    base_lp = token_logprobs(model, tok, proxy, max_length=LOOP["proxy_max_length"])
    return model, tok, requests, proxy, base_lp


def _measure(delta: Tensor) -> tuple[list[float], float]:
    from crispedit_lite.evaluation import score_targets
    from crispedit_lite.evaluation.proxies import kl_to_base

    model, tok, requests, proxy, base_lp = _smollm()
    w = model.get_submodule(f"model.layers.{LOOP['layer']}.mlp.down_proj").weight
    w0 = w.detach().clone()
    try:
        with torch.no_grad():
            w.add_(delta.to(w.dtype))
        acc, _ = score_targets(model, tok, [r.prompt for r in requests], [r.target_new for r in requests])
        kl = kl_to_base(model, tok, proxy, base=base_lp, max_length=LOOP["proxy_max_length"])
    finally:
        with torch.no_grad():
            w.copy_(w0)
    return acc, kl


@lru_cache(maxsize=1)
def _ft_reference() -> float:
    """KL of plain fine-tuning of the same layer with the same steps and learning rate (Adam, FT-M)."""
    from crispedit_lite.data.batches import tokenize_edits

    model, tok, requests, _, _ = _smollm()
    w = model.get_submodule(f"model.layers.{LOOP['layer']}.mlp.down_proj").weight
    w0 = w.detach().clone()
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    batch = tokenize_edits(requests, tok)
    try:
        for p in model.parameters():
            p.requires_grad_(False)
        w.requires_grad_(True)
        opt = torch.optim.Adam([w], lr=LOOP["lr"])
        for _ in range(LOOP["steps"]):
            opt.zero_grad()
            out = model(**batch)
            out.loss.backward()
            opt.step()
        delta = w.detach() - w0
    finally:
        w.grad = None
        with torch.no_grad():
            w.copy_(w0)
        for n, p in model.named_parameters():
            p.requires_grad_(flags[n])
    return _measure(delta)[1]


@exercise("ex-06-2")
def check_crispedit_loop(delta) -> None:
    r"""Exercise 6.2: a minimal CrispEdit loop on the embedded SmolLM2, judged by measuring its edit.

    ``delta`` is the change of ``model.layers.20.mlp.down_proj.weight`` that the student's loop made
    (settings in :data:`LOOP`). The judge loads SmolLM2 itself, applies ``delta`` and requires every
    edit right under teacher forcing and a KL to the base model on the chapter's held-out texts at
    most ``LOOP["kl_ratio"]`` times that of plain fine-tuning with the same layer, steps and
    learning rate, which it runs itself. Derived in notebook ``06_crispedit_on_a_small_lm``.
    """
    model = _smollm()[0]
    w = model.get_submodule(f"model.layers.{LOOP['layer']}.mlp.down_proj").weight
    delta = torch.as_tensor(delta)
    assert tuple(delta.shape) == tuple(w.shape), (
        f"delta is the change of layer {LOOP['layer']}'s down_proj weight, shape {tuple(w.shape)}; got "
        f"{tuple(delta.shape)}"
    )
    assert torch.isfinite(delta).all() and float(delta.norm()) > 0, "the weight change is zero or not finite"
    acc, kl = _measure(delta)
    assert min(acc) == 1.0, (
        f"not every edit is right after your edit (teacher-forced token accuracy per edit: "
        f"{[round(a, 2) for a in acc]})"
    )
    kl_ft = _ft_reference()
    assert kl <= LOOP["kl_ratio"] * kl_ft, (
        f"KL to the base model {kl:.5f} is {kl / kl_ft:.2f} x plain fine-tuning's {kl_ft:.5f} (the target "
        "is at "
        f"most {LOOP['kl_ratio']} x): is every gradient projected before the Adam step?"
    )
