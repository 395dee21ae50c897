r"""Kronecker-factored curvature (K-FAC) of linear layers, collected with hooks.

For a linear layer :math:`\mathbf s = \mathbf W \mathbf a` (``W`` of shape ``(d_out, d_in)``) the
Gauss-Newton block of the mean capability loss :math:`\frac1T\sum_t \ell_t` is approximated by
(Martens & Grosse 2015; CrispEdit eq. 5)

.. math::

    \mathbf G \approx \mathbf A \otimes \mathbf S, \qquad
    \mathbf A = \frac1T \sum_t \mathbf a_t \mathbf a_t^\top, \qquad
    \mathbf S = \frac1T \sum_t \sum_c \mathbf g_{t,c} \mathbf g_{t,c}^\top,

where :math:`\mathbf g_{t,c}` is the gradient w.r.t. :math:`\mathbf s_t` of the *summed* loss
backpropagated from the label or Hessian-square-root column ``c``. With PyTorch's row-major
flattening of ``W`` the dense block is ``torch.kron(S, A)``; the paper's column-major ``vec`` writes
:math:`\mathbf A\otimes\mathbf S`.

``labels`` chooses the backpropagated vectors (Kunstner et al. 2019; curvlinops' names):

* ``"true"``: the data's labels (empirical Fisher), what the official CrispEdit code does;
* ``"sampled"``: one label drawn from the model's own predictive distribution (Monte-Carlo Fisher),
  an unbiased estimate of the Gauss-Newton matrix that the paper's equations describe;
* ``"type2"``: every column of the loss-Hessian square root, one backward pass per class (exact
  Gauss-Newton factor; only for small output spaces).

``approx`` handles weight sharing over tokens (Eschenhagen et al. 2023): ``"expand"`` treats every
valid token as an example (the language-model case); ``"reduce"`` first averages inputs and sums
output gradients over the valid tokens of each sequence, then treats sequences as examples. Its
factors therefore describe the per-sequence *summed* loss averaged over sequences, about :math:`R`
(tokens per sequence) times the scale of ``"expand"``; the energy rule ignores scale, but do not
:func:`merge_kfac` expand and reduce factors together.
Tokens whose label is ``ignore_index`` (prompt, padding) enter neither factor.

Derived in notebook ``04_kfac_step_by_step``; persisted with :mod:`crispedit_lite.kfac.io`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from crispedit_lite.kfac.factors import KFACFactors
from crispedit_lite.kfac.modules import _forward, _is_conv1d, resolve_modules

__all__ = ["collect_kfac", "resolve_modules"]

LabelMode = Literal["true", "sampled", "type2"]
Approx = Literal["expand", "reduce"]
LossName = Literal["cross_entropy", "mse"]


def _loss_terms(
    pred: Tensor, target: Tensor, causal: bool, loss: LossName, ignore_index: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Align predictions with targets; return (pred, target, valid) with one loss term per position."""
    if causal:
        # position r predicts token r + 1; the last position has no target
        target = torch.cat(
            [target[:, 1:], torch.full_like(target[:, :1], ignore_index)], dim=1
        )
    if loss == "cross_entropy":
        if pred.shape[:-1] != target.shape:
            raise ValueError(
                f"cross-entropy targets of shape {tuple(target.shape)} do not match predictions "
                f"{tuple(pred.shape)} (expected targets of shape {tuple(pred.shape[:-1])})"
            )
        valid = target != ignore_index
    else:
        if pred.shape != target.shape:
            raise ValueError(f"MSE targets {tuple(target.shape)} != predictions {tuple(pred.shape)}")
        valid = torch.ones(pred.shape[:-1], dtype=torch.bool, device=pred.device)
    return pred, target, valid


def _backward_vectors(
    pred: Tensor,
    target: Tensor,
    valid: Tensor,
    loss: LossName,
    labels: LabelMode,
    generator: torch.Generator,
    max_type2_classes: int,
) -> Iterable[Tensor]:
    """Yield the gradients w.r.t. ``pred`` to backpropagate, one per backward pass."""
    mask = valid.unsqueeze(-1).to(pred.dtype)
    p = pred.detach().to(torch.promote_types(pred.dtype, torch.float32))
    if loss == "cross_entropy":
        probs = torch.softmax(p, dim=-1)
        if labels == "type2":
            n_cls = pred.shape[-1]
            if n_cls > max_type2_classes:
                raise ValueError(
                    f"labels='type2' needs one backward pass per class ({n_cls}); "
                    f"raise max_type2_classes above {max_type2_classes} if you mean it"
                )
            sqrt_p = probs.sqrt()
            for c in range(n_cls):
                col = -sqrt_p[..., c : c + 1] * probs  # sqrt(p_c) (e_c - p)
                col[..., c] += sqrt_p[..., c]
                yield (col * mask).to(pred.dtype)
            return
        if labels == "true":
            y = torch.where(valid, target, torch.zeros_like(target))
        else:
            flat = probs.reshape(-1, probs.shape[-1]).cpu()
            y = torch.multinomial(flat, 1, generator=generator).reshape(target.shape)
            y = y.to(pred.device)
        onehot = torch.nn.functional.one_hot(y, pred.shape[-1]).to(p.dtype)
        yield ((probs - onehot) * mask).to(pred.dtype)  # d/dz of the summed CE
        return
    # MSE with loss term ||f - y||^2 per position: Hessian 2 I
    if labels == "type2":
        eye = torch.eye(pred.shape[-1], device=pred.device, dtype=p.dtype) * (2.0**0.5)
        for c in range(pred.shape[-1]):
            yield (eye[c].expand_as(p) * mask).to(pred.dtype)
        return
    if labels == "true":
        y = target.to(p.dtype)
    else:
        noise = torch.randn(p.shape, generator=generator, dtype=p.dtype).to(p.device)
        y = p + noise * (0.5**0.5)
    yield (2.0 * (p - y) * mask).to(pred.dtype)


def collect_kfac(
    model: nn.Module,
    module_names: Sequence[str],
    batches: Iterable[Any],
    *,
    labels: LabelMode = "true",
    approx: Approx = "expand",
    loss: LossName = "cross_entropy",
    ignore_index: int = -100,
    seed: int = 0,
    model_id: str | None = None,
    max_type2_classes: int = 1024,
    progress: bool = True,
    total: int | None = None,
) -> dict[str, KFACFactors]:
    r"""Collect K-FAC factors :math:`(\mathbf A, \mathbf S)` for several linear layers in one pass per batch.

    Args:
        model: the network; its parameters are frozen for the duration (restored afterwards), so the
            backward pass stops at the lowest hooked layer.
        module_names: names from ``model.named_modules()`` of ``nn.Linear`` (or HF ``Conv1D``) layers.
        batches: either mappings with ``input_ids`` (and optionally ``attention_mask``, ``labels``) for
            a causal LM, whose targets are shifted by one; or ``(inputs, targets)`` pairs whose
            predictions ``model(inputs)`` align with ``targets`` position by position.
        labels: ``"true"``, ``"sampled"`` or ``"type2"`` (see the module docstring).
        approx: ``"expand"`` or ``"reduce"``.
        loss: ``"cross_entropy"`` (targets are class ids) or ``"mse"`` (loss term
            :math:`\|f-y\|^2` per position).
        ignore_index: target value that excludes a token from both factors.
        seed: seeds the label sampler of ``labels="sampled"``.
        model_id: stored in the metadata (default: ``model.config._name_or_path`` if present).
        max_type2_classes: refuse ``type2`` above this many classes (one backward pass each).
        progress: show a tqdm bar over batches.
        total: length of ``batches`` for the progress bar, if it has no ``len``.

    Returns:
        ``{module_name: KFACFactors}``; factors are accumulated in fp32 under bf16/fp16/fp32 models
        (fp64 for fp64 models).

    Derived in notebook ``04_kfac_step_by_step``.
    """
    if labels not in ("true", "sampled", "type2"):
        raise ValueError(f"labels must be 'true', 'sampled' or 'type2', got {labels!r}")
    if approx not in ("expand", "reduce"):
        raise ValueError(f"approx must be 'expand' or 'reduce', got {approx!r}")
    if loss not in ("cross_entropy", "mse"):
        raise ValueError(f"loss must be 'cross_entropy' or 'mse', got {loss!r}")
    modules = resolve_modules(model, module_names)
    param = next(model.parameters())
    acc = torch.promote_types(param.dtype, torch.float32)  # fp32 under bf16/fp16, fp64 stays fp64
    generator = torch.Generator().manual_seed(seed)
    acc_a = {n: None for n in modules}
    acc_s = {n: None for n in modules}
    count = 0
    state: dict[str, Any] = {}

    def make_hooks(name: str):
        def fwd(mod: nn.Module, args: tuple, output: Tensor) -> Tensor:
            state[name] = {"a": args[0].detach(), "g": []}
            if not output.requires_grad:
                output.requires_grad_(True)
            # clone: when ``output`` is a leaf, autograd may reuse this buffer to accumulate .grad
            output.register_hook(lambda g: state[name]["g"].append(g.detach().clone()))
            return output

        return fwd

    was_training = model.training
    requires = {p: p.requires_grad for p in model.parameters()}
    handles = [m.register_forward_hook(make_hooks(n)) for n, m in modules.items()]
    try:
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        n_total = total if total is not None else (len(batches) if hasattr(batches, "__len__") else None)
        for batch in tqdm(batches, total=n_total, disable=not progress, desc="K-FAC"):
            state.clear()
            with torch.enable_grad():
                pred, target, causal = _forward(model, batch)
                pred, target, valid = _loss_terms(pred, target, causal, loss, ignore_index)
                if not valid.any():
                    continue
                vecs = list(_backward_vectors(pred, target, valid, loss, labels, generator,
                                              max_type2_classes))
                for i, v in enumerate(vecs):
                    pred.backward(v, retain_graph=i < len(vecs) - 1)
            for name in modules:
                a, gs = state[name]["a"], state[name]["g"]
                if a.shape[:-1] != valid.shape:
                    raise ValueError(
                        f"module {name!r} sees inputs of shape {tuple(a.shape)}, whose leading dims "
                        f"do not match the loss positions {tuple(valid.shape)}"
                    )
                a_rows, g_rows = _rows(a.to(acc), [g.to(acc) for g in gs], valid, approx)
                acc_a[name] = _add(acc_a[name], a_rows.T @ a_rows)
                acc_s[name] = _add(acc_s[name], sum(g.T @ g for g in g_rows))
            if approx == "expand" or valid.ndim < 2:
                count += int(valid.sum())
            else:
                count += int(valid.flatten(1).any(1).sum())
    finally:
        for h in handles:
            h.remove()
        for p, r in requires.items():
            p.requires_grad_(r)
        model.train(was_training)
    if count == 0:
        raise ValueError("collect_kfac saw no valid tokens: batches are empty or every label is ignored")
    if model_id is None:
        model_id = getattr(getattr(model, "config", None), "_name_or_path", None) or type(model).__name__
    out = {}
    for name, mod in modules.items():
        meta = {
            "model_id": str(model_id), "module": name, "labels": labels, "approx": approx,
            "loss": loss, "ignore_index": ignore_index, "seed": seed,
            "model_dtype": str(param.dtype).replace("torch.", ""), "transposed": _is_conv1d(mod),
        }
        out[name] = KFACFactors(A=(acc_a[name] / count).cpu(), S=(acc_s[name] / count).cpu(),
                                n_tokens=count, meta=meta)
    return out


def _add(acc: Tensor | None, x: Tensor) -> Tensor:
    return x if acc is None else acc + x


def _rows(a: Tensor, gs: list[Tensor], valid: Tensor, approx: Approx) -> tuple[Tensor, list[Tensor]]:
    """Per-term rows of inputs and output gradients after masking (expand) or reduction (reduce)."""
    if approx == "expand" or valid.ndim < 2:
        return a[valid], [g[valid] for g in gs]
    m = valid.flatten(1).float()  # (N, R)
    keep = m.sum(1) > 0
    a2, m = a.flatten(1, -2)[keep], m[keep]
    a_bar = (a2 * m.unsqueeze(-1)).sum(1) / m.sum(1, keepdim=True)
    g_hat = [(g.flatten(1, -2)[keep] * m.unsqueeze(-1)).sum(1) for g in gs]
    return a_bar, g_hat
