r"""Faster, mathematically equivalent ways to apply the CrispEdit projection, and an eigenbasis variant.

The reference is :meth:`crispedit_lite.projector.KroneckerProjector.project`,

.. math::

    \mathbf P(\mathbf G) = \mathbf U_{\rm out}\big((\mathbf U_{\rm out}^\top\mathbf G
    \mathbf U_{\rm in})\odot\mathbf M\big)\mathbf U_{\rm in}^\top ,

four dense products, :math:`4 d_{\rm out} d_{\rm in}(d_{\rm out}+d_{\rm in})` FLOPs (4.3 TFLOP for a
LLaMA-3-8B ``down_proj``, every optimiser step). This module computes the same matrix more cheaply:

(a) **Low-rank gradient form** (:func:`lowrank_project`). A batch's weight gradient is
    :math:`\mathbf G=\sum_t \mathbf g_t\mathbf a_t^\top=\mathbf G_{\rm out}^\top\mathbf A_{\rm in}` over
    its :math:`T` tokens, so the core is
    :math:`\mathbf U_{\rm out}^\top\mathbf G\mathbf U_{\rm in}=(\mathbf G_{\rm out}\mathbf U_{\rm out})^\top
    (\mathbf A_{\rm in}\mathbf U_{\rm in})`, :math:`2T(d_{\rm out}^2+d_{\rm in}^2+d_{\rm out}d_{\rm in})`
    FLOPs instead of :math:`2d_{\rm out}d_{\rm in}(d_{\rm out}+d_{\rm in})`.
    :class:`TokenFactorCapture` records the per-token factors with hooks during training.
(b) **Corner / staircase trick** (:func:`corner_project`, :class:`FastProjector`). With both eigenbases
    sorted by decreasing eigenvalue, the *protected* entries (mask 0) form a staircase in the leading
    :math:`r_{\rm out}\times r_{\rm in}` corner (proof in :func:`staircase`), and since
    :math:`\mathbf U\mathbf U^\top=\mathbf I`,

    .. math::

        \mathbf P(\mathbf G)=\mathbf G-\mathbf U_{\rm out}^{(r)}\big((\mathbf U_{\rm out}^{(r)\top}
        \mathbf G\mathbf U_{\rm in}^{(r)})\odot(1-\mathbf M)_{:r_{\rm out},:r_{\rm in}}\big)
        \mathbf U_{\rm in}^{(r)\top},

    :math:`O(d_{\rm out}d_{\rm in}\min(r_{\rm out},r_{\rm in}))` FLOPs. :func:`plan_blocks` goes further
    and covers the staircase with a few disjoint rectangles (chosen by dynamic programming), which is far
    cheaper than the bounding corner for L-shaped staircases (one massive activation direction).
    Combined with (a), the corner's core also comes from the token factors.
(c) **Eigenbasis state** (:class:`EigenbasisProjectedAdam`, :class:`EigenbasisLinear`), a *variant, not
    the paper's method*: Adam runs on the rotated, masked coordinates
    :math:`\mathbf C=(\mathbf U_{\rm out}^\top\mathbf G\mathbf U_{\rm in})\odot\mathbf M`, so the update
    :math:`\mathbf U_{\rm out}(\hat{\mathbf m}/(\sqrt{\hat{\mathbf v}}+\epsilon)\odot\mathbf M)
    \mathbf U_{\rm in}^\top` lies *exactly* in the editable subspace (the paper's Adam-after-projection
    leaks out of it). :class:`EigenbasisLinear` reparameterises a layer as
    :math:`\mathbf W_0+\mathbf U_{\rm out}(\mathbf X\odot\mathbf M)\mathbf U_{\rm in}^\top` and trains
    :math:`\mathbf X` with a stock optimiser: the rotations then act on the :math:`T` activations
    (:math:`O(T(d_{\rm in}^2+d_{\rm out}^2))`) and no per-step projection is left. With SGD this is
    exactly projected gradient descent; with Adam it equals :class:`EigenbasisProjectedAdam`.

:func:`projection_flops` counts the matrix-product FLOPs of each form and :func:`choose_projection`
picks the cheapest. Every form is tested against the reference in ``tests/test_fastproject_*.py``
(``tests/fastproject/test_edits.py``: the same FT-M edits of a toy Llama with the paper's optimiser, the
fast forms and the eigenbasis variant); ``benchmarks/scale.py`` times them at LLaMA-3-8B and
Qwen-2.5-1.5B shapes (``book/performance.md``). The reference projection is derived in notebook
``05_matrix_free_projector``.

Modules, one concept each: :mod:`~crispedit_lite.fastproject.flops` (the FLOP model, :class:`Block`, chooser),
:mod:`~crispedit_lite.fastproject.blocks` (staircase, block plan),
:mod:`~crispedit_lite.fastproject.lowrank` (form (a), token-factor capture),
:mod:`~crispedit_lite.fastproject.fast_projector` (:class:`FastProjector`, corner form),
:mod:`~crispedit_lite.fastproject.eigenbasis` (variant (c)).
"""


from crispedit_lite.fastproject.blocks import plan_blocks, staircase
from crispedit_lite.fastproject.eigenbasis import (
    EigenbasisLinear,
    EigenbasisProjectedAdam,
    attach_eigenbasis,
    merge_eigenbasis,
)
from crispedit_lite.fastproject.fast_projector import FastProjector, corner_project
from crispedit_lite.fastproject.flops import (
    BLOCK_OVERHEAD_FLOPS,
    Block,
    block_flops,
    choose_projection,
    projection_flops,
    reference_flops,
)
from crispedit_lite.fastproject.lowrank import TokenFactorCapture, lowrank_core, lowrank_project

__all__ = [
    "BLOCK_OVERHEAD_FLOPS",
    "Block",
    "block_flops",
    "projection_flops",
    "reference_flops",
    "choose_projection",
    "staircase",
    "plan_blocks",
    "lowrank_core",
    "lowrank_project",
    "corner_project",
    "FastProjector",
    "TokenFactorCapture",
    "EigenbasisProjectedAdam",
    "EigenbasisLinear",
    "attach_eigenbasis",
    "merge_eigenbasis",
]
