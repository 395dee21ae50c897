r"""Graders for the exercises of notebook ``01_editing_as_constrained_optimization``.

Each grader raises ``AssertionError`` with a hint when the answer is wrong and prints ``"correct"``
when it is right. Derived in notebook ``01_editing_as_constrained_optimization``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from crispedit_lite.curvature import softmax_kl
from crispedit_lite.toy import MLP

__all__ = ["check_kl_to_base", "check_project_out"]


def check_kl_to_base(kl_to_base: Callable[[nn.Module, nn.Module, Tensor], Tensor]) -> None:
    r"""Exercise 1.1: ``kl_to_base(model, base, x)`` is the mean KL from the base model's predictions.

    That is the mean over rows of :math:`\mathrm{KL}(p_{\rm base}\,\|\,p_{\rm model})`. Checked on random
    MLPs against :func:`crispedit_lite.curvature.softmax_kl`: zero for the base itself, non-negative,
    and not symmetric. Derived in notebook ``01_editing_as_constrained_optimization``.
    """
    torch.manual_seed(11)
    base, other = MLP((5, 4, 3)).double(), MLP((5, 4, 3)).double()
    x = torch.randn(17, 5, dtype=torch.float64)
    with torch.no_grad():
        z0, z = base(x), other(x)
    got0 = float(kl_to_base(base, base, x))
    assert abs(got0) < 1e-9, f"the KL of the base model to itself must be 0, got {got0:.3g}"
    got = float(kl_to_base(other, base, x))
    want = float(softmax_kl(z0, z))
    assert got >= 0, f"a KL divergence is never negative, got {got:.4g}"
    reverse = float(softmax_kl(z, z0))
    if abs(got - reverse) < 1e-6 * max(1.0, abs(want)) and abs(got - want) > 1e-6:
        raise AssertionError("you computed KL(p_model || p_base); the constraint uses "
                             "KL(p_base || p_model)")
    assert abs(got - want) < 1e-6 * max(1.0, abs(want)), (
        f"expected {want:.6f}, got {got:.6f}: average sum_c p0_c (log p0_c - log p_c) over the rows "
        "(use log_softmax for both models)"
    )
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
