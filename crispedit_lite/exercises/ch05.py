r"""Graders for the exercises of notebook ``05_matrix_free_projector``.

Each grader raises ``AssertionError`` with a hint when the answer is wrong and prints ``"correct"``
when it is right. Derived in notebook ``05_matrix_free_projector``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["check_smollm_bytes", "check_step_curvature"]


_DENSE_SHA = "d1b327a7c06371c8250098d5be832671436ef9c75a386219dbdc91fab7d18640"
_MATRIX_FREE_SHA = "87a63b03c4a23a47ee65c288a8d47185e50248709952aecff795b5ffb05c9a74"


def _sha(n: int) -> str:
    return hashlib.sha256(str(int(n)).encode()).hexdigest()


def check_smollm_bytes(dense_bytes: int, matrix_free_bytes: int) -> None:
    r"""Exercise 5.1: fp32 bytes of SmolLM2-135M's ``down_proj`` projector, dense and matrix-free.

    Explicit: :math:`(d_{out}d_{in})^2\cdot 4`; matrix-free:
    :math:`4(d_{in}^2+d_{out}^2) + d_{out}d_{in}` (fp32 eigenbases, one-byte bool mask). The
    expected integers are stored as SHA-256 digests, so reading this module does not give them away.
    Derived in notebook ``05_matrix_free_projector``.
    """
    n = 1536 * 576
    assert int(dense_bytes) != n**2, "that is the number of entries; multiply by 4 bytes per fp32 entry"
    assert _sha(dense_bytes) == _DENSE_SHA, (
        "explicit projector: n x n entries, n = d_out * d_in, 4 bytes each")
    assert int(matrix_free_bytes) != 4 * (1536**2 + 576**2 + n), "the bool mask takes 1 byte per entry, not 4"
    assert _sha(matrix_free_bytes) == _MATRIX_FREE_SHA, (
        "matrix-free: U_in is d_in x d_in and U_out d_out x d_out (4 bytes each), "
        "the bool mask d_out x d_in (1 byte each)")
    print("correct")


def check_step_curvature(fn: Callable[[Tensor, Tensor, Tensor], float]) -> None:
    r"""Exercise 5.2: ``fn(A, S, D)``, the curvature a step meets under K-FAC.

    That is :math:`\mathrm{vec}(\mathbf D)^\top(\mathbf A\otimes\mathbf S)\,\mathrm{vec}(\mathbf D)`.

    The curvature that a step :math:`\mathbf D` (``d_out x d_in``) meets under the K-FAC model (the
    book's column-major ``vec``; the same number with PyTorch's row-major ``vec`` and
    ``torch.kron(S, A)``); matrix-free it is
    :math:`\langle\mathbf D,\mathbf S\mathbf D\mathbf A\rangle_F`. Compared with the dense
    quadratic form of ``torch.kron(S, A)`` on random factors of several (non-square) shapes.
    Derived in notebook ``05_matrix_free_projector``.
    """
    g = torch.Generator().manual_seed(5)
    for d_out, d_in in ((3, 4), (5, 2), (4, 6)):
        a = torch.randn(d_in, 2 * d_in, generator=g, dtype=torch.float64)
        s = torch.randn(d_out, 2 * d_out, generator=g, dtype=torch.float64)
        A, S = a @ a.T, s @ s.T
        D = torch.randn(d_out, d_in, generator=g, dtype=torch.float64)
        d = D.reshape(-1)
        want = float(d @ torch.kron(S, A) @ d)
        got = float(fn(A.clone(), S.clone(), D.clone()))
        input_only = float((D @ A * D).sum())
        if abs(got - input_only) < 1e-9 * max(1.0, abs(input_only)):
            raise AssertionError("that ignores S (S = I, Adam-NSCL's curvature); the K-FAC block is "
                                 "kron(S, A)")
        assert abs(got - want) < 1e-8 * max(1.0, abs(want)), (
            f"got {got:.6g}, expected {want:.6g} for a ({d_out}, {d_in}) step: kron(S, A) vec(D) = "
            "vec(S D A) (A and S are symmetric), then take the Frobenius inner product with D")
    print("correct")
