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

The layers' inputs and output gradients are recorded by :class:`~crispedit_lite.kfac.capture.LayerCapture`
(shared with EK-FAC). Derived in notebook ``04_kfac_step_by_step``; persisted with
:mod:`crispedit_lite.kfac.io`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from crispedit_lite.kfac.backward import Approx, LabelMode, LossName
from crispedit_lite.kfac.capture import Captured, LayerCapture
from crispedit_lite.kfac.checkpoint import KFACSums
from crispedit_lite.kfac.factors import KFACFactors
from crispedit_lite.kfac.modules import _is_conv1d, resolve_modules

__all__ = ["accumulate_kfac", "collect_kfac", "resolve_modules"]


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
            backward pass stops at the lowest hooked layer. Its layers may live on several devices
            (``device_map``): each layer's sums are accumulated on its own device.
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
        ``{module_name: KFACFactors}`` on the CPU; factors are accumulated in fp32 under
        bf16/fp16/fp32 models (fp64 for fp64 models). :func:`accumulate_kfac` returns the sums.

    Derived in notebook ``04_kfac_step_by_step``.
    """
    return accumulate_kfac(model, module_names, batches, labels=labels, approx=approx, loss=loss,
                           ignore_index=ignore_index, seed=seed, model_id=model_id,
                           max_type2_classes=max_type2_classes, progress=progress,
                           total=total).to_factors()


def accumulate_kfac(
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
    resume: KFACSums | None = None,
    on_batch: Callable[[KFACSums], None] | None = None,
) -> KFACSums:
    r"""The running sums behind :func:`collect_kfac` (same arguments), resumable batch by batch.

    Args:
        resume: sums of an earlier, interrupted run over the same ``batches``: its first
            ``resume.batches`` batches are skipped, the sums continue from the saved ones and the
            label sampler from its saved state, so the result is bit-identical to one pass.
        on_batch: called with the live :class:`KFACSums` after every batch (e.g. to checkpoint).

    Returns:
        :class:`KFACSums` (:meth:`KFACSums.to_factors` divides by the term count).

    Listed on the book page ``api``.
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
    if model_id is None:
        model_id = getattr(getattr(model, "config", None), "_name_or_path", None) or type(model).__name__
    meta = {name: {"model_id": str(model_id), "module": name, "labels": labels, "approx": approx,
                   "loss": loss, "ignore_index": ignore_index, "seed": seed,
                   "model_dtype": str(param.dtype).replace("torch.", ""),
                   "transposed": _is_conv1d(mod)} for name, mod in modules.items()}
    sums = KFACSums(A={}, S={}, meta=meta)
    for name, mod in modules.items():
        (d_in, d_out), dev = _dims(mod), mod.weight.device
        dev = dev if dev.type != "meta" else torch.device("cpu")  # offloaded: moved on first use
        old_a = resume.A.get(name) if resume is not None else None
        old_s = resume.S.get(name) if resume is not None else None
        if old_a is not None and (old_a.shape != (d_in, d_in) or old_s.shape != (d_out, d_out)):
            raise ValueError(f"resume: module {name!r} has sums of shapes {tuple(old_a.shape)}, "
                             f"{tuple(old_s.shape)}; the layer needs ({d_in}, {d_in}), ({d_out}, {d_out})")
        sums.A[name] = (old_a.to(dev, acc) if old_a is not None
                        else torch.zeros(d_in, d_in, dtype=acc, device=dev))
        sums.S[name] = (old_s.to(dev, acc) if old_s is not None
                        else torch.zeros(d_out, d_out, dtype=acc, device=dev))
    if resume is not None:
        sums.count, sums.batches = int(resume.count), int(resume.batches)
        if resume.rng is not None:
            generator.set_state(resume.rng.clone())
    skip = sums.batches
    capture = LayerCapture(model, modules, loss=loss, labels=labels, ignore_index=ignore_index,
                           generator=generator, max_type2_classes=max_type2_classes)
    with capture:
        n_total = total if total is not None else (len(batches) if hasattr(batches, "__len__") else None)
        for i, batch in enumerate(tqdm(batches, total=n_total, disable=not progress, desc="K-FAC")):
            if i < skip:
                continue  # done before the checkpoint
            seen, valid = capture.run(batch)
            if valid.any():
                _accumulate(sums, seen, valid, approx, acc)
            sums.batches += 1
            if on_batch is not None:
                sums.rng = generator.get_state()
                on_batch(sums)
    sums.rng = generator.get_state()
    return sums


def _dims(mod: nn.Module) -> tuple[int, int]:
    """``(d_in, d_out)`` of a linear layer (Conv1D stores its weight as ``(d_in, d_out)``)."""
    return (mod.weight.shape[0], mod.nf) if _is_conv1d(mod) else (mod.in_features, mod.out_features)


def _accumulate(sums: KFACSums, seen: dict[str, Captured], valid: Tensor, approx: Approx,
                acc: torch.dtype) -> None:
    """Add one batch's terms to the sums, each on its module's device."""
    for name in sums.A:
        a, gs = seen[name].a, seen[name].g
        if a.shape[:-1] != valid.shape:
            raise ValueError(
                f"module {name!r} sees inputs of shape {tuple(a.shape)}, whose leading dims "
                f"do not match the loss positions {tuple(valid.shape)}"
            )
        a_rows, g_rows = _rows(a.to(acc), [g.to(acc) for g in gs], valid.to(a.device), approx)
        sums.A[name] = _add(sums.A[name], a_rows.T @ a_rows)
        sums.S[name] = _add(sums.S[name], sum(g.T @ g for g in g_rows))
    if approx == "expand" or valid.ndim < 2:
        sums.count += int(valid.sum())
    else:
        sums.count += int(valid.flatten(1).any(1).sum())


def _add(acc: Tensor, x: Tensor) -> Tensor:
    return acc.to(x.device) + x  # a no-op move unless the sums were made elsewhere


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
