r"""crispedit_lite.fastproject on edits: fast forms and the eigenbasis variant against the paper's optimiser.

Keep CrispEdit's update rule (:class:`~crispedit_lite.optim.ProjectedAdam` with the
:class:`~crispedit_lite.projector.KroneckerProjector` of capability K-FAC factors) as the reference, and
show on a toy LM that a faster variant edits as well. One FT-M run
(:func:`~crispedit_lite.editing.loops.trainer.train_edits`) on a randomly initialised tiny Llama (float64),
the ``down_proj`` of two layers edited, three optimisers:

(a) the paper's: ``ProjectedAdam`` + ``KroneckerProjector`` (four dense products per step);
(b) ``ProjectedAdam`` + :class:`~crispedit_lite.fastproject.FastProjector` fed per-token factors by a
    :class:`~crispedit_lite.fastproject.TokenFactorCapture` (low-rank / staircase-block forms): a
    rewrite of the same matrix, so the same iterates as (a) after every step, up to rounding;
(c) the eigenbasis variant, :class:`~crispedit_lite.fastproject.EigenbasisProjectedAdam` (Adam in the
    rotated, masked coordinates; a different optimiser, not the paper's): a different trajectory, so
    only its outcome is compared. Its update stays exactly in the editable subspace, while (a)'s
    Adam-after-projection leaks out of it. The re-parameterised form (``attach_eigenbasis`` + stock
    Adam, the 1.12x-of-plain-FT step of ``book/performance.md``) gives the same weights as (c).

The model is initialised with ``initializer_range=0.2`` instead of the preset's 0.02: at 0.02 the random
``lm_head`` rows are so short that no ``down_proj`` edit moves a logit by more than about 0.6, and the
edit loss is stuck near :math:`\log 512` (it falls only from 6.26 to 5.63, unprojected FT included), too
little to compare optimisers on. At 0.2 the same 24 steps take it from 7.0 to about 1.3.
"""

from __future__ import annotations

import copy

import pytest
import torch

from crispedit_lite.data import EditRequest
from crispedit_lite.data.batches import tokenize_capability, tokenize_edits
from crispedit_lite.editing.loops.trainer import ft_m_loss, train_edits
from crispedit_lite.fastproject import (
    EigenbasisProjectedAdam,
    FastProjector,
    TokenFactorCapture,
    attach_eigenbasis,
    merge_eigenbasis,
)
from crispedit_lite.kfac import collect_kfac
from crispedit_lite.models import random_init_model
from crispedit_lite.optim import ProjectedAdam
from crispedit_lite.projector import KroneckerProjector
from tests.helpers import CAP_TEXT, tiny_tokenizer

F64 = torch.float64
LAYERS = (1, 2)
NAMES = [f"model.layers.{i}.mlp.down_proj" for i in LAYERS]
GAMMA, LR, EPOCHS, BATCH, INIT = 0.7, 3e-2, 8, 2, 0.2
REQUESTS = [
    EditRequest("the capital of france is", "rome"),
    EditRequest("the river of germany is", "blue"),
    EditRequest("a big dog is", "green"),
    EditRequest("the small cat lies in the", "tree"),
    EditRequest("the city of berlin is", "red"),
    EditRequest("the house on the river is", "small"),
]
CAP_TEXTS = [CAP_TEXT, "the dog runs and the cat runs in the big city on the river",
             "a red tree and a blue house lie in the green city of paris"]
STEPS = EPOCHS * len(REQUESTS) // BATCH


@pytest.fixture(scope="module")
def setup():
    """The tiny model, tokenizer and each edited layer's reference projector from capability K-FAC."""
    tok = tiny_tokenizer()
    model = random_init_model("tiny-llama", dtype=F64, seed=0, initializer_range=INIT)
    batches = tokenize_capability(CAP_TEXTS, tok, max_length=64)
    factors = collect_kfac(model, NAMES, batches, progress=False)
    projectors = {n: KroneckerProjector.from_kfac(factors[n], GAMMA, dtype=F64) for n in NAMES}
    return model, tok, projectors


class _Recorder:
    """Wraps an optimiser for ``train_edits`` and keeps the edited weights after every step.

    (Not ``register_step_post_hook``: once any ``torch.optim.Adam`` exists, its patched ``step`` fires
    the hooks again inside ``ProjectedAdam.step``'s ``super().step()``, twice per step.)
    """

    def __init__(self, opt, weights):
        self.opt, self.weights, self.trace = opt, weights, []

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.opt.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        self.opt.step()
        self.trace.append({n: w().detach().clone() for n, w in self.weights.items()})


def _edit_loss(model, tok) -> float:
    with torch.no_grad():
        return float(ft_m_loss(model, tokenize_edits(REQUESTS, tok)))


def _run(setup, make_optimizer):
    """FT-M on REQUESTS, training only the edited ``down_proj`` weights; (weights per step, final loss)."""
    base, tok, projectors = setup
    model = copy.deepcopy(base)
    for p in model.parameters():
        p.requires_grad_(False)
    mods = {n: model.get_submodule(n) for n in NAMES}
    opt, capture, weights = make_optimizer(model, mods, projectors)
    rec = _Recorder(opt, weights)
    try:
        log = train_edits(model, REQUESTS, lambda rs: tokenize_edits(rs, tok), rec, epochs=EPOCHS,
                          batch_size=BATCH, early_stop=0.0, progress=False)
    finally:
        if capture is not None:
            capture.remove()
    assert log.steps == len(rec.trace) == STEPS
    merge_eigenbasis(model)  # the re-parameterised run's loss is then that of the merged plain model
    return rec.trace, _edit_loss(model, tok)


def _weights(mods):
    params = {n: m.weight.requires_grad_(True) for n, m in mods.items()}
    return params, {n: (lambda p=p: p) for n, p in params.items()}


def _paper(model, mods, projectors):
    params, weights = _weights(mods)
    opt = ProjectedAdam(params.values(), {params[n]: projectors[n] for n in NAMES}, lr=LR)
    return opt, None, weights


def _fast(method):
    def make(model, mods, projectors):
        params, weights = _weights(mods)
        cap = TokenFactorCapture(mods)
        fast = {params[n]: FastProjector.from_projector(projectors[n], method=method, capture=cap,
                                                        name=n) for n in NAMES}
        return ProjectedAdam(params.values(), fast, lr=LR), cap, weights
    return make


def _eigenbasis(model, mods, projectors):
    params, weights = _weights(mods)
    opt = EigenbasisProjectedAdam(params.values(), {params[n]: projectors[n] for n in NAMES}, lr=LR)
    return opt, None, weights


def _reparam(model, mods, projectors):
    new = attach_eigenbasis(model, {n: projectors[n] for n in NAMES})
    weights = {n: (lambda m=m: m.merged_weight()) for n, m in new.items()}
    return torch.optim.Adam([m.delta for m in new.values()], lr=LR), None, weights


def _rel(a, b):
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


@pytest.fixture(scope="module")
def paper(setup):
    return _run(setup, _paper)


@pytest.fixture(scope="module")
def w0(setup):
    return {n: setup[0].get_submodule(n).weight.detach() for n in NAMES}


@pytest.mark.parametrize("method", ["auto", "blocks", "lowrank"])
def test_fast_projector_gives_the_papers_iterates(setup, paper, w0, method):
    """(b) == (a) after every one of the 24 steps, on the update W_t - W_0 (float64 rounding only)."""
    ref_trace, ref_loss = paper
    trace, loss = _run(setup, _fast(method))
    for step, (got, ref) in enumerate(zip(trace, ref_trace, strict=True)):
        for n in NAMES:
            err = _rel(got[n] - w0[n], ref[n] - w0[n])
            assert err < 1e-10, (method, step, n, err)
    assert abs(loss - ref_loss) < 1e-10 * ref_loss


def test_eigenbasis_variant_edits_as_well_and_stays_in_the_subspace(setup, paper, w0):
    """(c) gets >= 90% of (a)'s loss reduction, its update is exactly editable, (a)'s is not.

    Why 90%: (a) and (c) share the data order, learning rate, step count and (up to (a)'s leak) the
    editable subspace; they differ only in the basis in which Adam normalises each coordinate, which
    changes the path, not how far 24 steps get. Here (c) reaches 1.33 vs (a)'s 1.35 from 7.0 (ratio of
    the reductions 1.00); over the learning rates 0.01-0.1, init scales 0.02-0.2 and 8-16 epochs we tried
    it lay in 0.88-1.08 (the low end at init 0.02, where the loss barely moves). 10% slack still fails a
    variant that trains markedly worse, let alone one that does not train (ratio 0).
    """
    base, tok, projectors = setup
    loss0 = _edit_loss(base, tok)
    ref_trace, ref_loss = paper
    assert ref_loss < 0.5 * loss0  # the reference edit does learn
    trace, loss = _run(setup, _eigenbasis)
    assert loss0 - loss >= 0.9 * (loss0 - ref_loss), (loss0, ref_loss, loss)
    for n in NAMES:
        kp = projectors[n]
        for step in (0, STEPS // 2, STEPS - 1):
            d_c = trace[step][n] - w0[n]
            assert _rel(kp.project(d_c), d_c) < 1e-12  # P(delta) == delta: exactly editable
        d_a = ref_trace[-1][n] - w0[n]
        assert _rel(kp.project(d_a), d_a) > 1e-2  # the paper's Adam-after-projection leaks
    re_trace, re_loss = _run(setup, _reparam)  # the re-parameterised form: the same iterates
    for n in NAMES:
        assert _rel(re_trace[-1][n] - w0[n], trace[-1][n] - w0[n]) < 1e-10
    assert abs(re_loss - loss) < 1e-10 * loss
