r"""Graders for the exercises of notebook ``05_matrix_free_projector``.

Each grader raises ``AssertionError`` with a hint when the answer is wrong and prints ``"correct"``
when it is right. Derived in notebook ``05_matrix_free_projector``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from crispedit_lite import costs
from crispedit_lite.projector import KroneckerProjector

__all__ = ["check_smollm_bytes", "check_protected_projection"]


def check_smollm_bytes(dense_bytes: int, matrix_free_bytes: int) -> None:
    r"""Exercise 5.1: fp32 bytes of SmolLM2-135M's ``down_proj`` projector, dense and matrix-free.

    Explicit: :math:`(d_{out}d_{in})^2\cdot 4`; matrix-free:
    :math:`4(d_{in}^2+d_{out}^2) + d_{out}d_{in}` (fp32 eigenbases, one-byte bool mask).
    Derived in notebook ``05_matrix_free_projector``.
    """
    s = costs.DOWN_PROJ_SHAPES["SmolLM2-135M"]
    want_dense = costs.dense_projector_bytes(s.d_out, s.d_in)
    want_mf = costs.matrix_free_bytes(s.d_out, s.d_in)["total"]
    assert int(dense_bytes) != (s.d_out * s.d_in) ** 2, (
        "that is the number of entries; multiply by 4 bytes per fp32 entry"
    )
    assert int(dense_bytes) == want_dense, (
        f"explicit projector: n x n entries, n = d_out * d_in = {s.d_out} * {s.d_in}, 4 bytes each"
    )
    assert int(matrix_free_bytes) == want_mf, (
        "matrix-free: U_in is d_in x d_in and U_out d_out x d_out (4 bytes each), "
        "the bool mask d_out x d_in (1 byte each)"
    )
    print("correct")


def check_protected_projection(fn: Callable[[Tensor, Tensor, Tensor, float], Tensor]) -> None:
    r"""Exercise 5.2: ``fn(A, S, G, gamma)`` returns the *protected* part of ``G``.

    That is :math:`\mathbf G-\mathbf P_\gamma(\mathbf G)=\mathbf U_{out}((\mathbf U_{out}^\top
    \mathbf G\mathbf U_{in})\odot(1-\mathbf M))\mathbf U_{in}^\top`, Prop. 3 with the complementary
    predicate. Checked on random factors of several shapes. Derived in notebook
    ``05_matrix_free_projector``.
    """
    g = torch.Generator().manual_seed(5)
    for d_out, d_in, gamma in ((3, 4, 0.9), (5, 2, 0.5), (4, 6, 0.99)):
        a = torch.randn(d_in, 2 * d_in, generator=g, dtype=torch.float64)
        s = torch.randn(d_out, 2 * d_out, generator=g, dtype=torch.float64)
        A, S = a @ a.T, s @ s.T
        G = torch.randn(d_out, d_in, generator=g, dtype=torch.float64)
        proj = KroneckerProjector.from_factors(A, S, gamma, dtype=torch.float64)
        want = G - proj.project(G)
        got = torch.as_tensor(fn(A.clone(), S.clone(), G.clone(), gamma), dtype=torch.float64)
        assert got.shape == G.shape, f"return a ({d_out}, {d_in}) matrix, got {tuple(got.shape)}"
        if torch.allclose(got, proj.project(G), atol=1e-8):
            raise AssertionError("that is the editable part P(G); return G - P(G)")
        assert torch.allclose(got, want, atol=1e-8), (
            f"wrong for d_out={d_out}, d_in={d_in}, gamma={gamma}: eigendecompose A and S, "
            "apply the energy rule to all products eig_out[i] * eig_in[j] (energy_threshold), "
            "and keep the coordinates U_out^T G U_in whose product is above the cut"
        )
    print("correct")
