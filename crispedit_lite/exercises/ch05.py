r"""Graders for the exercises of notebook ``05_matrix_free_projector`` (and the capstone of Part I).

The judges check defining properties of the energy rule's mask (5.1), compare the student's
matrix-free projector with a dense projector built from an ``eigh`` of the full Kronecker product
and check idempotence, symmetry and annihilation where no dense matrix fits (5.2), and rebuild the
Part I toy themselves to measure the capstone's edit (5.3). Derived in notebook
``05_matrix_free_projector``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from crispedit_lite.exercises.core import exercise

__all__ = ["check_energy_mask", "check_matrix_free_projector", "check_crispedit_from_scratch"]

_LIBRARY_RULE = [
    "energy_rank",
    "energy_threshold",
    "KroneckerProjector",
    "InputNullspaceProjector",
    "EigenProjector",
    "_editable",
    "from_factors",
    "from_kfac",
]


def _wishart(d: int, g: torch.Generator, rank: int | None = None) -> Tensor:
    x = torch.randn(d, rank or 2 * d, generator=g, dtype=torch.float64)
    return x @ x.T / x.shape[1]


def _mask_cases() -> list[tuple[Tensor, Tensor, float]]:
    g = torch.Generator().manual_seed(51)
    cases = [
        (
            torch.tensor([2.0, 1.0], dtype=torch.float64),
            torch.tensor([3.0, 1.0, 1.0], dtype=torch.float64),
            0.7,
        )
    ]  # chapter 5.3's ties: products 6, 3, 2, 2, 1, 1
    cases.append(
        (
            torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64),
            torch.tensor([2.0, 2.0], dtype=torch.float64),
            0.5,
        )
    )  # every product tied
    cases.append(
        (
            torch.tensor([3.0, -2.0, 1.0], dtype=torch.float64),  # negative rounding in both factors:
            torch.tensor([-3.0, 4.0, 0.5, 1e-3], dtype=torch.float64),
            0.9,
        )
    )  # (-2)(-3) is no curvature
    cases.append(
        (torch.zeros(2, dtype=torch.float64), torch.ones(3, dtype=torch.float64), 0.9)
    )  # no curvature
    for gamma in (0.5, 0.9, 0.99, 1.0):
        cases.append(
            (
                torch.rand(7, generator=g, dtype=torch.float64) ** 3,
                torch.rand(9, generator=g, dtype=torch.float64) ** 3,
                gamma,
            )
        )
    return cases


def _probe_energy_mask(fn) -> dict[str, Any]:
    masks = []
    for eo, ei, gamma in _mask_cases():
        m = fn(eo.clone(), ei.clone(), gamma)
        masks.append(torch.as_tensor(m))
    return {"masks": masks}


@exercise(
    "ex-05-1", probe=_probe_energy_mask, forbidden=_LIBRARY_RULE, piece="the energy rule over the products"
)
def check_energy_mask(obs: dict[str, Any]) -> None:
    r"""Exercise 5.1: ``energy_mask(eig_out, eig_in, gamma)``: which Kronecker directions are editable.

    Judged from the rule's defining properties on hand-made and random spectra (ties, negative
    rounding errors in both factors, no curvature at all, :math:`\gamma=1`): a boolean
    ``(d_out, d_in)`` mask; the protected products hold at least :math:`\gamma` of the curvature;
    every protected product is larger than every editable one; and no smaller set does it (dropping
    the smallest protected products leaves less than :math:`\gamma`). Derived in notebook
    ``05_matrix_free_projector``.
    """
    for (eo, ei, gamma), mask in zip(_mask_cases(), obs["masks"]):
        try:
            _judge_mask(eo, ei, gamma, mask)
        except AssertionError as err:
            if (eo < 0).any() or (ei < 0).any():
                raise AssertionError(
                    f"{err} (the factors have negative eigenvalues here: rounding errors, no curvature)"
                ) from None
            raise


def _judge_mask(eo: Tensor, ei: Tensor, gamma: float, mask: Tensor) -> None:
    where = (
        f"eigenvalues {[round(v, 3) for v in eo.tolist()[:4]]} x {[round(v, 3) for v in ei.tolist()[:4]]}, "
        f"gamma = {gamma}"
    )
    assert mask.dtype == torch.bool, f"return a boolean mask, got dtype {mask.dtype}"
    assert tuple(mask.shape) == (len(eo), len(ei)), (
        f"the mask has one entry per pair (output direction i, input direction j): shape "
        f"{(len(eo), len(ei))}, got {tuple(mask.shape)}"
    )
    prods = torch.outer(eo.clamp_min(0), ei.clamp_min(0))
    total = float(prods.sum())
    if total == 0:
        assert bool(mask.all()), f"{where}: with no curvature every direction is editable"
        return
    raw = torch.outer(eo, ei)
    prot, edit = prods[~mask], prods[mask]
    if bool(((eo < 0).any() and (ei < 0).any())) and (~mask & (raw > 0) & (prods == 0)).any():
        raise AssertionError(
            f"{where}: a product of two negative eigenvalues is protected; negative "
            "eigenvalues of a PSD factor are rounding, not curvature"
        )
    assert float(prot.sum()) >= gamma * total * (1 - 1e-12), (
        f"{where}: the protected directions hold {float(prot.sum()) / total:.4f} of the curvature, less "
        "than gamma (is True the editable side? are products equal to the cut protected with it?)"
    )
    if len(prot) and len(edit):
        assert float(edit.max()) < float(prot.min()) * (1 - 1e-9), (
            f"{where}: an editable direction has at least the curvature of a protected one (largest "
            f"editable {float(edit.max()):.4g}, smallest protected {float(prot.min()):.4g}); equal "
            "products must fall on the same side, the protected one"
        )
    if len(prot):
        cut = float(prot.min())
        above = float(prot[prot > cut * (1 + 1e-9)].sum())
        assert above < gamma * total * (1 + 1e-12) or cut == 0, (
            f"{where}: fewer protected directions would already hold gamma of the curvature; protect "
            "the fewest"
        )


def _projector_cases() -> dict[str, list]:
    g = torch.Generator().manual_seed(52)
    small = []
    for d_out, d_in, gamma in ((4, 5, 0.9), (6, 8, 0.7), (3, 3, 0.99)):
        small.append(
            (
                _wishart(d_in, g),
                _wishart(d_out, g, rank=2),
                gamma,
                [torch.randn(d_out, d_in, generator=g, dtype=torch.float64) for _ in range(2)],
            )
        )
    ties = (
        torch.diag(torch.tensor([3.0, 1.0, 1.0], dtype=torch.float64)),
        torch.diag(torch.tensor([2.0, 1.0], dtype=torch.float64)),
        0.7,
        [torch.randn(2, 3, generator=g, dtype=torch.float64)],
    )
    small.append(ties)
    d_out, d_in = 300, 400  # a dense projector would be 120000 x 120000 (115 GB in float64)
    large = (
        _wishart(d_in, g, rank=50),
        _wishart(d_out, g, rank=30),
        0.9,
        [torch.randn(d_out, d_in, generator=g, dtype=torch.float64) for _ in range(2)],
    )
    return {"small": small, "large": large}


def _probe_projector(fn) -> dict[str, Any]:
    cases = _projector_cases()
    small = []
    for A, S, gamma, Gs in cases["small"]:
        project = fn(A.clone(), S.clone(), gamma)
        small.append([torch.as_tensor(project(G.clone())).detach().double() for G in Gs])
    A, S, gamma, (G, H) = cases["large"]
    project = fn(A.clone(), S.clone(), gamma)
    PG = torch.as_tensor(project(G.clone())).detach().double()
    return {
        "small": small,
        "PG": PG,
        "PPG": torch.as_tensor(project(PG.clone())).detach().double(),
        "PH": torch.as_tensor(project(H.clone())).detach().double(),
    }


def _dense_projector(A: Tensor, S: Tensor, gamma: float) -> Tensor:
    """Independent reference: eigh of the explicit kron(S, A), the energy rule on its spectrum."""
    from crispedit_lite.energy import energy_threshold

    evals, evecs = torch.linalg.eigh(torch.kron(S, A))
    evals = evals.clamp_min(0)
    cut = energy_threshold(evals, gamma, "code")
    keep = evals < cut * (1 - 1e-9) if cut != float("inf") else torch.ones_like(evals, dtype=torch.bool)
    U = evecs[:, keep]
    return U @ U.T


@exercise(
    "ex-05-2", probe=_probe_projector, forbidden=_LIBRARY_RULE + ["kron"], piece="the matrix-free projector"
)
def check_matrix_free_projector(obs: dict[str, Any]) -> None:
    r"""Exercise 5.2: ``matrix_free_projector(A, S, gamma)`` returns ``project(G)``, CrispEdit's projection.

    On small random factors (and chapter 5.3's ties) ``project(G)`` must equal the dense projector
    obtained from an ``eigh`` of the explicit ``torch.kron(S, A)`` and the energy rule (code rule)
    applied to ``vec(G)``; on a ``300 x 400`` layer, whose dense projector would not fit in memory,
    it must be idempotent and symmetric and remove the top Kronecker direction. No Kronecker product
    may be formed. Derived in notebook ``05_matrix_free_projector``.
    """
    cases = _projector_cases()
    for (A, S, gamma, Gs), outs in zip(cases["small"], obs["small"]):
        P = _dense_projector(A, S, gamma)
        for G, out in zip(Gs, outs):
            assert out.shape == G.shape, (
                f"project(G) must have G's shape {tuple(G.shape)}, got {tuple(out.shape)}"
            )
            want = (P @ G.reshape(-1)).reshape(G.shape)
            err = float((out - want).norm() / max(float(want.norm()), 1e-12))
            assert err < 1e-8, (
                f"for a ({G.shape[0]}, {G.shape[1]}) layer at gamma = {gamma}, project(G) differs from the "
                "dense "
                f"projector by a relative {err:.2g} (check the order of U_out, U_in and the mask's "
                "orientation)"
            )
    A, S, gamma, (G, H) = cases["large"]
    PG, PPG, PH = obs["PG"], obs["PPG"], obs["PH"]
    assert PG.shape == G.shape, f"project(G) must keep the shape {tuple(G.shape)}"
    assert float((PPG - PG).norm()) < 1e-8 * float(PG.norm()), "projecting twice must change nothing"
    lhs, rhs = float((PG * H).sum()), float((G * PH).sum())
    assert abs(lhs - rhs) < 1e-8 * float(G.norm() * H.norm()), (
        "the projection must be symmetric: <P G, H> = <G, P H>"
    )
    u = torch.linalg.eigh(S).eigenvectors[:, -1]
    v = torch.linalg.eigh(A).eigenvectors[:, -1]
    top = float((PG * torch.outer(u, v)).sum())
    assert abs(top) < 1e-8 * float(G.norm()), "the direction of largest curvature must be removed"
    assert float(PG.norm()) > 0.1 * float(G.norm()), (
        "almost nothing is left: is True the editable side of the mask?"
    )


def _toy(seed: int = 0, n_edits: int = 10):
    from crispedit_lite.teaching.toy import MLP, load_digits_tasks, train_classifier

    tasks = load_digits_tasks(seed=seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        base = MLP((64, 32, 24, tasks.n_classes))
        train_classifier(base, *tasks.old_train, epochs=10, lr=0.05, seed=seed)
    pick = torch.randperm(len(tasks.new_train[1]), generator=torch.Generator().manual_seed(seed))[:n_edits]
    return tasks, base, tasks.new_train[0][pick], tasks.new_train[1][pick]


CAPSTONE = {"gamma": 0.99, "steps": 200, "lr": 0.05}


def _probe_from_scratch(fn) -> dict[str, Any]:
    import copy

    tasks, base, x_edit, y_edit = _toy()
    delta = fn(copy.deepcopy(base), *tasks.old_train, x_edit, y_edit, **CAPSTONE)
    return {"delta": torch.as_tensor(delta).detach().to(torch.float32)}


@exercise(
    "ex-05-3",
    probe=_probe_from_scratch,
    forbidden=[
        "collect_kfac",
        "accumulate_kfac",
        "gauss_newton_matrix",
        "ProjectedSGD",
        "ProjectedAdam",
        "EigenProjector",
        *_LIBRARY_RULE,
    ],
    piece="every piece of CrispEdit",
)
def check_crispedit_from_scratch(obs: dict[str, Any]) -> None:
    r"""Exercise 5.3 (capstone of Part I): CrispEdit from scratch on the digits toy.

    ``crispedit_from_scratch(base, x_cap, y_cap, x_edit, y_edit, gamma, steps, lr)`` returns the
    change of ``fc2.weight``. The judge rebuilds the toy (same seeds), applies the change and
    requires: every edit right; the change inside the editable subspace of the K-FAC factors of
    ``fc2`` (data labels, mean cross-entropy) at ``gamma``, to rounding; and a KL to the base model on
    the old task's test inputs at most a fifth of that of the same optimiser without projection.
    Derived in notebook ``05_matrix_free_projector``.
    """
    import copy

    import torch.nn.functional as F

    from crispedit_lite.curvature import softmax_kl
    from crispedit_lite.kfac import collect_kfac
    from crispedit_lite.projector import KroneckerProjector
    from crispedit_lite.teaching.toy import accuracy

    tasks, base, x_edit, y_edit = _toy()
    delta = obs["delta"]
    W = base.fc2.weight
    assert tuple(delta.shape) == tuple(W.shape), f"return the change of fc2.weight, shape {tuple(W.shape)}"
    assert float(delta.norm()) > 0, "the weights did not change"
    f = collect_kfac(base, ["fc2"], [tasks.old_train], labels="true", progress=False)["fc2"]
    P = KroneckerProjector.from_kfac(f, CAPSTONE["gamma"], dtype=torch.float64)
    d64 = delta.double()
    leak = float((P.project(d64) - d64).norm() / d64.norm())
    assert leak < 1e-4, (
        f"{leak:.2%} of the change lies outside the editable subspace of fc2's K-FAC factors (data labels, "
        "mean cross-entropy over the capability set): check the factors, the mask's side and that every step "
        "is projected"
    )
    edited = copy.deepcopy(base)
    with torch.no_grad():
        edited.fc2.weight.add_(delta)
    x_old = tasks.old_test[0]
    acc = accuracy(edited, x_edit, y_edit)
    assert acc == 1.0, f"only {acc:.0%} of the edits are right after your edit"
    ft = copy.deepcopy(base)
    for p in ft.parameters():
        p.requires_grad_(False)
    ft.fc2.weight.requires_grad_(True)
    opt = torch.optim.SGD([ft.fc2.weight], lr=CAPSTONE["lr"], momentum=0.9)
    for _ in range(CAPSTONE["steps"]):
        opt.zero_grad()
        F.cross_entropy(ft(x_edit), y_edit).backward()
        opt.step()
    with torch.no_grad():
        kl, kl_ft = float(softmax_kl(base(x_old), edited(x_old))), float(softmax_kl(base(x_old), ft(x_old)))
    assert kl <= 0.2 * kl_ft, (
        f"KL to the base model on old-task inputs {kl:.3f} is more than a fifth of plain fine-tuning's "
        f"{kl_ft:.3f}"
    )
