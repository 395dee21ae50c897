r"""Graders for the exercises of notebook ``07_sequential_editing``.

Each grader raises ``AssertionError`` with a hint when the answer is wrong and prints ``"correct"``
when it is right. Derived in notebook ``07_sequential_editing``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from crispedit_lite.kfac import KFACFactors, merge_kfac

__all__ = ["check_stream_merge", "check_mixture_error"]


def _psd(d: int, g: torch.Generator) -> Tensor:
    x = torch.randn(d, 2 * d, generator=g, dtype=torch.float64)
    return x @ x.T / (2 * d)


def check_stream_merge(fn: Callable[[list[tuple[Tensor, Tensor, int]]], tuple[Tensor, Tensor, int]]) -> None:
    r"""Exercise 7.1: ``fn([(A, S, n), ...])`` folds factors in two at a time, token-weighted.

    The result must equal the one-shot :func:`crispedit_lite.kfac.merge_kfac`,
    :math:`\bar{\mathbf A}=\sum_cN_c\mathbf A_c/\sum_cN_c` (likewise :math:`\mathbf S`), with
    :math:`N=\sum_cN_c`. Derived in notebook ``07_sequential_editing``.
    """
    g = torch.Generator().manual_seed(7)
    for d_in, d_out, counts in ((3, 2, (100, 7)), (4, 3, (50, 5, 9, 1)), (2, 2, (1, 1, 1))):
        parts = [(_psd(d_in, g), _psd(d_out, g), n) for n in counts]
        want = merge_kfac([KFACFactors(A=a, S=s, n_tokens=n) for a, s, n in parts])
        got = fn([(a.clone(), s.clone(), n) for a, s, n in parts])
        assert isinstance(got, tuple) and len(got) == 3, "return a tuple (A, S, n)"
        A, S, n = got
        assert int(n) == want.n_tokens, (
            f"the merged token count is the sum of the counts ({want.n_tokens}), got {n}")
        plain = sum(a for a, _, _ in parts) / len(parts)
        if len(set(counts)) > 1 and torch.allclose(torch.as_tensor(A, dtype=torch.float64), plain):
            raise AssertionError("that is the plain average; weight each part by its token count")
        assert torch.allclose(torch.as_tensor(A, dtype=torch.float64), want.A, atol=1e-10), (
            f"A is wrong for token counts {counts}: the update is A <- (N A + N_k A_k) / (N + N_k), "
            "with N the tokens merged so far (not the count of the previous part alone)")
        assert torch.allclose(torch.as_tensor(S, dtype=torch.float64), want.S, atol=1e-10), (
            f"S is wrong for token counts {counts}: merge S exactly like A")
    print("correct")


def _dense_error(As: Sequence[Tensor], Ss: Sequence[Tensor], w: Sequence[float]) -> float:
    mix = sum(wc * torch.kron(S, A) for wc, A, S in zip(w, As, Ss))
    A_bar = sum(wc * A for wc, A in zip(w, As))
    S_bar = sum(wc * S for wc, S in zip(w, Ss))
    return float(torch.linalg.norm(mix - torch.kron(S_bar, A_bar)) / torch.linalg.norm(mix))


def check_mixture_error(fn: Callable[[list[Tensor], list[Tensor], list[float]], float]) -> None:
    r"""Exercise 7.2: ``fn(As, Ss, weights)`` is the merge's relative Frobenius error.

    :math:`\|\sum_cw_c\mathbf A_c\otimes\mathbf S_c-\bar{\mathbf A}\otimes\bar{\mathbf S}\|_F/
    \|\sum_cw_c\mathbf A_c\otimes\mathbf S_c\|_F`, zero when all :math:`\mathbf A_c` (or all
    :math:`\mathbf S_c`) are equal. Derived in notebook ``07_sequential_editing``.
    """
    g = torch.Generator().manual_seed(8)
    cases = []
    for d_in, d_out, w in ((3, 2, (0.7, 0.3)), (2, 3, (0.5, 0.25, 0.25)), (4, 2, (0.9, 0.05, 0.05))):
        cases.append(([_psd(d_in, g) for _ in w], [_psd(d_out, g) for _ in w], list(w)))
    A0 = _psd(3, g)
    cases.append(([A0, A0.clone()], [_psd(2, g), _psd(2, g)], [0.6, 0.4]))
    for As, Ss, w in cases:
        want = _dense_error(As, Ss, w)
        got = float(fn([a.clone() for a in As], [s.clone() for s in Ss], list(w)))
        assert abs(got - want) < 1e-8 * max(1.0, want) + 1e-10, (
            f"got {got:.6g}, expected {want:.6g} (weights {w}): the mixture is sum_c w_c kron(S_c, A_c), "
            "the merge kron(S_bar, A_bar) with token-weighted means; divide the Frobenius norm of "
            "the difference by that of the mixture")
    assert _dense_error(*cases[-1]) < 1e-12
    print("correct")
