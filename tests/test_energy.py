"""The energy rule (CrispEdit eq. 3): hand-computed ranks, float64 accumulation, bad input."""

import math

import pytest
import torch

from crispedit_lite.energy import energy_rank


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
