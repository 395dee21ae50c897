r"""Part I's picture of CrispEdit in two dimensions: a stiff and a flat direction, plain and projected steps.

The old task's loss near its minimum :math:`\boldsymbol\theta_0` is the quadratic
:math:`\mathcal L_{\rm old}(\boldsymbol\theta)=\tfrac12(\boldsymbol\theta-\boldsymbol\theta_0)^\top\mathbf H
(\boldsymbol\theta-\boldsymbol\theta_0)` with one *stiff* eigen-direction (large curvature
:math:`\lambda_{\rm stiff}`) and one *flat* one (:math:`\lambda_{\rm flat}\ll\lambda_{\rm stiff}`), the
two-dimensional case of CrispEdit eq. 2. The new task (the edit) pulls towards
:math:`\boldsymbol\theta^\star`,
:math:`\mathcal L_{\rm new}=\tfrac12\|\boldsymbol\theta-\boldsymbol\theta^\star\|^2`.
Plain gradient descent on :math:`\mathcal L_{\rm new}` walks straight to :math:`\boldsymbol\theta^\star` and
climbs the stiff wall of the old loss; projected gradient descent,
:math:`\boldsymbol\theta\leftarrow\boldsymbol\theta-\eta\,\mathbf P\nabla\mathcal L_{\rm new}` with
:math:`\mathbf P=\mathbf u_{\rm flat}\mathbf u_{\rm flat}^\top` (the projector onto the low-curvature
direction, :math:`\gamma` protecting the stiff one), moves only along the valley floor, where the old loss
rises by at most :math:`\tfrac12\lambda_{\rm flat}\|\Delta\boldsymbol\theta\|^2`. :func:`landscape_figure`
draws both paths over the old loss' contours, computed live.

Derived in notebook ``01_editing_as_constrained_optimization``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["Landscape", "gd_paths", "landscape_figure", "projected_direction"]


@dataclass(frozen=True)
class Landscape:
    r"""The old loss :math:`\tfrac12\boldsymbol\theta^\top\mathbf H\boldsymbol\theta` and the edit's target.

    ``H`` has the eigenvalues ``stiff`` and ``flat`` along ``u_stiff`` and ``u_flat`` (orthonormal,
    ``u_stiff`` at ``angle_deg`` from the first axis); the old minimum is at the origin and the new
    task's minimum at ``target``. Drawn in notebook ``01_editing_as_constrained_optimization``.
    """

    stiff: float = 8.0
    flat: float = 0.25
    angle_deg: float = 25.0
    target: tuple[float, float] = (1.6, 2.4)

    def __post_init__(self) -> None:
        if not self.stiff > self.flat > 0:
            raise ValueError(f"Landscape: need stiff > flat > 0, got stiff={self.stiff}, flat={self.flat}")

    @property
    def u_stiff(self) -> np.ndarray:
        """The unit eigenvector of the large eigenvalue ``stiff``."""
        a = math.radians(self.angle_deg)
        return np.array([math.cos(a), math.sin(a)])

    @property
    def u_flat(self) -> np.ndarray:
        """The unit eigenvector of the small eigenvalue ``flat``, orthogonal to :attr:`u_stiff`."""
        a = math.radians(self.angle_deg)
        return np.array([-math.sin(a), math.cos(a)])

    @property
    def H(self) -> np.ndarray:
        """The old loss' Hessian, ``stiff u_stiff u_stiff^T + flat u_flat u_flat^T``."""
        return (self.stiff * np.outer(self.u_stiff, self.u_stiff)
                + self.flat * np.outer(self.u_flat, self.u_flat))

    def old_loss(self, theta: np.ndarray) -> np.ndarray:
        r""":math:`\tfrac12\boldsymbol\theta^\top\mathbf H\boldsymbol\theta` for each row of ``theta``."""
        t = np.atleast_2d(theta)
        return 0.5 * np.einsum("ni,ij,nj->n", t, self.H, t)

    def new_loss(self, theta: np.ndarray) -> np.ndarray:
        r""":math:`\tfrac12\|\boldsymbol\theta-\boldsymbol\theta^\star\|^2` for each row of ``theta``."""
        t = np.atleast_2d(theta)
        return 0.5 * ((t - np.asarray(self.target)) ** 2).sum(1)

    def new_grad(self, theta: np.ndarray) -> np.ndarray:
        r"""The new task's gradient :math:`\boldsymbol\theta-\boldsymbol\theta^\star`."""
        return np.asarray(theta, dtype=float) - np.asarray(self.target)


def projected_direction(land: Landscape, grad: np.ndarray) -> np.ndarray:
    r"""The step without its stiff part: :math:`\mathbf P\mathbf g`.

    :math:`\mathbf P=\mathbf u_{\rm flat}\mathbf u_{\rm flat}^\top` projects onto the flat direction.
    Drawn in notebook ``01_editing_as_constrained_optimization``.
    """
    return land.u_flat * float(land.u_flat @ np.asarray(grad, dtype=float))


def gd_paths(land: Landscape, lr: float = 0.15, steps: int = 30) -> dict[str, np.ndarray]:
    """``{"plain": path, "projected": path}``: ``steps + 1`` points each, from the old minimum (the origin).

    Both descend the new task's loss with step size ``lr``; the projected path projects every gradient
    with :func:`projected_direction`. Drawn in notebook ``01_editing_as_constrained_optimization``.
    """
    if lr <= 0 or steps < 1:
        raise ValueError(f"gd_paths: need lr > 0 and steps >= 1, got lr={lr}, steps={steps}")
    out = {}
    for name in ("plain", "projected"):
        theta = np.zeros(2)
        path = [theta]
        for _ in range(steps):
            g = land.new_grad(theta)
            theta = theta - lr * (projected_direction(land, g) if name == "projected" else g)
            path.append(theta)
        out[name] = np.array(path)
    return out


def _arrow(ax, start, vec, color, label, lw=2.6, z=4):
    ax.annotate("", xy=start + vec, xytext=start, zorder=z,
                arrowprops={"arrowstyle": "-|>", "color": color, "lw": lw, "mutation_scale": 16,
                            "shrinkA": 0, "shrinkB": 0})
    ax.plot([], [], color=color, lw=lw, label=label)  # legend entry


def landscape_figure(land: Landscape | None = None, lr: float = 0.15, steps: int = 30):
    """The old loss' contours with both paths (left), and the old and new loss along them (right).

    Left: the stiff and flat directions, the edit's gradient and its projection, and the plain and
    projected paths from the old minimum. Colours: plain gradient descent is fine-tuning (FT), the
    projected one CrispEdit's step, the
    directions the *protected* and *editable* concepts of
    :data:`~crispedit_lite.teaching.plotting.OTHER_COLORS`.
    Derived in notebook ``01_editing_as_constrained_optimization``.
    """
    import matplotlib.pyplot as plt

    from crispedit_lite.teaching.plotting import legend_below, log_ticks, method_color

    land = land or Landscape()
    paths = gd_paths(land, lr, steps)
    ft, crisp = method_color("FT"), method_color("CrispEdit")
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10.5, 4.9), layout="constrained",
                                  gridspec_kw={"width_ratios": [1.15, 1]})
    target = np.asarray(land.target)
    lim = 1.25 * max(np.abs(np.concatenate([paths["plain"], paths["projected"]])).max(), np.abs(target).max())
    grid = np.linspace(-lim, lim, 241)
    xx, yy = np.meshgrid(grid, grid)
    zz = land.old_loss(np.stack([xx.ravel(), yy.ravel()], 1)).reshape(xx.shape)
    levels = np.array([0.05, 0.2, 0.5, 1, 2, 4, 8, 16]) * land.flat * lim ** 2 / 2
    ax.contour(xx, yy, zz, levels=levels, colors="#9a9a9a", linewidths=0.8, zorder=1)
    ax.plot(*paths["plain"].T, "o-", ms=3, lw=1.6, color=ft, zorder=3, label="plain gradient descent (FT)")
    ax.plot(*paths["projected"].T, "o-", ms=3, lw=1.6, color=crisp, zorder=3,
            label="projected gradient descent (CrispEdit)")
    scale = 0.55 * lim  # eigen-directions have no sign: drawn away from the paths
    away = lambda u: u if u @ target < 0 else -u  # noqa: E731
    _arrow(ax, np.zeros(2), scale * away(land.u_stiff), method_color("protected"),
           r"stiff direction $\mathbf{u}_{\rm stiff}$ (protected)")
    _arrow(ax, np.zeros(2), scale * away(land.u_flat), method_color("editable"),
           r"flat direction $\mathbf{u}_{\rm flat}$ (editable)")
    g = -land.new_grad(np.zeros(2))
    g = g / np.linalg.norm(g) * 0.8 * scale
    pg = projected_direction(land, g)
    _arrow(ax, np.zeros(2), g, "k", r"edit step $-\nabla\mathcal{L}_{\rm new}$", lw=1.6, z=5)
    ax.plot([g[0], pg[0]], [g[1], pg[1]], ls=":", color="k", lw=1, zorder=5)
    _arrow(ax, np.zeros(2), pg, crisp, r"its projection $-\mathbf{P}\nabla\mathcal{L}_{\rm new}$", lw=1.6,
           z=5)
    ax.plot(*target, marker="*", ms=14, color="k", ls="", zorder=6,
            label=r"new task's minimum $\theta^\star$")
    ax.plot(0, 0, marker="s", ms=7, color=method_color("base"), ls="", zorder=6,
            label=r"old minimum $\theta_0$ (the base model)")
    ax.set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal", xlabel=r"$\theta_1$", ylabel=r"$\theta_2$",
           title="contours of the old task's loss")
    steps_axis = np.arange(steps + 1)
    curves = []
    for name, color in (("plain", ft), ("projected", crisp)):
        for kind, fn, ls in (("old", land.old_loss, "-"), ("new", land.new_loss, "--")):
            y = fn(paths[name])
            ax2.plot(steps_axis, y, ls, color=color, lw=2 if kind == "old" else 1.6)
            curves.append((y[-1], f"{kind} {y[-1]:.2g}", color))
    floor = min(v for v, _, _ in curves if v > 0)
    ax2.set_yscale("symlog", linthresh=10 ** np.floor(np.log10(floor)), linscale=0.3)
    top = max(float(land.old_loss(paths["plain"]).max()), float(land.new_loss(paths["plain"]).max()))
    ax2.set(xlabel="gradient step", ylabel="loss (symlog scale)", title="old loss (solid), new loss (dashed)",
            xlim=(0, steps), ylim=(0, 2 * top))
    log_ticks(ax2, "y")
    for value, text, color in curves:  # final values beside the right frame, outside the data
        ax2.annotate(text, (steps, value), xytext=(4, 0), textcoords="offset points", va="center",
                     fontsize=8, color=color, annotation_clip=False)
    handles, labels = ax.get_legend_handles_labels()
    legend_below(fig, handles, labels, ncol=3)
    return fig
