r"""Toy models and data for Part I: a two-task split of scikit-learn's digits, small MLPs, training functions.

The paper's toy experiment (CrispEdit Fig. 3, Ikram et al. 2026) pre-trains LeNet-5 on MNIST and then
fine-tunes one layer on Fashion-MNIST. Neither data set can be downloaded offline, so Part I uses the
8x8 digits that ship with scikit-learn, split into two tasks that share one classifier head: the
*old* task (capability, :math:`\mathcal D_{\rm cap}`), by default digits 0-4, and the *new* task,
by default digits 5-9, whose labels are re-indexed to :math:`0..4` so that a new task reuses the
same output units, as Fashion-MNIST reuses MNIST's ten outputs.

:class:`EigenProjector` is the dense counterpart of :class:`~crispedit_lite.projector.KroneckerProjector`
for curvature matrices small enough to eigendecompose whole (exact Hessian or Gauss-Newton of one
toy layer); it reuses the energy rule of :mod:`crispedit_lite.projector`.

Derived in notebooks ``01_editing_as_constrained_optimization`` and ``03_low_curvature_subspace``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from crispedit_lite.energy import Rule, _check_gamma, energy_mask

__all__ = [
    "DigitsTasks",
    "load_digits_tasks",
    "MLP",
    "train_classifier",
    "accuracy",
    "mean_loss",
    "EigenProjector",
]


@dataclass
class DigitsTasks:
    """Train/test tensors of the two digits tasks; labels are indices into ``old_digits``/``new_digits``.

    Listed on the book page ``api``.
    """

    old_train: tuple[Tensor, Tensor]
    old_test: tuple[Tensor, Tensor]
    new_train: tuple[Tensor, Tensor]
    new_test: tuple[Tensor, Tensor]
    old_digits: tuple[int, ...]
    new_digits: tuple[int, ...]

    @property
    def n_classes(self) -> int:
        """Width of the shared classifier head."""
        return max(len(self.old_digits), len(self.new_digits))


def load_digits_tasks(
    old_digits: Sequence[int] = (0, 1, 2, 3, 4),
    new_digits: Sequence[int] = (5, 6, 7, 8, 9),
    test_fraction: float = 0.3,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> DigitsTasks:
    r"""Split scikit-learn's 1,797 digits (8x8, 64 features scaled to :math:`[0,1]`) into two tasks.

    Each task keeps its own digits, relabelled :math:`0,1,\dots` in the order given, and is split
    stratified into train/test with ``test_fraction``. Offline stand-in for the paper's
    MNIST -> Fashion-MNIST toy. Derived in notebook ``01_editing_as_constrained_optimization``.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    old_digits, new_digits = tuple(int(d) for d in old_digits), tuple(int(d) for d in new_digits)
    if set(old_digits) & set(new_digits):
        raise ValueError(f"old_digits {old_digits} and new_digits {new_digits} overlap")
    if not old_digits or not new_digits or not set(old_digits + new_digits) <= set(range(10)):
        raise ValueError("old_digits and new_digits must be non-empty subsets of 0..9")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    data = load_digits()
    x_all = torch.tensor(data.data / 16.0, dtype=dtype)
    y_all = torch.tensor(data.target)

    def split(digits: tuple[int, ...]) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
        keep = torch.isin(y_all, torch.tensor(digits))
        x, y = x_all[keep], y_all[keep]
        y = torch.tensor([digits.index(int(v)) for v in y])
        idx = torch.arange(len(y)).numpy()
        tr, te = train_test_split(idx, test_size=test_fraction, random_state=seed, stratify=y.numpy())
        tr, te = torch.as_tensor(tr), torch.as_tensor(te)
        return (x[tr], y[tr]), (x[te], y[te])

    old_train, old_test = split(old_digits)
    new_train, new_test = split(new_digits)
    return DigitsTasks(old_train, old_test, new_train, new_test, old_digits, new_digits)


class MLP(nn.Module):
    r"""Fully connected net :math:`f(x) = W_L\,\sigma(\cdots\sigma(W_1 x + b_1)\cdots) + b_L` (logits).

    Layers are named ``fc1 .. fcL`` (so ``"fc2.weight"`` names one matrix). ``tanh`` is the default
    activation because it has curvature: with ReLU the logits are piecewise *linear* in any single
    layer's weight, and that layer's loss Hessian would equal its Gauss-Newton matrix.
    Derived in notebook ``01_editing_as_constrained_optimization``.
    """

    def __init__(self, sizes: Sequence[int] = (64, 32, 24, 5), activation: str = "tanh") -> None:
        super().__init__()
        if len(sizes) < 2:
            raise ValueError(f"MLP sizes need at least (d_in, d_out), got {tuple(sizes)}")
        acts = {"tanh": nn.Tanh, "relu": nn.ReLU, "gelu": nn.GELU}
        if activation not in acts:
            raise ValueError(f"activation must be one of {sorted(acts)}, got {activation!r}")
        self.sizes = tuple(int(s) for s in sizes)
        self.act = acts[activation]()
        self.n_layers = len(sizes) - 1
        for i in range(self.n_layers):
            setattr(self, f"fc{i + 1}", nn.Linear(sizes[i], sizes[i + 1]))

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        for i in range(1, self.n_layers + 1):
            x = getattr(self, f"fc{i}")(x)
            if i < self.n_layers:
                x = self.act(x)
        return x


def _batches(n: int, batch_size: int, generator: torch.Generator) -> Iterable[Tensor]:
    perm = torch.randperm(n, generator=generator)
    return perm.split(batch_size)


def train_classifier(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    epochs: int,
    lr: float = 0.1,
    batch_size: int = 32,
    seed: int = 0,
    optimizer: torch.optim.Optimizer | None = None,
    momentum: float = 0.9,
) -> list[float]:
    r"""Minimise the mean cross-entropy :math:`\frac1n\sum_i \ell(f_\theta(x_i), y_i)` by minibatch steps.

    Args:
        model: the network (trained in place).
        x, y: inputs and class ids.
        epochs: passes over the data, each in a fresh order drawn from ``seed``.
        lr, momentum: of the default optimiser, SGD on all parameters.
        batch_size: examples per step.
        seed: seeds the shuffling.
        optimizer: any optimiser already bound to the parameters to train (e.g. a
            :class:`~crispedit_lite.optim.ProjectedSGD` on one layer); overrides ``lr``/``momentum``.

    Returns:
        The mean training loss of each epoch. Derived in notebook ``01_editing_as_constrained_optimization``.
    """
    if epochs < 0 or batch_size < 1:
        raise ValueError(f"need epochs >= 0 and batch_size >= 1, got {epochs}, {batch_size}")
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} rows but y has {len(y)}")
    if optimizer is None:
        optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    gen = torch.Generator().manual_seed(seed)
    loss_fn = nn.CrossEntropyLoss()
    history = []
    model.train()
    for _ in range(epochs):
        total = 0.0
        for idx in _batches(len(y), batch_size, gen):
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(x[idx]), y[idx])
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(idx)
        history.append(total / len(y))
    model.eval()
    return history


@torch.no_grad()
def accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    """Fraction of ``x`` whose arg-max logit is ``y``.

    Derived in notebook ``01_editing_as_constrained_optimization``.
    """
    model.eval()
    return float((model(x).argmax(-1) == y).float().mean())


@torch.no_grad()
def mean_loss(model: nn.Module, x: Tensor, y: Tensor) -> float:
    """Mean cross-entropy of ``model`` on ``(x, y)``.

    Derived in notebook ``02_bregman_to_gauss_newton``.
    """
    model.eval()
    return float(nn.functional.cross_entropy(model(x), y))


@dataclass
class EigenProjector:
    r"""Dense projector :math:`\mathbf P_\gamma=\mathbf U_{>k}\mathbf U_{>k}^\top` from a full curvature.

    For a symmetric ``(p, p)`` curvature :math:`\mathbf M=\mathbf U\Sigma\mathbf U^\top` of one weight
    (row-major ``vec``), the energy rule (CrispEdit eq. 3) protects the top-:math:`k` eigenvectors;
    ``project`` maps a weight gradient :math:`\mathbf G` to :math:`\mathrm{vec}^{-1}(\mathbf P_\gamma
    \mathrm{vec}\,\mathbf G)`. Negative eigenvalues (an indefinite Hessian) are clamped to zero by the
    energy rule, so those directions are editable. Toy scale only (:math:`O(p^2)` memory).

    Attributes:
        U0: ``(p, p - k)`` editable eigenvectors. eigenvalues: all eigenvalues (descending).
        weight_shape: the shape of the weight it projects. gamma, threshold, rule: as in the energy rule.

    Derived in notebook ``03_low_curvature_subspace``.
    """

    U0: Tensor
    eigenvalues: Tensor
    weight_shape: tuple[int, ...]
    gamma: float
    threshold: float
    rule: Rule = "code"

    @classmethod
    def from_matrix(
        cls,
        M: Tensor,
        weight_shape: Sequence[int],
        gamma: float,
        *,
        rule: Rule = "code",
        dtype: torch.dtype = torch.float32,
        rtol: float = 1e-9,
    ) -> EigenProjector:
        """Eigendecompose ``M`` (in float64) and keep the eigenvectors outside the top-energy set.

        Derived in notebook ``03_low_curvature_subspace``.
        """
        gamma = _check_gamma(gamma)
        p = 1
        for s in weight_shape:
            p *= int(s)
        if M.ndim != 2 or M.shape != (p, p):
            raise ValueError(f"curvature of shape {tuple(M.shape)} does not match a weight of "
                             f"shape {tuple(weight_shape)} ({p} entries)")
        if not torch.isfinite(M).all():
            raise ValueError("curvature matrix contains NaN or Inf")
        m = M.detach().to(torch.float64)
        evals, evecs = torch.linalg.eigh((m + m.T) / 2)
        evals, evecs = evals.flip(0), evecs.flip(1)  # descending
        keep, cut = energy_mask(evals, gamma, rule, rtol)
        return cls(U0=evecs[:, keep].to(dtype), eigenvalues=evals, weight_shape=tuple(weight_shape),
                   gamma=gamma, threshold=cut, rule=rule)

    @property
    def rank(self) -> int:
        """Number of protected eigen-directions."""
        return self.U0.shape[0] - self.U0.shape[1]

    @property
    def editable_fraction(self) -> float:
        """Fraction of the :math:`p` directions left editable."""
        return self.U0.shape[1] / self.U0.shape[0]

    def project(self, G: Tensor) -> Tensor:
        r"""Return :math:`\mathrm{vec}^{-1}(\mathbf U_0\mathbf U_0^\top\mathrm{vec}\,\mathbf G)`."""
        if tuple(G.shape) != self.weight_shape:
            raise ValueError(f"gradient of shape {tuple(G.shape)} given to a projector for "
                             f"{self.weight_shape}")
        g = G.reshape(-1).to(self.U0.dtype)
        return (self.U0 @ (self.U0.T @ g)).reshape(G.shape).to(G.dtype)

    def dense(self) -> Tensor:
        """The explicit ``(p, p)`` projector."""
        return self.U0 @ self.U0.T
