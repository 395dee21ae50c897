"""The staircase, the block plan and the FLOP chooser (``fastproject.blocks``, ``fastproject.flops``)."""

import pytest
import torch

from crispedit_lite.fastproject import (
    Block,
    FastProjector,
    block_flops,
    choose_projection,
    plan_blocks,
    projection_flops,
    staircase,
)
from tests.helpers import random_projector


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("gamma", [0.3, 0.7, 0.9, 0.999])
def test_corner_property_of_energy_rule(seed, gamma):
    kp = random_projector(9, 14, gamma, seed=seed, massive=seed % 2 == 1)
    po = torch.sort(kp.eig_out, descending=True, stable=True).indices
    pi = torch.sort(kp.eig_in, descending=True, stable=True).indices
    prot = ~kp.mask[po][:, pi]
    widths, r_out, r_in = staircase(prot)
    assert prot[:r_out, :r_in].sum() == prot.sum()  # everything protected is in the corner
    assert torch.all(widths[1:] <= widths[:-1])
    assert r_out == int(prot.any(1).sum()) and r_in == int(prot.any(0).sum())
    fp = FastProjector.from_projector(kp)
    covered = torch.zeros_like(prot)
    for b in fp.blocks:  # blocks are disjoint and cover the protected set exactly via their masks
        assert not covered[b.r0 : b.r1, b.c0 : b.c1].any()
        covered[b.r0 : b.r1, b.c0 : b.c1] = True
    assert torch.all(covered >= prot)

def test_staircase_rejects_non_staircase():
    bad = torch.zeros(3, 4, dtype=torch.bool)
    bad[0, 1] = True  # not a prefix
    with pytest.raises(ValueError):
        staircase(bad)
    bad = torch.zeros(3, 4, dtype=torch.bool)
    bad[1, :2] = True  # widths increase
    with pytest.raises(ValueError):
        staircase(bad)

def test_plan_blocks_L_shape_is_cheap():
    d_out, d_in = 400, 1000
    widths = torch.zeros(d_out, dtype=torch.long)
    widths[0] = 900  # one massive output direction protects almost a whole row
    widths[1:300] = 1  # one massive input direction protects a long column
    plan = plan_blocks(widths, d_out, d_in, overhead=0.0)
    corner = block_flops(300, 900, d_out, d_in)
    assert sum(block_flops(b.h, b.w, d_out, d_in) for b in plan) < corner / 50
    assert {(b.r0, b.r1, b.c0, b.c1) for b in plan} in (
        {(0, 1, 0, 900), (1, 300, 0, 1)},  # row groups
        {(0, 300, 0, 1), (0, 1, 1, 900)},  # column groups, same cost
    )
    assert plan_blocks(torch.zeros(5, dtype=torch.long), 5, 5) == []

@pytest.mark.parametrize(
    "shape",
    [
        (4096, 14336, 1024, 100, 100),
        (4096, 14336, 1024, 4096, 14336),
        (4096, 14336, 200000, 3000, 12000),
        (576, 1536, 100000, 576, 1536),
        (64, 64, 10, 64, 64),
        (1536, 8960, 1024, 0, 0),
    ],
)
def test_chooser_picks_fewest_flops(shape):
    d_out, d_in, T, r_out, r_in = shape
    name, flops = choose_projection(d_out, d_in, T, r_out, r_in)
    assert flops[name] == min(flops.values())
    assert set(flops) == {"reference", "lowrank", "corner", "lowrank_corner"}
    assert flops["reference"] == 4 * d_out * d_in * (d_out + d_in)
    name2, flops2 = choose_projection(d_out, d_in)
    assert name2 == "reference" and set(flops2) == {"reference"}

def test_chooser_each_form_can_win():
    assert choose_projection(4096, 14336, 10**7, 4096, 14336)[0] == "reference"
    assert choose_projection(4096, 14336, 1024, 4096, 14336)[0] == "lowrank"
    assert choose_projection(4096, 14336, 10**7, 50, 50)[0] == "corner"
    assert choose_projection(4096, 14336, 64, 2000, 8000)[0] == "lowrank_corner"
    blocks = [Block(0, 1, 0, 14000), Block(1, 3000, 0, 1)]  # L-shaped staircase
    flops = projection_flops(4096, 14336, 1024, 3000, 14000, blocks=blocks)
    assert min(flops, key=flops.get) in ("blocks", "lowrank_blocks")
    assert (
        projection_flops(10, 20, 5, have_grad=False)["reference"]
        == 4 * 10 * 20 * 30 + 2 * 5 * 10 * 20
    )
