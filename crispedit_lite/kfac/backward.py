r"""What K-FAC backpropagates: one loss term per position, and the label modes' output gradients.

:func:`_loss_terms` aligns predictions with targets (a causal LM predicts token :math:`r+1` at
position :math:`r`); :func:`_backward_vectors` yields the gradients w.r.t. the predictions of the
*summed* loss for ``labels`` = ``"true"`` (:math:`\mathbf p - \mathbf e_y`), ``"sampled"``
(:math:`\mathbf p - \mathbf e_{\hat y}`, :math:`\hat y\sim\mathbf p`) or ``"type2"`` (the columns
:math:`\sqrt{p_c}(\mathbf e_c - \mathbf p)` of the cross-entropy Hessian's square root; Kunstner et al.
2019). Used by :mod:`crispedit_lite.kfac.capture`, which K-FAC and EK-FAC share.

Derived in notebook ``04_kfac_step_by_step``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import torch
from torch import Tensor

__all__: list[str] = []

LabelMode = Literal["true", "sampled", "type2"]
Approx = Literal["expand", "reduce"]
LossName = Literal["cross_entropy", "mse"]


def _loss_terms(
    pred: Tensor, target: Tensor, causal: bool, loss: LossName, ignore_index: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Align predictions with targets; return (pred, target, valid) with one loss term per position.

    Targets move to the predictions' device (the last layer's, when layers span several devices).
    """
    target = target.to(pred.device)
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
