"""crispedit_lite.fastproject.guard: the editors' fast projection is the reference one, or is refused.

The block form is taken only where it is cheaper by FLOPs and a seeded random gradient shows it equal
to the reference (relative error and protected-subspace leak below the tolerance); a wrong block form
must be refused, and CrispEdit through ``edit()`` must give the reference's weights.
"""

from __future__ import annotations

import pytest
import torch

from crispedit_lite.editing import edit
from crispedit_lite.fastproject import FastProjector
from crispedit_lite.fastproject.guard import guarded_projector
from tests.helpers import CAP_TEXT, REQUESTS, edit_config, random_projector


@pytest.mark.parametrize("gamma", [0.5, 0.7, 0.9])
def test_guard_takes_the_block_form_where_cheaper_and_equal(gamma):
    proj = random_projector(96, 160, gamma, massive=True)
    fast, info = guarded_projector(proj)
    assert info["projection"] == "blocks" and isinstance(fast, FastProjector), info
    assert info["projection_error"] < 1e-5 and info["protected_leak"] < 1e-5
    g = torch.randn(96, 160, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    ref = proj.project(g)
    assert torch.allclose(fast.project(g), ref, rtol=0, atol=1e-5 * float(ref.abs().max()))
    assert fast.project(g).dtype == g.dtype  # returned in the gradient's dtype


def test_guard_refuses_a_wrong_block_form(monkeypatch):
    proj = random_projector(96, 160, 0.7, massive=True)
    monkeypatch.setattr(FastProjector, "project", lambda self, G, factors=None: G.clone())  # no projection
    back, info = guarded_projector(proj)
    assert back is proj and info["projection"] == "reference"
    assert "precision check" in info["reason"] and info["protected_leak"] > 1e-2


def test_guard_refuses_at_zero_tolerance_and_when_not_cheaper():
    proj = random_projector(96, 160, 0.7, massive=True)
    back, info = guarded_projector(proj, tol=0.0)
    assert back is proj and info["projection"] == "reference"
    dense = random_projector(6, 9, 0.999)  # almost everything protected: the blocks cover the whole matrix
    back, info = guarded_projector(dense)
    assert back is dense and info["reason"] == "the block form is not cheaper"


def test_crispedit_fast_projection_gives_the_reference_weights(model, tok):
    import copy

    twin = copy.deepcopy(model)
    w0 = {n: p.detach().clone() for n, p in model.named_parameters()}
    runs = {}
    for how, m in (("reference", model), ("fast", twin)):
        torch.manual_seed(0)
        res = edit(m, tok, REQUESTS, edit_config("crispedit", gamma=0.5, projection=how),
                   capability_texts=[CAP_TEXT], progress=False)
        runs[how] = (res, {n: p.detach().clone() for n, p in m.named_parameters()})
    forms = {s.get("projection") for s in runs["fast"][0].projector_stats.values()}
    assert forms <= {"blocks", "reference"} and None not in forms
    assert all("projection" not in s for s in runs["reference"][0].projector_stats.values())
    # the bases are float32 in the fast form (the model is float64 here): the same iterates up to
    # float32 rounding, far below the edit itself
    for n, w in runs["reference"][1].items():
        gap, step = float((runs["fast"][1][n] - w).norm()), float((w - w0[n]).norm())
        assert gap <= 1e-3 * step if step > 0 else gap == 0, (n, gap, step)
    assert runs["fast"][0].config.to_dict()["projection"] == "fast"
