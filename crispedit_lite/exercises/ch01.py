r"""Graders for the exercises of notebook ``01_editing_as_constrained_optimization``.

Each grader raises ``AssertionError`` with a hint when the answer is wrong and prints ``"correct"``
when it is right. The references are independent float64 computations written out here (explicit
softmax, no library KL), so a bug in :mod:`crispedit_lite.curvature` cannot pass a grader.
Derived in notebook ``01_editing_as_constrained_optimization``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from crispedit_lite.teaching.toy import MLP

__all__ = ["check_penalized_loss", "check_project_out", "check_penalty_sweep"]


def _log_softmax64(z: Tensor) -> Tensor:
    z = z.detach().to(torch.float64)
    m = z.max(-1, keepdim=True).values
    return z - m - torch.log(torch.exp(z - m).sum(-1, keepdim=True))


def _parts(model: nn.Module, base: nn.Module, xe: Tensor, ye: Tensor, xc: Tensor) -> tuple[float, ...]:
    """(edit cross-entropy, KL(p0 || p), KL(p || p0)), in float64, from explicit log-softmaxes."""
    with torch.no_grad():
        lp_edit = _log_softmax64(model(xe))
        ce = -lp_edit[torch.arange(len(ye)), ye].mean()
        lp0, lp = _log_softmax64(base(xc)), _log_softmax64(model(xc))
        kl = (lp0.exp() * (lp0 - lp)).sum(-1).mean()
        rkl = (lp.exp() * (lp - lp0)).sum(-1).mean()
    return float(ce), float(kl), float(rkl)


def check_penalized_loss(
    fn: Callable[[nn.Module, nn.Module, Tensor, Tensor, Tensor, float], Tensor],
) -> None:
    r"""Exercise 1.1: the penalty route, ``fn(model, base, x_edit, y_edit, x_cap, lam)``.

    .. math::

        \mathcal L_{\rm edit}(\boldsymbol\theta)+\lambda\,\frac1n\sum_{i}
        \mathrm{KL}\big(p_{\boldsymbol\theta_0}(\cdot\mid x_i)\,\|\,p_{\boldsymbol\theta}(\cdot\mid x_i)\big),

    a differentiable scalar (the Lagrangian of CrispEdit eq. 1 with the KL as the constraint).
    Checked on random MLPs against an explicit float64 computation: value, gradient flow to
    ``model`` only, the direction of the KL, and :math:`\lambda=0`. Derived in notebook
    ``01_editing_as_constrained_optimization``.

    Derived in notebook ``01_editing_as_constrained_optimization``.
    """
    with torch.random.fork_rng():  # the notebook's random state is left alone
        torch.manual_seed(11)
        base, model = MLP((5, 4, 3)).double(), MLP((5, 4, 3)).double()
        xe, ye = torch.randn(6, 5, dtype=torch.float64), torch.randint(0, 3, (6,))
        xc = torch.randn(17, 5, dtype=torch.float64)
    ce, kl, rkl = _parts(model, base, xe, ye, xc)
    for lam in (0.0, 0.7, 10.0):
        want, reverse_kl = ce + lam * kl, ce + lam * rkl
        out = fn(model, base, xe, ye, xc, lam)
        assert isinstance(out, Tensor) and out.numel() == 1, (
            "return a scalar tensor (so that it can be backpropagated)")
        got = float(out.detach())
        if lam and abs(got - reverse_kl) < 1e-6 * max(1.0, abs(want)) and abs(want - reverse_kl) > 1e-6:
            raise AssertionError("the penalty uses KL(p_model || p_base); the constraint is "
                                 "KL(p_base || p_model): average sum_c p0_c (log p0_c - log p_c)")
        assert abs(got - want) < 1e-6 * max(1.0, abs(want)), (
            f"lam={lam}: expected {want:.6f}, got {got:.6f}. The loss is the mean cross-entropy on the edits "
            "plus lam times the mean KL from the base model's predictions on x_cap")
        if lam:
            assert out.requires_grad, (
                "the loss must be differentiable in the model's parameters (no torch.no_grad)")
            model.zero_grad(), base.zero_grad()
            out.backward()
            assert all(p.grad is None or not p.grad.abs().sum() for p in base.parameters()), (
                "the base model is fixed: compute its predictions without gradient (detach or no_grad)")
            assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
            model.zero_grad()
    print("correct")


def check_project_out(project_out: Callable[[Tensor, Tensor], Tensor]) -> None:
    r"""Exercise 1.2: ``project_out(g, U)`` returns :math:`(\mathbf I-\mathbf U\mathbf U^\top)\mathbf g`.

    ``U`` has orthonormal columns (the protected directions). Checked on random cases: the result is
    orthogonal to ``U``, projecting twice changes nothing, and ``g`` already orthogonal to ``U`` is
    returned unchanged. Derived in notebook ``01_editing_as_constrained_optimization``.
    """
    g = torch.Generator().manual_seed(5)
    for p, k in ((6, 2), (10, 7), (4, 0)):
        U = torch.linalg.qr(torch.randn(p, max(k, 1), generator=g, dtype=torch.float64))[0][:, :k]
        v = torch.randn(p, generator=g, dtype=torch.float64)
        out = torch.as_tensor(project_out(v, U), dtype=torch.float64)
        assert out.shape == v.shape, f"the projected vector must have shape {tuple(v.shape)}"
        assert torch.allclose(U.T @ out, torch.zeros(k, dtype=out.dtype), atol=1e-9), (
            "the result still has components along the protected directions U: subtract U (U^T g)"
        )
        want = v - U @ (U.T @ v)
        assert torch.allclose(out, want, atol=1e-9), (
            "the result must be g minus its component in span(U), not a rescaled or truncated vector"
        )
        again = torch.as_tensor(project_out(out, U), dtype=torch.float64)
        assert torch.allclose(again, out, atol=1e-9), "projecting twice must change nothing"
    print("correct")


def check_penalty_sweep(frame) -> None:
    r"""Exercise 1.3 (open-ended): the table of a :math:`\lambda` sweep of the penalty route.

    Only the mechanics are graded here; the comparison with the constrained edit is graded by the
    rubric in the instructors' guide. ``frame`` is a pandas DataFrame with a column (or index)
    ``lambda`` holding at least three values including 0, and columns ``edit accuracy``,
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
        assert df[col].between(0, 1).all(), f"{col} is a fraction in [0, 1]"
    assert (df["KL to base"] >= 0).all(), "a KL divergence is never negative"
    kl = df.groupby("lambda")["KL to base"].mean()
    assert kl.loc[lams[-1]] < kl.loc[0.0], (
        "the largest penalty ended further from the base than plain fine-tuning: check the sign of the "
        "penalty and that it is added to the loss you backpropagate")
    print("correct")
