r"""What a linear layer sees in one forward and backward pass: its inputs and its output gradients.

K-FAC, EK-FAC and the low-rank projection all need, for each hooked layer
:math:`\mathbf s = \mathbf W\mathbf a`, the inputs :math:`\mathbf a_t` of the forward pass and the
gradients :math:`\mathbf g_t = \partial\ell/\partial\mathbf s_t` of the backward pass (Martens &
Grosse 2015; CrispEdit eq. 5). :func:`hook_inputs_and_output_grads` is the one pair of hooks that
records them: a forward hook keeps the detached input and puts a tensor hook on the output, which
receives the gradient. :class:`LayerCapture` runs the curvature pass of
:func:`~crispedit_lite.kfac.collect_kfac` and :func:`~crispedit_lite.ekfac.collect_ekfac` with it:
model in eval mode, parameters frozen (so the backward stops at the lowest hooked layer), one
backward pass per vector of the label mode, and returns what each layer saw.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from crispedit_lite.kfac.backward import LabelMode, LossName, _backward_vectors, _loss_terms
from crispedit_lite.kfac.modules import _forward

__all__ = ["Captured", "LayerCapture", "hook_inputs_and_output_grads"]


def hook_inputs_and_output_grads(
    modules: Mapping[str, nn.Module],
    on_grad: Callable[[str, Tensor, Tensor], None],
    *,
    on_input: Callable[[str, Tensor], None] | None = None,
    force_grad: bool = False,
) -> list[RemovableHandle]:
    """Hook each module so that every backward through its output calls ``on_grad(name, a, g)``.

    ``a`` is the module's (detached) input of that forward, ``g`` the gradient of its output.
    ``on_input(name, a)`` is called at the forward. An output that needs no gradient (all parameters
    below it frozen) is skipped, or, with ``force_grad``, made to need one, so that the gradient still
    reaches it; the gradient is then cloned, since autograd may reuse the buffer of a leaf output to
    accumulate its ``.grad``. Returns the handles (``handle.remove()`` takes the hooks off).

    Listed on the book page ``api``.
    """

    def make(name: str):
        def fwd(mod: nn.Module, args: tuple, output: Any) -> None:
            if not isinstance(output, Tensor):
                return
            if not output.requires_grad:
                if not force_grad:
                    return
                output.requires_grad_(True)
            a = args[0].detach()
            if on_input is not None:
                on_input(name, a)
            if force_grad:
                output.register_hook(lambda g: on_grad(name, a, g.detach().clone()))
            else:
                output.register_hook(lambda g: on_grad(name, a, g.detach()))

        return fwd

    return [m.register_forward_hook(make(n)) for n, m in modules.items()]


@dataclass
class Captured:
    """One layer's view of one batch: its input ``a`` and one output gradient per backward vector.

    Listed on the book page ``api``.
    """

    a: Tensor
    g: list[Tensor] = field(default_factory=list)


class LayerCapture:
    """Run batches forward and backward as the curvature pass does; return what each layer saw.

    A context manager: entering puts the model in eval mode, freezes its parameters and hooks the
    modules; leaving restores all three. :meth:`run` returns ``(captured, valid)``: ``{name:
    Captured}`` and the mask of positions with a loss term; when no position is valid nothing is
    backpropagated (and the label sampler is not advanced).

    Args:
        model: the network. modules: ``{name: module}`` to hook (see
            :func:`~crispedit_lite.kfac.resolve_modules`).
        loss, labels, ignore_index, max_type2_classes: as :func:`~crispedit_lite.kfac.collect_kfac`.
        generator: the label sampler of ``labels="sampled"``.

    Listed on the book page ``api``.
    """

    def __init__(self, model: nn.Module, modules: Mapping[str, nn.Module], *, loss: LossName,
                 labels: LabelMode, ignore_index: int, generator: torch.Generator,
                 max_type2_classes: int) -> None:
        self.model, self.modules = model, dict(modules)
        self.loss, self.labels, self.ignore_index = loss, labels, ignore_index
        self.generator, self.max_type2_classes = generator, max_type2_classes
        self._seen: dict[str, Captured] = {}
        self._handles: list[RemovableHandle] = []
        self._restore: tuple[bool, dict[nn.Parameter, bool]] | None = None

    def _on_input(self, name: str, a: Tensor) -> None:
        self._seen[name] = Captured(a)

    def _on_grad(self, name: str, a: Tensor, g: Tensor) -> None:
        self._seen[name].g.append(g)

    def __enter__(self) -> LayerCapture:
        self._restore = (self.model.training, {p: p.requires_grad for p in self.model.parameters()})
        self._handles = hook_inputs_and_output_grads(self.modules, self._on_grad, on_input=self._on_input,
                                                     force_grad=True)
        self.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        if self._restore is not None:
            was_training, requires = self._restore
            for p, r in requires.items():
                p.requires_grad_(r)
            self.model.train(was_training)
            self._restore = None

    def run(self, batch: Any) -> tuple[dict[str, Captured], Tensor]:
        """Forward ``batch``, backpropagate the label mode's vectors; ``(captured, valid)``."""
        if self._restore is None:
            raise RuntimeError("LayerCapture.run needs the capture entered: use `with LayerCapture(...)`")
        self._seen = {}
        with torch.enable_grad():
            pred, target, causal = _forward(self.model, batch)
            pred, target, valid = _loss_terms(pred, target, causal, self.loss, self.ignore_index)
            if valid.any():
                vecs = list(_backward_vectors(pred, target, valid, self.loss, self.labels, self.generator,
                                              self.max_type2_classes))
                for j, v in enumerate(vecs):
                    pred.backward(v, retain_graph=j < len(vecs) - 1)
        seen, self._seen = self._seen, {}
        return seen, valid
