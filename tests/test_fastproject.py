"""Fast projection forms against the reference KroneckerProjector.project, the staircase, the chooser."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from crispedit_lite.fastproject import (
    Block,
    EigenbasisLinear,
    EigenbasisProjectedAdam,
    FastProjector,
    TokenFactorCapture,
    attach_eigenbasis,
    block_flops,
    choose_projection,
    corner_project,
    lowrank_project,
    merge_eigenbasis,
    plan_blocks,
    projection_flops,
    staircase,
)
from crispedit_lite.optim import ProjectedAdam
from crispedit_lite.projector import KroneckerProjector

ROOT = Path(__file__).resolve().parents[1]
F64 = torch.float64


def _factor(d, n, gen, decay=1.0, massive=False):
    """A PSD factor with a decaying (optionally one massive direction) spectrum."""
    x = torch.randn(n, d, generator=gen, dtype=F64) * torch.arange(1, d + 1, dtype=F64) ** (-decay)
    x = x @ torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=F64))[0]
    if massive:
        x[:, 0] += 30.0
    return x.T @ x / n


def _tied_factor(d, gen, levels=(4.0, 4.0, 1.0)):
    """A PSD factor with exactly tied eigenvalues (ties in the sort and at the cut)."""
    q = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=F64))[0]
    ev = torch.tensor([levels[i % len(levels)] for i in range(d)], dtype=F64)
    return (q * ev) @ q.T


def _proj(d_out, d_in, gamma, seed=0, rule="paper", tied=False, massive=False):
    gen = torch.Generator().manual_seed(seed)
    if tied:
        A, S = _tied_factor(d_in, gen), _tied_factor(d_out, gen, (2.0, 1.0))
    else:
        A = _factor(d_in, 3 * d_in, gen, massive=massive)
        S = _factor(d_out, 3 * d_out, gen, decay=0.5)
    return KroneckerProjector.from_factors(A, S, gamma, rule=rule, dtype=F64, rtol=1e-6)


def _rel(a, b, scale=None):
    """Relative error; against ``scale``'s norm when the reference may vanish (gamma = 1)."""
    den = (b if scale is None else scale).norm().clamp_min(1e-300)
    return float((a - b).detach().norm() / den.detach())


CASES = [
    (6, 9, 0.7, "paper", False, False),
    (8, 5, 0.9, "paper", False, True),
    (7, 12, 0.5, "code", False, False),
    (10, 10, 0.99, "paper", False, True),
    (6, 9, 0.6, "paper", True, False),
    (6, 9, 0.6, "code", True, False),
    (5, 7, 1.0, "paper", False, False),
]


@pytest.mark.parametrize("d_out,d_in,gamma,rule,tied,massive", CASES)
def test_every_form_equals_reference(d_out, d_in, gamma, rule, tied, massive):
    kp = _proj(d_out, d_in, gamma, rule=rule, tied=tied, massive=massive)
    gen = torch.Generator().manual_seed(1)
    T = 13
    gout = torch.randn(T, d_out, generator=gen, dtype=F64)
    ain = torch.randn(T, d_in, generator=gen, dtype=F64)
    G = gout.T @ ain
    ref = kp.project(G)
    assert _rel(lowrank_project(kp, gout, ain), ref, G) < 1e-12
    assert _rel(corner_project(kp, G), ref, G) < 1e-12
    for method in ("reference", "lowrank", "corner", "blocks", "auto"):
        for plan in ("corner", "blocks"):
            fp = FastProjector.from_projector(kp, method=method, plan=plan)
            assert _rel(fp.project(G), ref, G) < 1e-12, (method, plan)
            assert _rel(fp.project(G, factors=(gout, ain)), ref, G) < 1e-12, (method, plan)


def test_transposed_and_dtype():
    kp = _proj(6, 9, 0.8)
    kt = KroneckerProjector(
        kp.U_in,
        kp.U_out,
        kp.mask,
        kp.eig_in,
        kp.eig_out,
        kp.gamma,
        kp.threshold,
        kp.rule,
        transposed=True,
    )
    gen = torch.Generator().manual_seed(2)
    gout, ain = (
        torch.randn(4, 6, generator=gen, dtype=F64),
        torch.randn(4, 9, generator=gen, dtype=F64),
    )
    Gt = ain.T @ gout  # Conv1D layout (d_in, d_out)
    ref = kt.project(Gt)
    assert _rel(lowrank_project(kt, gout, ain), ref) < 1e-12
    fp = FastProjector.from_projector(kt, method="blocks")
    assert _rel(fp.project(Gt), ref) < 1e-12
    assert _rel(fp.project(Gt, factors=(gout, ain)), ref) < 1e-12
    f32 = FastProjector.from_projector(kp, dtype=torch.float32)
    out = f32.project((gout.T @ ain).float())
    assert out.dtype == torch.float32
    assert _rel(out.double(), kp.project(gout.T @ ain)) < 1e-5
    with pytest.raises(ValueError):
        fp.project(torch.zeros(6, 9, dtype=F64))


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("gamma", [0.3, 0.7, 0.9, 0.999])
def test_corner_property_of_energy_rule(seed, gamma):
    kp = _proj(9, 14, gamma, seed=seed, massive=seed % 2 == 1)
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


def test_fast_projector_choose_matches_flops():
    kp = _proj(12, 20, 0.9, massive=True)
    fp = FastProjector.from_projector(kp)
    for T in (None, 1, 5, 1000):
        fl = fp.flops(T)
        fl.pop("corner", None)
        fl.pop("lowrank_corner", None)
        assert fp.choose(T) == min(fl, key=fl.get)


class _TinyMLP(nn.Module):
    def __init__(self, d=6, h=10, gen=None):
        super().__init__()
        self.up = nn.Linear(d, h, dtype=F64)
        self.down = nn.Linear(h, d, bias=False, dtype=F64)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen, dtype=F64) * 0.5)

    def forward(self, x):
        return self.down(torch.tanh(self.up(x)))


def _train(opt_factory, model_factory, steps=4, capture=False, micro=1):
    gen = torch.Generator().manual_seed(7)
    model = model_factory()
    for p in model.parameters():
        p.requires_grad_(False)
    model.down.weight.requires_grad_(True)
    cap = TokenFactorCapture({"down": model.down}) if capture else None
    opt = opt_factory(model, cap)
    for _ in range(steps):
        opt.zero_grad()
        for _ in range(micro):
            x = torch.randn(3, 5, 6, generator=gen, dtype=F64)
            y = torch.randn(3, 5, 6, generator=gen, dtype=F64)
            ((model(x) - y) ** 2).mean().backward()
        opt.step()
    return model


@pytest.mark.parametrize("micro", [1, 2])
def test_projected_adam_with_capture_equals_reference(micro):
    kp = _proj(6, 10, 0.8, massive=True)

    def mk():
        return _TinyMLP(gen=torch.Generator().manual_seed(3))

    ref = _train(
        lambda m, c: ProjectedAdam([m.down.weight], {m.down.weight: kp}, lr=1e-2), mk, micro=micro
    )

    def fast(m, c):
        fp = FastProjector.from_projector(kp, method="auto", capture=c, name="down")
        return ProjectedAdam([m.down.weight], {m.down.weight: fp}, lr=1e-2)

    got = _train(fast, mk, capture=True, micro=micro)
    assert _rel(got.down.weight, ref.down.weight) < 1e-10


def test_capture_records_per_token_rows():
    gen = torch.Generator().manual_seed(0)
    m = _TinyMLP(gen=gen)
    with TokenFactorCapture({"down": m.down}) as cap:
        x = torch.randn(2, 3, 6, generator=gen, dtype=F64)
        m(x).sum().backward()
        gout, ain = cap.pop("down")
        assert gout.shape == (6, 6) and ain.shape == (6, 10)
        assert _rel(gout.T @ ain, m.down.weight.grad) < 1e-12
        assert cap.pop("down") is None
        with torch.no_grad():
            m(x)
        assert cap.pop("down") is None


def test_eigenbasis_adam_update_inside_subspace_and_matches_reparam():
    kp = _proj(6, 10, 0.7, massive=True)
    w0 = _TinyMLP(gen=torch.Generator().manual_seed(3)).down.weight.detach().clone()

    def mk():
        return _TinyMLP(gen=torch.Generator().manual_seed(3))

    got = _train(
        lambda m, c: EigenbasisProjectedAdam([m.down.weight], {m.down.weight: kp}, lr=1e-2),
        mk,
        steps=5,
    )
    delta = got.down.weight.detach() - w0
    assert _rel(kp.project(delta), delta) < 1e-12  # exactly in the editable subspace
    # the paper's ProjectedAdam leaks out of it
    paper = _train(
        lambda m, c: ProjectedAdam([m.down.weight], {m.down.weight: kp}, lr=1e-2), mk, steps=5
    )
    dp = paper.down.weight.detach() - w0
    assert _rel(kp.project(dp), dp) > 1e-6
    # with token factors from a capture: same iterates
    capd = _train(
        lambda m, c: EigenbasisProjectedAdam(
            [m.down.weight], {m.down.weight: kp}, lr=1e-2, capture=c, names={m.down.weight: "down"}
        ),
        mk,
        steps=5,
        capture=True,
    )
    assert _rel(capd.down.weight, got.down.weight) < 1e-10
    # the reparameterised layer + stock Adam: same iterates
    gen = torch.Generator().manual_seed(7)
    model = mk()
    for p in model.parameters():
        p.requires_grad_(False)
    mods = attach_eigenbasis(model, {"down": kp})
    assert isinstance(model.down, EigenbasisLinear)
    opt = torch.optim.Adam([mods["down"].delta], lr=1e-2)
    for _ in range(5):
        opt.zero_grad()
        x = torch.randn(3, 5, 6, generator=gen, dtype=F64)
        y = torch.randn(3, 5, 6, generator=gen, dtype=F64)
        ((model(x) - y) ** 2).mean().backward()
        opt.step()
    assert merge_eigenbasis(model) == ["down"]
    assert isinstance(model.down, nn.Linear)
    assert _rel(model.down.weight, got.down.weight) < 1e-10


def test_eigenbasis_linear_with_sgd_is_projected_gd():
    kp = _proj(6, 10, 0.7)
    gen = torch.Generator().manual_seed(5)
    base = nn.Linear(10, 6, bias=False, dtype=F64)
    w0 = base.weight.detach().clone()
    lin = EigenbasisLinear(base, kp)
    x, y = torch.randn(8, 10, generator=gen, dtype=F64), torch.randn(8, 6, generator=gen, dtype=F64)
    ((lin(x) - y) ** 2).sum().backward()
    lin.delta.data -= 0.1 * lin.delta.grad
    w = w0.clone().requires_grad_(True)
    ((x @ w.T - y) ** 2).sum().backward()
    assert _rel(lin.merged_weight(), w0 - 0.1 * kp.project(w.grad)) < 1e-12


def test_scale_benchmark_smoke(tmp_path):
    out = tmp_path / "scale.json"
    env = dict(
        os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_NO_ADVISORY_WARNINGS="1"
    )
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "scale.py"),
            "--preset",
            "tiny",
            "--device",
            "cpu",
            "--quick",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads(out.read_text())
    for key in ("command", "date", "hardware", "weights", "presets"):
        assert key in res
    assert "random init" in res["weights"]
    tiny = res["presets"]["tiny"]
    for section in ("build", "kfac", "eigh", "project", "step", "schedule"):
        assert section in tiny, section
    assert tiny["kfac"]["kfac_tokens_per_s"] > 0 and tiny["kfac"]["fwdbwd_tokens_per_s"] > 0
    assert tiny["step"]["variants"]["plain_ft"]["median_s"] > 0
    assert tiny["schedule"]["steps"] == 25 * 94
    assert tiny["schedule"]["extrapolated"] is True
    for v in tiny["project"]["variants"].values():
        assert v["median_s"] > 0 and v["rel_err"] < 1e-2
