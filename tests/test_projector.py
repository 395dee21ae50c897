"""Kronecker and input-null-space projectors against dense references (the energy rule: test_energy.py)."""

import pytest
import torch

from crispedit_lite.projector import (
    InputNullspaceProjector,
    KroneckerProjector,
    energy_rank,
    energy_threshold,
)

f64 = torch.float64


def random_psd(d, rank=None, seed=0, decay=1.0):
    g = torch.Generator().manual_seed(seed)
    rank = d if rank is None else rank
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=f64))
    ev = torch.zeros(d, dtype=f64)
    ev[:rank] = torch.rand(rank, generator=g, dtype=f64) * torch.logspace(0, -decay * 3, rank, dtype=f64)
    ev[:rank] += 1e-3
    return (q * ev) @ q.T


# ------------------------------------------------------------ dense references
def dense_reference(A, S, gamma):
    """Independent reference: eigendecompose the dense K-FAC block, apply eq. (3) on its spectrum."""
    K = torch.kron(S, A)  # row-major vec(W)
    ev, U = torch.linalg.eigh(K)
    ev = torch.where(ev > 1e-12 * ev.max(), ev, torch.zeros_like(ev))  # eigh rounding -> 0
    lam = energy_threshold(ev, gamma, "code")
    tol = 1e-6 * lam + 1e-12 * ev.max()
    keep = ev < lam - tol
    return U[:, keep] @ U[:, keep].T, lam


CASES = [
    # d_out, d_in, rank_S, rank_A
    (3, 4, None, None),
    (5, 2, None, None),
    (4, 6, 2, 3),  # rank-deficient factors
    (1, 5, None, None),
]


@pytest.mark.parametrize("d_out,d_in,rs,ra", CASES)
@pytest.mark.parametrize("gamma", [0.3, 0.7, 0.9, 0.99, 1.0])
def test_matrix_free_equals_dense_kronecker_projector(d_out, d_in, rs, ra, gamma):
    A = random_psd(d_in, ra, seed=d_in)
    S = random_psd(d_out, rs, seed=10 + d_out)
    proj = KroneckerProjector.from_factors(A, S, gamma, dtype=f64)
    P_ref, lam = dense_reference(A, S, gamma)
    assert proj.rule == "code"  # the default keeps eq. (3)'s guarantee on ties
    assert proj.threshold == pytest.approx(lam, rel=1e-8, abs=1e-14)
    torch.testing.assert_close(proj.dense(), P_ref, atol=1e-8, rtol=0)
    g = torch.Generator().manual_seed(3)
    for _ in range(3):
        G = torch.randn(d_out, d_in, generator=g, dtype=f64)
        torch.testing.assert_close(proj.project(G).reshape(-1), P_ref @ G.reshape(-1), atol=1e-8, rtol=0)


def test_ties_paper_rule_keeps_whole_eigenspaces():
    # exact ties: A = diag(3, 3, 1, 1), S = diag(2, 1): products 6 6 2 2 | 3 3 1 1
    A = torch.diag(torch.tensor([3.0, 3.0, 1.0, 1.0], dtype=f64))
    S = torch.diag(torch.tensor([2.0, 1.0], dtype=f64))
    # total 24; gamma = 0.3 -> k = 2 (6+6 = 12 >= 7.2)
    paper = KroneckerProjector.from_factors(A, S, 0.3, rule="paper", dtype=f64)
    code = KroneckerProjector.from_factors(A, S, 0.3, rule="code", dtype=f64)
    assert paper.rank == 2 and code.rank == 2
    # gamma = 0.6 -> 6+6+3 = 15 >= 14.4 -> k = 3, lambda_gamma = sigma_4 = 3 (tied with sigma_3)
    paper = KroneckerProjector.from_factors(A, S, 0.6, rule="paper", dtype=f64)
    code = KroneckerProjector.from_factors(A, S, 0.6, rule="code", dtype=f64)
    assert paper.rank == 2  # <= 3 is editable: both 3s stay editable, only the 6s protected
    assert code.rank == 4   # < 3 is editable: both 3s protected
    prods = torch.outer(code.eig_out, code.eig_in)
    # eq. (6) read literally protects less than gamma of the energy on this tie; the code rule does not
    assert prods[~paper.mask].sum() / prods.sum() < 0.6 <= prods[~code.mask].sum() / prods.sum()
    for proj in (paper, code):
        P = proj.dense()
        torch.testing.assert_close(P @ P, P)
        torch.testing.assert_close(P, P.T)
    # both are basis-independent: a rotation inside each tied eigenspace changes nothing
    R = torch.tensor([[0.6, -0.8], [0.8, 0.6]], dtype=f64)
    Q = torch.block_diag(R, R)
    rotated = KroneckerProjector.from_factors(Q @ A @ Q.T, S, 0.6, rule="paper", dtype=f64)
    Qk = torch.kron(torch.eye(2, dtype=f64), Q)
    torch.testing.assert_close(rotated.dense(), Qk @ paper.dense() @ Qk.T, atol=1e-10, rtol=0)


@pytest.mark.parametrize("gamma", [0.5, 0.9, 0.999])
def test_projector_properties(gamma):
    A, S = random_psd(7, seed=1), random_psd(4, seed=2)
    proj = KroneckerProjector.from_factors(A, S, gamma, dtype=f64)
    g = torch.Generator().manual_seed(0)
    G = torch.randn(4, 7, generator=g, dtype=f64)
    PG = proj.project(G)
    torch.testing.assert_close(proj.project(PG), PG)  # idempotent
    H = torch.randn(4, 7, generator=g, dtype=f64)
    # symmetric: <P G, H> = <G, P H>
    assert torch.allclose((PG * H).sum(), (G * proj.project(H)).sum())
    # the removed part is orthogonal to the kept part
    assert abs(((G - PG) * PG).sum()) < 1e-10
    # curvature bound: vec(D)^T (S kron A) vec(D) <= lambda_gamma ||D||^2 for D = P G
    K = torch.kron(S, A)
    d = PG.reshape(-1)
    assert d @ K @ d <= proj.threshold * (d @ d) * (1 + 1e-9)
    # and the protected mass is at least gamma of the trace
    protected = torch.outer(proj.eig_out, proj.eig_in)[~proj.mask].sum()
    assert protected >= gamma * torch.outer(proj.eig_out, proj.eig_in).sum() * (1 - 1e-12)
    assert proj.rank == energy_rank(torch.outer(proj.eig_out, proj.eig_in), gamma)
    assert 0 < proj.editable_fraction < 1


def test_null_space_preservation_exact_gamma_one():
    # rank-deficient A: with gamma = 1, every edit leaves the capability inputs' outputs unchanged
    g = torch.Generator().manual_seed(0)
    X = torch.randn(3, 6, generator=g, dtype=f64)  # 3 capability inputs in R^6
    A = X.T @ X / 3
    S = random_psd(4, seed=5)
    proj = KroneckerProjector.from_factors(A, S, 1.0, dtype=f64)
    D = proj.project(torch.randn(4, 6, generator=g, dtype=f64))
    assert (D @ X.T).abs().max() < 1e-10
    assert proj.editable_fraction == pytest.approx(3 / 6)


def _editable_share(proj, A, S):
    """Share of the curvature S (x) A left editable, measured in float64 in the projector's basis."""
    a = ((A @ proj.U_in.double()) * proj.U_in.double()).sum(0)
    s = ((S @ proj.U_out.double()) * proj.U_out.double()).sum(0)
    return float((proj.mask.double() * torch.outer(s, a)).sum() / (a.sum() * s.sum()))


def massive_activation_psd(d, seed, mass=1e4):
    """One massive input direction over a flat bulk in [0.1, 2], as LLM activations have."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=f64))
    ev = 0.1 + 1.9 * torch.rand(d, generator=g, dtype=f64)
    ev[0] = mass
    return (q * ev) @ q.T


@pytest.mark.parametrize("gamma", [0.99, 0.999])
def test_float32_eigh_keeps_the_energy_guarantee_near_gamma_one(gamma):
    # the bulk lies near float32 eigh's rounding level d * eps * max (0.6 here): an energy rule on the
    # raw float32 eigenvalues, floored there, counts a quarter of the bulk as zero and leaves it editable
    A, S = massive_activation_psd(512, seed=1), random_psd(64, seed=12)
    proj32 = KroneckerProjector.from_factors(A, S, gamma, eigh_dtype=torch.float32, dtype=f64)
    proj64 = KroneckerProjector.from_factors(A, S, gamma, eigh_dtype=f64, dtype=f64)
    assert _editable_share(proj32, A, S) <= 1 - gamma + 1e-9
    assert _editable_share(proj64, A, S) <= 1 - gamma + 1e-9
    # float32 does not over-protect either: the same editable fraction to within a few directions
    assert abs(proj32.editable_fraction - proj64.editable_fraction) < 1e-3
    # the old rule (raw float32 eigenvalues, floored at d * eps * max) breaks the guarantee here
    raw = []
    for m in (S, A):
        ev = torch.linalg.eigh(m.float())[0].double()
        raw.append(torch.where(ev > m.shape[0] * torch.finfo(torch.float32).eps * ev.max(), ev, 0))
    products = torch.outer(*raw)
    old = KroneckerProjector(U_in=proj32.U_in, U_out=proj32.U_out, eig_in=raw[1], eig_out=raw[0],
                             mask=products < energy_threshold(products, gamma), gamma=gamma, threshold=0.0)
    assert _editable_share(old, A, S) > 1.4 * (1 - gamma)


def test_fp32_projection_of_bf16_gradient():
    A, S = random_psd(5, seed=1), random_psd(3, seed=2)
    proj = KroneckerProjector.from_factors(A, S, 0.9)
    G = torch.randn(3, 5).to(torch.bfloat16)
    out = proj.project(G)
    assert out.dtype == torch.bfloat16
    ref = proj.dense().double() @ G.double().reshape(-1)
    torch.testing.assert_close(out.double().reshape(-1), ref, atol=2e-2, rtol=2e-2)


def test_transposed_conv1d_layout():
    A, S = random_psd(5, seed=1), random_psd(3, seed=2)
    p = KroneckerProjector.from_factors(A, S, 0.8, dtype=f64)
    pt = KroneckerProjector.from_factors(A, S, 0.8, dtype=f64, transposed=True)
    G = torch.randn(3, 5, dtype=f64)
    torch.testing.assert_close(pt.project(G.T), p.project(G).T)


def test_bad_inputs():
    A, S = random_psd(5), random_psd(3)
    with pytest.raises(ValueError, match="gamma"):
        KroneckerProjector.from_factors(A, S, 1.2)
    with pytest.raises(ValueError, match="square"):
        KroneckerProjector.from_factors(torch.ones(3, 4), S, 0.5)
    with pytest.raises(ValueError, match="NaN"):
        KroneckerProjector.from_factors(A, S * float("nan"), 0.5)
    proj = KroneckerProjector.from_factors(A, S, 0.5)
    with pytest.raises(ValueError, match="shape"):
        proj.project(torch.randn(5, 3))
    big = KroneckerProjector.from_factors(random_psd(80), random_psd(60), 0.5)
    with pytest.raises(ValueError, match="refused"):
        big.dense()
    with pytest.raises(ValueError, match="exactly one"):
        InputNullspaceProjector.from_factor(A, 3)


# ------------------------------------------------------- input null space case
@pytest.mark.parametrize("gamma", [0.5, 0.9, 1.0])
def test_input_nullspace_is_kronecker_with_identity_output_factor(gamma):
    A = random_psd(6, rank=4, seed=3)
    inp = InputNullspaceProjector.from_factor(A, d_out=3, gamma=gamma, dtype=f64)
    kron = KroneckerProjector.from_factors(A, torch.eye(3, dtype=f64), gamma, dtype=f64)
    torch.testing.assert_close(inp.dense(), kron.dense(), atol=1e-10, rtol=0)
    G = torch.randn(3, 6, dtype=f64)
    torch.testing.assert_close(inp.project(G), kron.project(G), atol=1e-10, rtol=0)
    assert inp.rank == kron.rank
    assert inp.editable_fraction == pytest.approx(kron.editable_fraction)


def test_input_nullspace_absolute_threshold():
    A = torch.diag(torch.tensor([5.0, 1e-3, 2.0, 1e-5], dtype=f64))
    inp = InputNullspaceProjector.from_factor(A, d_out=2, threshold=1e-2, dtype=f64)
    G = torch.ones(2, 4, dtype=f64)
    out = inp.project(G)
    torch.testing.assert_close(out, torch.tensor([[0, 1, 0, 1], [0, 1, 0, 1]], dtype=f64))
