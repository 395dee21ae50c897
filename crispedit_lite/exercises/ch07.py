r"""Graders for the exercises of notebook ``07_sequential_editing``.

7.1 judges a sequential edit of a linear memory by its outcome (capability outputs unchanged, every
chunk still fitted at the end) and recomputes the editable dimension per chunk from the second moment
of the union of all keys seen so far, a different form from the student's running merge. 7.2
compares a Kronecker-product computation with the Gram-matrix identity
:math:`\langle\mathbf A_1\otimes\mathbf S_1,\mathbf A_2\otimes\mathbf S_2\rangle_F=
\langle\mathbf S_1,\mathbf S_2\rangle_F\langle\mathbf A_1,\mathbf A_2\rangle_F`, which forms no
Kronecker product. Derived in notebook ``07_sequential_editing``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from crispedit_lite.exercises.core import exercise

__all__ = ["check_sequential_memory", "check_mixture_error", "MEMORY"]

#: The settings of exercise 7.1.
MEMORY = {"gamma": 0.999, "steps": 1000, "lr": 0.5}


def _memory_problem(seed: int = 71):
    """A linear memory ``W0`` (6 x 12), capability keys of rank 4, three chunks of two unit-norm edits."""
    g = torch.Generator().manual_seed(seed)
    d_out, d_in = 6, 12
    W0 = torch.randn(d_out, d_in, generator=g, dtype=torch.float64) / d_in**0.5
    basis = torch.linalg.qr(torch.randn(d_in, 4, generator=g, dtype=torch.float64))[0]
    K_cap = basis @ torch.randn(4, 40, generator=g, dtype=torch.float64)
    K_cap = K_cap / K_cap.norm(dim=0, keepdim=True)
    chunks = []
    for _ in range(3):
        K = torch.randn(d_in, 2, generator=g, dtype=torch.float64)
        chunks.append(
            (K / K.norm(dim=0, keepdim=True), torch.randn(d_out, 2, generator=g, dtype=torch.float64))
        )
    return W0, K_cap, chunks


def _weighting_problem():
    """Isotropic capability keys and single-key chunks, where the merge's weights decide what is protected."""
    g = torch.Generator().manual_seed(72)
    basis = torch.linalg.qr(torch.randn(12, 4, generator=g, dtype=torch.float64))[0]
    K_cap = basis.repeat(1, 10)  # 40 unit keys, the same energy in each of 4 directions
    chunks = []
    for _ in range(3):
        k = torch.randn(12, 1, generator=g, dtype=torch.float64)
        chunks.append((k / k.norm(), torch.randn(6, 1, generator=g, dtype=torch.float64)))
    return torch.zeros(6, 12, dtype=torch.float64), K_cap, chunks, 0.97


def _probe_sequential(fn) -> dict[str, Any]:
    W0, K_cap, chunks = _memory_problem()
    out = fn(W0.clone(), K_cap.clone(), [(K.clone(), V.clone()) for K, V in chunks], **MEMORY)
    assert isinstance(out, (tuple, list)) and len(out) == 2, "return a tuple (W, editable_dims)"
    W, dims = out
    W0b, K_capb, chunks_b, gamma_b = _weighting_problem()
    _, dims_b = fn(
        W0b.clone(),
        K_capb.clone(),
        [(K.clone(), V.clone()) for K, V in chunks_b],
        gamma=gamma_b,
        steps=2,
        lr=MEMORY["lr"],
    )
    return {
        "W": torch.as_tensor(W).detach().double(),
        "dims": [int(d) for d in dims],
        "dims_weighting": [int(d) for d in dims_b],
    }


@exercise(
    "ex-07-1",
    probe=_probe_sequential,
    forbidden=[
        "merge_kfac",
        "KroneckerProjector",
        "InputNullspaceProjector",
        "alphaedit_projector",
        "energy_threshold",
    ],
    piece="the sequential loop, its merge and its projector",
)
def check_sequential_memory(obs: dict[str, Any]) -> None:
    r"""Exercise 7.1: ``sequential_edit(W0, K_cap, chunks, gamma, steps, lr)``, Alg. 2 on a linear memory.

    Returns the final weight and the editable input dimension used for each chunk. Judged on a
    random memory: the outputs on the capability keys are unchanged; every chunk's edits still hold
    at the end (later chunks did not overwrite earlier ones); and each chunk's editable dimension is
    what the energy rule gives on the second moment of all keys protected before it (the capability
    keys and the earlier chunks' keys, each key one token). Derived in notebook
    ``07_sequential_editing``.
    """
    from crispedit_lite.energy import energy_rank

    W0, K_cap, chunks = _memory_problem()
    W, dims = obs["W"], obs["dims"]
    assert W.shape == W0.shape, f"return the final weight, shape {tuple(W0.shape)}"
    dW = W - W0
    drift = float((dW @ K_cap).norm() / max(float(dW.norm()), 1e-12))
    assert drift < 1e-6, (
        f"the outputs on the capability keys moved (|dW K_cap| / |dW| = {drift:.2g}): the capability keys "
        "must be protected from the first chunk on"
    )
    assert len(dims) == len(chunks), f"give one editable dimension per chunk ({len(chunks)}), got {len(dims)}"
    _, K_capb, chunks_b, gamma_b = _weighting_problem()
    for kcap, chs, gamma, got in (
        (K_cap, chunks, MEMORY["gamma"], dims),
        (K_capb, chunks_b, gamma_b, obs["dims_weighting"]),
    ):
        keys = [kcap]
        for c, ((K, _), dim) in enumerate(zip(chs, got)):
            allk = torch.cat(keys, 1)
            M = allk @ allk.T / allk.shape[1]
            want = M.shape[0] - energy_rank(torch.linalg.eigvalsh(M), gamma)
            assert dim == want, (
                f"chunk {c + 1} (gamma = {gamma}): {dim} editable input directions, but the energy rule on "
                "the "
                f"second moment of the keys protected so far leaves {want}: merge each chunk's keys "
                "weighted by "
                "their count, like capability keys"
            )
            keys.append(K)
    for c, (K, V) in enumerate(chunks):
        err = float((W @ K - V).norm() / V.norm())
        assert err < 0.02, (
            f"after the last chunk the edits of chunk {c + 1} are off by a relative {err:.2f}"
            + (
                ": a later chunk overwrote them (are the edited keys protected after their chunk?)"
                if c < len(chunks) - 1
                else ": the last chunk was not fitted (steps, learning rate?)"
            )
        )


def _psd(d: int, g: torch.Generator) -> Tensor:
    x = torch.randn(d, 2 * d, generator=g, dtype=torch.float64)
    return x @ x.T / (2 * d)


def _gram_error(As: Sequence[Tensor], Ss: Sequence[Tensor], w: Sequence[float]) -> float:
    """The relative error from inner products of the factors alone (no Kronecker product formed)."""
    wt = torch.as_tensor(list(w), dtype=torch.float64)
    A = torch.stack(list(As))
    S = torch.stack(list(Ss))
    GA, GS = torch.einsum("aij,bij->ab", A, A), torch.einsum("aij,bij->ab", S, S)
    mix2 = float(wt @ (GA * GS) @ wt)
    Ab, Sb = torch.einsum("c,cij->ij", wt, A), torch.einsum("c,cij->ij", wt, S)
    cross = float(sum(wt[c] * (A[c] * Ab).sum() * (S[c] * Sb).sum() for c in range(len(wt))))
    bar2 = float((Ab * Ab).sum() * (Sb * Sb).sum())
    return max(mix2 - 2 * cross + bar2, 0.0) ** 0.5 / mix2**0.5


def _mixture_cases():
    g = torch.Generator().manual_seed(8)
    cases = []
    for d_in, d_out, w in ((3, 2, (0.7, 0.3)), (2, 3, (0.5, 0.25, 0.25)), (4, 2, (0.9, 0.05, 0.05))):
        cases.append(([_psd(d_in, g) for _ in w], [_psd(d_out, g) for _ in w], list(w)))
    A0 = _psd(3, g)
    cases.append(([A0, A0.clone()], [_psd(2, g), _psd(2, g)], [0.6, 0.4]))
    return cases


def _probe_mixture(fn) -> dict[str, Any]:
    return {
        "errors": [
            float(fn([a.clone() for a in As], [s.clone() for s in Ss], list(w)))
            for As, Ss, w in _mixture_cases()
        ]
    }


@exercise("ex-07-2", probe=_probe_mixture, forbidden=["kron_mixture_error"], piece="the Kronecker form")
def check_mixture_error(obs: dict[str, Any]) -> None:
    r"""Exercise 7.2: ``mixture_error(As, Ss, weights)``, the merge's relative Frobenius error.

    Compared with the same quantity computed from inner products of the factors alone (no
    Kronecker product formed), on random factors, including a case where all input factors are equal.
    Derived in notebook ``07_sequential_editing``.
    """
    for (As, Ss, w), got in zip(_mixture_cases(), obs["errors"]):
        want = _gram_error(As, Ss, w)
        uniform = _gram_error(As, Ss, [1.0 / len(w)] * len(w))
        if abs(got - uniform) < 1e-9 and abs(want - uniform) > 1e-6:
            raise AssertionError(f"for weights {w} the mixture and the merged factors must use the weights")
        assert abs(got - want) < 1e-8 * max(1.0, want) + 1e-10, (
            f"for weights {w}: got {got:.6g}, expected {want:.6g} (relative error: divide by the norm of the "
            "mixture)"
        )
