r"""Graders for the exercises of notebook ``01_editing_as_constrained_optimization``.

Each grader is a probe, which calls the student's function on fixed random inputs and returns what
came out, and a judge, which checks that against an independent float64 computation (explicit
softmax, no library KL) or against the answer's defining properties, and raises ``AssertionError``
saying what is wrong. Derived in notebook ``01_editing_as_constrained_optimization``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from crispedit_lite.exercises.core import exercise
from crispedit_lite.teaching.toy import MLP

__all__ = ["check_penalized_loss", "check_project_out", "check_penalty_sweep"]

_LAMS = (0.0, 0.7, 10.0)


def _log_softmax64(z: Tensor) -> Tensor:
    z = z.detach().to(torch.float64)
    m = z.max(-1, keepdim=True).values
    return z - m - torch.log(torch.exp(z - m).sum(-1, keepdim=True))


def _toy() -> tuple[MLP, MLP, Tensor, Tensor, Tensor]:
    with torch.random.fork_rng():  # the caller's random state is left alone
        torch.manual_seed(11)
        base, model = MLP((5, 4, 3)).double(), MLP((5, 4, 3)).double()
        xe, ye = torch.randn(6, 5, dtype=torch.float64), torch.randint(0, 3, (6,))
        xc = torch.randn(17, 5, dtype=torch.float64)
    return base, model, xe, ye, xc


def _probe_penalized_loss(fn) -> dict[str, Any]:
    """Values, whether they carry a gradient, and where the gradient lands, for three lambdas."""
    base, model, xe, ye, xc = _toy()
    rows = []
    for lam in _LAMS:
        for p in (*base.parameters(), *model.parameters()):
            p.grad = None
        out = fn(model, base, xe, ye, xc, lam)
        row = {
            "lam": lam,
            "is_tensor": isinstance(out, Tensor),
            "numel": int(out.numel()) if isinstance(out, Tensor) else -1,
            "value": float(out.detach()) if isinstance(out, Tensor) else float("nan"),
            "requires_grad": bool(getattr(out, "requires_grad", False)),
            "base_grad": 0.0,
            "model_grad": 0.0,
        }
        if row["requires_grad"] and row["numel"] == 1:
            out.backward()
            row["base_grad"] = float(sum(p.grad.abs().sum() for p in base.parameters() if p.grad is not None))
            row["model_grad"] = float(
                sum(p.grad.abs().sum() for p in model.parameters() if p.grad is not None)
            )
        rows.append(row)
    # at theta = theta0 the penalty must not change the gradient of the edit loss
    probe = MLP((5, 4, 3)).double()
    probe.load_state_dict(base.state_dict())
    out = fn(probe, base, xe, ye, xc, 100.0)
    grad = None
    if isinstance(out, Tensor) and out.requires_grad:
        grad = torch.autograd.grad(out, probe.fc2.weight, allow_unused=True)[0]
    return {"rows": rows, "grad_at_base": grad}


@exercise("ex-01-1", probe=_probe_penalized_loss)
def check_penalized_loss(obs: dict[str, Any]) -> None:
    r"""Exercise 1.1: ``penalized_loss(model, base, x_edit, y_edit, x_cap, lam)``, the penalty route.

    Checked on random MLPs in float64 against an explicit computation of the edit cross-entropy
    and of the KL divergence between the two models' predictions on ``x_cap``, in both directions;
    the value must be a differentiable scalar whose gradient reaches ``model`` only. Derived in
    notebook ``01_editing_as_constrained_optimization``.
    """
    base, model, xe, ye, xc = _toy()
    with torch.no_grad():
        lp_edit = _log_softmax64(model(xe))
        ce = float(-lp_edit[torch.arange(len(ye)), ye].mean())
        lp0, lp = _log_softmax64(base(xc)), _log_softmax64(model(xc))
        kl = float((lp0.exp() * (lp0 - lp)).sum(-1).mean())
        rkl = float((lp.exp() * (lp - lp0)).sum(-1).mean())
    for row in obs["rows"]:
        lam = row["lam"]
        assert row["is_tensor"] and row["numel"] == 1, (
            "return a scalar tensor (so that it can be backpropagated)"
        )
        got, want = row["value"], ce + lam * kl
        if lam and abs(got - (ce + lam * rkl)) < 1e-6 * max(1.0, abs(want)) and abs(kl - rkl) > 1e-6:
            raise AssertionError(
                "the KL runs in the wrong direction: the constraint measures how far the "
                "edited model's predictions are from the base model's, KL(p_base || p_model)"
            )
        assert abs(got - want) < 1e-6 * max(1.0, abs(want)), (
            f"lam={lam}: the value is off by {got - want:+.3g}. Check that both terms are means (over the "
            "edits and over the capability inputs) and that lam multiplies the penalty only"
        )
        if lam:
            assert row["requires_grad"], "the loss must be differentiable in the model's parameters"
            assert row["base_grad"] == 0.0, (
                "the base model is fixed: its predictions must not receive a gradient"
            )
            assert row["model_grad"] > 0.0, "no gradient reached the edited model's parameters"
    base2, model2, xe2, ye2, _ = _toy()
    probe = MLP((5, 4, 3)).double()
    probe.load_state_dict(base2.state_dict())
    w = probe.fc2.weight
    g_ce = torch.autograd.grad(-_log_softmax_grad(probe, xe2, ye2), w)[0]
    got = obs["grad_at_base"]
    assert got is not None and torch.allclose(torch.as_tensor(got, dtype=torch.float64), g_ce, atol=1e-8), (
        "at the base model the penalty term must contribute no gradient, whatever lam"
    )


def _log_softmax_grad(model: MLP, x: Tensor, y: Tensor) -> Tensor:
    z = model(x).to(torch.float64)
    m = z.max(-1, keepdim=True).values.detach()
    lp = z - m - torch.log(torch.exp(z - m).sum(-1, keepdim=True))
    return lp[torch.arange(len(y)), y].mean()


def _cases() -> list[tuple[Tensor, Tensor]]:
    g = torch.Generator().manual_seed(5)
    out = []
    for p, k in ((6, 2), (10, 7), (4, 0), (9, 1)):
        U = torch.linalg.qr(torch.randn(p, max(k, 1), generator=g, dtype=torch.float64))[0][:, :k]
        out.append((torch.randn(p, generator=g, dtype=torch.float64), U))
    return out


def _probe_project_out(fn) -> dict[str, Any]:
    outs, again = [], []
    for v, U in _cases():
        out = torch.as_tensor(fn(v.clone(), U.clone()), dtype=torch.float64)
        outs.append(out)
        again.append(torch.as_tensor(fn(out.clone(), U.clone()), dtype=torch.float64))
    return {"outs": outs, "again": again}


@exercise("ex-01-2", probe=_probe_project_out)
def check_project_out(obs: dict[str, Any]) -> None:
    r"""Exercise 1.2: ``project_out(g, U)`` removes from ``g`` its components along the columns of ``U``.

    Checked from the defining properties of the orthogonal projection onto the complement of
    :math:`\mathrm{span}(\mathbf U)`: the result is orthogonal to ``U``, what was removed lies in
    :math:`\mathrm{span}(\mathbf U)` (least-squares residual zero), and projecting twice changes
    nothing. Derived in notebook ``01_editing_as_constrained_optimization``.
    """
    for (v, U), out, again in zip(_cases(), obs["outs"], obs["again"]):
        assert out.shape == v.shape, (
            f"the projected vector must have shape {tuple(v.shape)}, got {tuple(out.shape)}"
        )
        k = U.shape[1]
        assert torch.allclose(U.T @ out, torch.zeros(k, dtype=out.dtype), atol=1e-9), (
            "the result still has components along the protected directions (U^T result is not zero)"
        )
        removed = v - out
        if k:
            coef = torch.linalg.lstsq(U, removed[:, None]).solution
            resid = removed - (U @ coef)[:, 0]
        else:
            resid = removed
        assert float(resid.norm()) < 1e-9 * max(1.0, float(v.norm())), (
            "the result changed g along directions orthogonal to U: only the protected components "
            "may be removed (is the result rescaled or truncated?)"
        )
        assert torch.allclose(again, out, atol=1e-9), "projecting twice must change nothing"


@exercise("ex-01-3")
def check_penalty_sweep(frame) -> None:
    r"""Exercise 1.3 (open-ended): the table of a :math:`\lambda` sweep of the penalty route.

    Only the mechanics are graded here; the comparison with the constrained edit is graded by hand
    with the rubric of the instructors' guide. ``frame`` is a pandas DataFrame with a column (or
    index) ``lambda`` holding at least three values including 0, and columns ``edit accuracy``,
    ``old-task accuracy`` and ``KL to base``; a larger penalty must not end further from the base.
    Derived in notebook ``01_editing_as_constrained_optimization``.
    """
    import pandas as pd

    assert isinstance(frame, pd.DataFrame), f"pass a pandas DataFrame, got {type(frame).__name__}"
    df = frame.reset_index() if "lambda" not in frame.columns else frame
    need = {"lambda", "edit accuracy", "old-task accuracy", "KL to base"}
    assert need <= set(df.columns), f"the table needs the columns {sorted(need)}; it has {list(df.columns)}"
    lams = sorted(float(x) for x in df["lambda"].unique())
    assert len(lams) >= 3 and lams[0] == 0.0, "sweep at least three values of lambda, including 0 (plain FT)"
    for col in ("edit accuracy", "old-task accuracy"):
        assert df[col].astype(float).between(0, 1).all(), f"{col} is a fraction in [0, 1]"
    assert (df["KL to base"].astype(float) >= 0).all(), "a KL divergence is never negative"
    kl = df.groupby("lambda")["KL to base"].mean()
    assert kl.loc[lams[-1]] < kl.loc[0.0], (
        "the largest penalty ended further from the base than plain fine-tuning: check the sign of the "
        "penalty and that it is part of the loss you backpropagate"
    )
