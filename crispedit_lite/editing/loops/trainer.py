r"""The FT-M training loop shared by every editing method.

FT-M (fine-tuning with masked prompts, Zhang et al. 2024; CrispEdit §5) minimises the
cross-entropy of the *target* tokens given ``prompt + " " + target``:

.. math::

    \mathcal L_{\rm edit}(\theta) = \frac{1}{|\mathcal T|}\sum_{(i,t)\in\mathcal T}
    -\log p_\theta(y_{i,t}\mid y_{i,<t}),

where :math:`\mathcal T` are the target positions of the batch (prompt and padding labels are
``-100``). The loop follows the paper and the official code: every epoch reshuffles the edits and
walks minibatches; a minibatch whose loss is already below ``early_stop`` is skipped (no step), and
training stops once an epoch's mean loss is below it. Only parameters with ``requires_grad`` are
trained, so the backward pass stops at the lowest edited layer.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

__all__ = ["TrainLog", "ft_m_loss", "train_edits"]


@dataclass
class TrainLog:
    """What one training run did: mean loss per epoch, optimizer steps, skipped batches, time.

    Listed on the book page ``api``.
    """

    epoch_losses: list[float] = field(default_factory=list)
    steps: int = 0
    skipped: int = 0
    stopped_early: bool = False
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"epoch_losses": [round(x, 6) for x in self.epoch_losses], "steps": self.steps,
                "skipped": self.skipped, "stopped_early": self.stopped_early,
                "seconds": round(self.seconds, 3)}


def ft_m_loss(model: nn.Module, batch: dict[str, Tensor], per_sample: bool = False) -> Tensor:
    """Mean cross-entropy of the target tokens (labels ``!= -100``) of a causal-LM batch.

    ``per_sample=True`` averages within each sequence first, then over sequences (LocBF-FT's loss).

    Listed on the book page ``api``.
    """
    for key in ("input_ids", "attention_mask", "labels"):
        if key not in batch:
            raise ValueError(f"edit batch lacks {key!r}; got keys {sorted(batch)}")
    device = next(model.parameters()).device
    ids = batch["input_ids"].to(device)
    logits = model(input_ids=ids, attention_mask=batch["attention_mask"].to(device)).logits
    labels = batch["labels"].to(logits.device)[:, 1:]  # the last layer's device under a device_map
    logits = logits[:, :-1].float()
    tok = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                          ignore_index=-100, reduction="none").view_as(labels)
    valid = (labels != -100).float()
    if valid.sum() == 0:
        raise ValueError("edit batch has no target tokens (every label is -100)")
    if per_sample:
        per = (tok * valid).sum(1) / valid.sum(1).clamp_min(1)
        return per[valid.sum(1) > 0].mean()
    return (tok * valid).sum() / valid.sum()


def train_edits(
    model: nn.Module,
    requests: Sequence[Any],
    collate: Callable[[Sequence[Any]], dict[str, Tensor]],
    optimizer: torch.optim.Optimizer,
    *,
    epochs: int = 25,
    batch_size: int = 32,
    early_stop: float = 0.01,
    seed: int = 0,
    reshuffle: bool = True,
    per_sample: bool = False,
    progress: bool = True,
    desc: str = "edit",
    loss_fn: Callable[[nn.Module, dict[str, Tensor]], Tensor] | None = None,
    train_mode: bool = False,
) -> TrainLog:
    """Run the FT-M loop over ``requests`` with ``optimizer`` (projected or not).

    Args:
        model: the model, trainable parameters already selected (``requires_grad``).
        requests: edit requests; ``collate`` turns a list of them into a batch dict.
        optimizer: e.g. :class:`crispedit_lite.optim.ProjectedAdam`.
        epochs, batch_size, early_stop: paper defaults 25, 32, 0.01.
        seed: seeds the reshuffling.
        reshuffle: reshuffle every epoch (the official code's batch loop does; its sequential
            loop does not).
        per_sample: LocBF-FT's per-sequence mean loss.
        progress: a tqdm bar over epochs.
        loss_fn: ``loss_fn(model, batch)`` in place of :func:`ft_m_loss` (e.g. the official LoRA
            run's ``outputs.loss``, which includes AdaLoRA's orthogonal regulariser); the skip and
            stop tests see this loss.
        train_mode: keep the model in train mode (dropout active), as the official LoRA run does;
            by default the model is in eval mode, so the edit loss is deterministic.

    Listed on the book page ``api``.
    """
    if len(requests) == 0:
        raise ValueError("no edit requests to train on")
    log = TrainLog()
    gen = torch.Generator().manual_seed(seed)
    order = list(range(len(requests)))
    was_training = model.training
    model.train(train_mode)  # default eval: no dropout, a deterministic edit loss (official code)
    start = time.perf_counter()
    bar = tqdm(range(epochs), disable=not progress, desc=desc)
    try:
        for _ in bar:
            if reshuffle:
                order = torch.randperm(len(requests), generator=gen).tolist()
            losses = []
            for b in range(0, len(order), batch_size):
                batch = collate([requests[i] for i in order[b:b + batch_size]])
                with torch.enable_grad():
                    loss = (ft_m_loss(model, batch, per_sample=per_sample) if loss_fn is None
                            else loss_fn(model, batch))
                    losses.append(float(loss.detach()))
                    if losses[-1] < early_stop:
                        log.skipped += 1
                        continue
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                optimizer.step()
                log.steps += 1
            log.epoch_losses.append(sum(losses) / len(losses))
            bar.set_postfix(loss=f"{log.epoch_losses[-1]:.4f}")
            if log.epoch_losses[-1] < early_stop:
                log.stopped_early = True
                break
    finally:
        optimizer.zero_grad(set_to_none=True)
        model.train(was_training)
    log.seconds = time.perf_counter() - start
    return log
