"""The energy rule (CrispEdit eq. 3): hand-computed ranks, float64 accumulation, bad input."""

import math

import numpy as np
import pytest
import torch

from crispedit_lite.editing.updates.closed_form import alphaedit_projector
from crispedit_lite.energy import energy_curve, energy_mask, energy_rank
from crispedit_lite.projector import InputNullspaceProjector, KroneckerProjector


def test_energy_rank_hand_computed():
    ev = torch.tensor([1.0, 4.0, 3.0, 2.0])  # sorted: 4 3 2 1, cum: .4 .7 .9 1.
    assert energy_rank(ev, 0.4) == 1
    assert energy_rank(ev, 0.41) == 2
    assert energy_rank(ev, 0.7) == 2
    assert energy_rank(ev, 0.9) == 3
    assert energy_rank(ev, 0.95) == 4
    assert energy_rank(ev, 1.0) == 4


def test_energy_rank_clamps_negatives_and_handles_zero_tail():
    ev = torch.tensor([2.0, 1.0, 1.0, -1e-9, 0.0])
    assert energy_rank(ev, 1.0) == 3  # exact null space: only the non-zero ones protected
    assert energy_rank(torch.zeros(5), 0.9) == 0


def test_energy_rank_float64_cumsum_at_high_gamma():
    # 2M equal float32 values: a float32 cumulative sum drifts and would pick the wrong rank
    n = 2_000_000
    ev = torch.full((n,), 0.1, dtype=torch.float32)
    assert energy_rank(ev, 0.999) == math.ceil(0.999 * n)


@pytest.mark.parametrize("gamma", [0.0, -0.1, 1.5, float("nan")])
def test_gamma_out_of_range(gamma):
    with pytest.raises(ValueError, match="gamma"):
        energy_rank(torch.ones(3), gamma)


def test_energy_rank_rejects_nan_and_empty():
    with pytest.raises(ValueError, match="NaN"):
        energy_rank(torch.tensor([1.0, float("nan")]), 0.5)
    with pytest.raises(ValueError, match="at least one"):
        energy_rank(torch.tensor([]), 0.5)


# --- one energy rule: energy_curve and energy_mask, and every user of the rule agrees with them ---
def test_energy_curve_hand_computed():
    curve = energy_curve(torch.tensor([[1.0, 4.0], [3.0, 2.0]]))  # sorted 4 3 2 1
    assert curve.dtype == torch.float64
    torch.testing.assert_close(curve, torch.tensor([0.4, 0.7, 0.9, 1.0], dtype=torch.float64))
    assert torch.equal(energy_curve(torch.zeros(3)), torch.zeros(3, dtype=torch.float64))
    assert energy_curve(torch.tensor([2.0, -1e-9]))[0] == 1.0  # rounding negatives count as zero


@pytest.mark.parametrize("gamma, editable", [(0.4, [1.0, 3.0, 2.0]), (0.7, [1.0, 2.0]), (1.0, [])])
def test_energy_mask_hand_computed(gamma, editable):
    ev = torch.tensor([1.0, 4.0, 3.0, 2.0])
    mask, cut = energy_mask(ev, gamma)
    assert sorted(ev[mask].tolist()) == sorted(editable)
    assert int((~mask).sum()) == energy_rank(ev, gamma)
    assert cut == torch.sort(ev, descending=True).values[energy_rank(ev, gamma) - 1]


def test_ties_code_rule_protects_the_group_paper_rule_frees_it():
    ev = torch.tensor([3.0, 1.0, 1.0, 1.0])  # gamma 0.7 cuts inside the tied group
    code, _ = energy_mask(ev, 0.7, "code")
    paper, _ = energy_mask(ev, 0.7, "paper")
    assert code.tolist() == [False, False, False, False]
    assert paper.tolist() == [False, True, True, True]


def test_every_user_of_the_rule_gives_the_same_cut():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(12, 40, generator=g, dtype=torch.float64)
    y = torch.randn(5, 40, generator=g, dtype=torch.float64)
    A, S = x @ x.T / 40, y @ y.T / 40
    gamma = 0.9
    proj = KroneckerProjector.from_factors(A, S, gamma)
    mask, cut = energy_mask(torch.outer(proj.eig_out, proj.eig_in), gamma)
    assert torch.equal(proj.mask, mask) and proj.threshold == cut
    evals = torch.linalg.eigvalsh(A)
    ns = alphaedit_projector(A, rule="energy", gamma=gamma)
    nscl = InputNullspaceProjector.from_factor(A, d_out=5, gamma=gamma)
    keep, _ = energy_mask(evals, gamma)
    assert ns.rank == nscl.U0.shape[1] == int(keep.sum())
    np.testing.assert_allclose(ns.cut, float(torch.sort(evals).values[-energy_rank(evals, gamma)]))
