"""crispedit_lite.fastproject: FastProjector and the low-rank form against the reference
KroneckerProjector.project.

Mirrors :mod:`crispedit_lite.fastproject.fast_projector` and :mod:`crispedit_lite.fastproject.lowrank`;
the random projectors and the tiny MLP trainer shared with the other ``tests/fastproject`` files are in
``tests/helpers.py``. The scale benchmark's smoke run is here too.
"""

import json
import os
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

from crispedit_lite.fastproject import (
    FastProjector,
    TokenFactorCapture,
    corner_project,
    lowrank_project,
)
from crispedit_lite.optim import ProjectedAdam
from tests.helpers import F64, ROOT, TinyMLP, random_projector, rel_err, train_tiny_mlp

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
    kp = random_projector(d_out, d_in, gamma, rule=rule, tied=tied, massive=massive)
    gen = torch.Generator().manual_seed(1)
    T = 13
    gout = torch.randn(T, d_out, generator=gen, dtype=F64)
    ain = torch.randn(T, d_in, generator=gen, dtype=F64)
    G = gout.T @ ain
    ref = kp.project(G)
    assert rel_err(lowrank_project(kp, gout, ain), ref, G) < 1e-12
    assert rel_err(corner_project(kp, G), ref, G) < 1e-12
    for method in ("reference", "lowrank", "corner", "blocks", "auto"):
        for plan in ("corner", "blocks"):
            fp = FastProjector.from_projector(kp, method=method, plan=plan)
            assert rel_err(fp.project(G), ref, G) < 1e-12, (method, plan)
            assert rel_err(fp.project(G, factors=(gout, ain)), ref, G) < 1e-12, (method, plan)

def test_transposed_and_dtype():
    kp = random_projector(6, 9, 0.8)
    kt = replace(kp, transposed=True)  # the same projector for a Conv1D (d_in, d_out) weight
    gen = torch.Generator().manual_seed(2)
    gout, ain = (
        torch.randn(4, 6, generator=gen, dtype=F64),
        torch.randn(4, 9, generator=gen, dtype=F64),
    )
    Gt = ain.T @ gout  # Conv1D layout (d_in, d_out)
    ref = kt.project(Gt)
    assert rel_err(lowrank_project(kt, gout, ain), ref) < 1e-12
    fp = FastProjector.from_projector(kt, method="blocks")
    assert rel_err(fp.project(Gt), ref) < 1e-12
    assert rel_err(fp.project(Gt, factors=(gout, ain)), ref) < 1e-12
    f32 = FastProjector.from_projector(kp, dtype=torch.float32)
    out = f32.project((gout.T @ ain).float())
    assert out.dtype == torch.float32
    assert rel_err(out.double(), kp.project(gout.T @ ain)) < 1e-5
    with pytest.raises(ValueError):
        fp.project(torch.zeros(6, 9, dtype=F64))

def test_fast_projector_choose_matches_flops():
    kp = random_projector(12, 20, 0.9, massive=True)
    fp = FastProjector.from_projector(kp)
    for T in (None, 1, 5, 1000):
        fl = fp.flops(T)
        fl.pop("corner", None)
        fl.pop("lowrank_corner", None)
        assert fp.choose(T) == min(fl, key=fl.get)

@pytest.mark.parametrize("micro", [1, 2])
def test_projected_adam_with_capture_equals_reference(micro):
    kp = random_projector(6, 10, 0.8, massive=True)

    def mk():
        return TinyMLP(gen=torch.Generator().manual_seed(3))

    ref = train_tiny_mlp(
        lambda m, c: ProjectedAdam([m.down.weight], {m.down.weight: kp}, lr=1e-2), mk, micro=micro
    )

    def fast(m, c):
        fp = FastProjector.from_projector(kp, method="auto", capture=c, name="down")
        return ProjectedAdam([m.down.weight], {m.down.weight: fp}, lr=1e-2)

    got = train_tiny_mlp(fast, mk, capture=True, micro=micro)
    assert rel_err(got.down.weight, ref.down.weight) < 1e-10

def test_capture_records_per_token_rows():
    gen = torch.Generator().manual_seed(0)
    m = TinyMLP(gen=gen)
    with TokenFactorCapture({"down": m.down}) as cap:
        x = torch.randn(2, 3, 6, generator=gen, dtype=F64)
        m(x).sum().backward()
        gout, ain = cap.pop("down")
        assert gout.shape == (6, 6) and ain.shape == (6, 10)
        assert rel_err(gout.T @ ain, m.down.weight.grad) < 1e-12
        assert cap.pop("down") is None
        with torch.no_grad():
            m(x)
        assert cap.pop("down") is None

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
