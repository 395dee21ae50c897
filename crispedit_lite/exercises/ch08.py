r"""Graders for the exercises of notebook ``08_one_framework`` (the capstone of Part II).

The judge checks AlphaEdit's update by the equations that define it, not by a copy of it: it must
vanish on the protected directions of the capability keys (its own ``eigh`` and energy rule) and
satisfy the stationarity (normal) equations of the penalised least-squares problem restricted to the
null space; the projected-gradient iterates must approach a point that satisfies the same equations.
Derived in notebook ``08_one_framework``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from crispedit_lite.exercises.core import exercise

__all__ = ["check_alphaedit_limit", "ALPHAEDIT"]

#: The settings of exercise 8.1.
ALPHAEDIT = {"gamma": 0.99, "alpha": 1.0, "steps": 400}


def _problem(seed: int, d_in: int = 24, d_out: int = 8, n_cap: int = 60, n_edit: int = 3):
    g = torch.Generator().manual_seed(seed)
    basis = torch.linalg.qr(torch.randn(d_in, 10, generator=g, dtype=torch.float64))[0]
    K0 = basis @ (
        torch.randn(10, n_cap, generator=g, dtype=torch.float64)
        * torch.logspace(0, -2, 10, dtype=torch.float64)[:, None]
    )
    K1 = torch.randn(d_in, n_edit, generator=g, dtype=torch.float64)
    R = torch.randn(d_out, n_edit, generator=g, dtype=torch.float64)
    return K0, K1, R


def _null_projector(K0: Tensor, gamma: float) -> Tensor:
    from crispedit_lite.energy import energy_rank

    lam, vecs = torch.linalg.eigh(K0 @ K0.T)
    k = energy_rank(lam, gamma)
    U0 = vecs[:, : K0.shape[0] - k]
    return U0 @ U0.T


def _probe_alphaedit(closed_form, descent) -> dict[str, Any]:
    out = []
    for seed in (81, 82):
        K0, K1, R = _problem(seed)
        cf = (
            torch.as_tensor(
                closed_form(K0.clone(), K1.clone(), R.clone(), ALPHAEDIT["gamma"], ALPHAEDIT["alpha"])
            )
            .detach()
            .double()
        )
        path = descent(
            K0.clone(), K1.clone(), R.clone(), ALPHAEDIT["gamma"], ALPHAEDIT["alpha"], ALPHAEDIT["steps"]
        )
        path = [torch.as_tensor(p).detach().double() for p in path]
        out.append({"closed_form": cf, "path": path})
    return {"cases": out}


@exercise(
    "ex-08-1",
    probe=_probe_alphaedit,
    forbidden=[
        "alphaedit_delta",
        "alphaedit_projector",
        "memit_delta",
        "rome_delta",
        "NullSpace",
        "InputNullspaceProjector",
        "KroneckerProjector",
        "lstsq",
        "pinv",
    ],
    piece="the null space, the closed form and the descent",
)
def check_alphaedit_limit(obs: dict[str, Any]) -> None:
    r"""Exercise 8.1 (capstone of Part II): AlphaEdit's closed form, the limit of projected gradient descent.

    Called as ``check_alphaedit_limit(alphaedit_closed_form, projected_descent)``. On random keys:
    the closed form :math:`\Delta` must satisfy :math:`\Delta(\mathbf I-\mathbf P)=0` with
    :math:`\mathbf P` the energy-rule null-space projector of :math:`\mathbf K_0\mathbf K_0^\top`, and
    the stationarity equations of :math:`\|\Delta\mathbf K_1-\mathbf R\|^2+\alpha\|\Delta\|^2` over
    that subspace; every descent iterate must lie in the subspace, and the iterates must approach
    the closed form, ending close to it. Derived in notebook ``08_one_framework``.
    """
    for seed, case in zip((81, 82), obs["cases"]):
        K0, K1, R = _problem(seed)
        P = _null_projector(K0, ALPHAEDIT["gamma"])
        I = torch.eye(P.shape[0], dtype=P.dtype)
        D = case["closed_form"]
        assert D.shape == (R.shape[0], K0.shape[0]), (
            f"the update is (d_out, d_in) = {(R.shape[0], K0.shape[0])}"
        )
        scale = float(R.norm() * K1.norm())
        leak = float((D @ (I - P)).norm() / max(float(D.norm()), 1e-12))
        assert leak < 1e-8, (
            f"the closed form touches protected directions of K0 (|D (I - P)| / |D| = {leak:.2g}): build P "
            "from "
            "the eigenvectors of K0 K0^T outside the energy cut"
        )
        stationarity = (D @ K1 - R) @ K1.T @ P + ALPHAEDIT["alpha"] * D
        err = float(stationarity.norm()) / scale
        assert err < 1e-8, (
            f"the closed form is not a minimiser over the null space (stationarity residual {err:.2g}): "
            "check "
            "where P enters and the alpha term"
        )
        path = case["path"]
        assert len(path) >= 2, "return the iterates of the descent (at least the first and the last)"
        for t, X in enumerate(path):
            out = float((X @ (I - P)).norm() / max(float(X.norm()), 1e-12))
            assert out < 1e-8, f"iterate {t} leaves the null space (|X (I - P)| / |X| = {out:.2g})"
        gaps = [float((X - D).norm() / D.norm()) for X in path]
        assert gaps[-1] < 0.05, (
            f"the last iterate is {gaps[-1]:.2%} away from the closed form: more steps, or a step size from "
            "the "
            "largest curvature of the problem"
        )
        assert gaps[-1] < 0.5 * gaps[0], "the iterates do not approach the closed form"
