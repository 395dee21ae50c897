r"""Conceptual diagrams of the book: K-FAC hooks, the Kronecker mask, CrispEdit-Seq, the reproductions.

Each public function draws one figure with matplotlib and returns it; :func:`save_all` writes them as
SVG (``python -m crispedit_lite.teaching.diagrams [OUT_DIR]``, default ``book/figures``). The book shows them
on the page ``book/diagrams`` and the chapter that derives each one. The mask diagram is computed,
not drawn by hand: its mask and energy curve come from :func:`crispedit_lite.energy.energy_mask` and
:func:`~crispedit_lite.energy.energy_curve` (CrispEdit eq. 3 with the strict rule,
:math:`M_{ij}=\mathbb 1[\lambda^{\rm out}_i\lambda^{\rm in}_j<\lambda_\gamma]`). Protected and editable
cells, and the three label choices of K-FAC, have the concept colours of
:data:`~crispedit_lite.teaching.plotting.OTHER_COLORS`, as in every figure of the book.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

from crispedit_lite.atomic import atomic_path
from crispedit_lite.energy import energy_curve, energy_mask
from crispedit_lite.teaching.plotting import OTHER_COLORS

__all__ = ["DIAGRAMS", "crispedit_seq_diagram", "kfac_hooks_diagram", "kronecker_mask_diagram",
           "reproduction_diagram", "save_all"]

_BLUE, _ORANGE, _GREEN, _GREY, _RED = "#cfe2f3", "#fde2c4", "#d9ead3", "#eeeeee", "#f4cccc"
_FS = 10.5


def _canvas(width: float, height: float) -> tuple[Figure, plt.Axes]:
    fig = plt.figure(figsize=(width, height), dpi=150, layout="none")  # placed by hand
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.axis("off")
    return fig, ax


def _box(ax, x: float, y: float, w: float, h: float, text: str, color: str = _BLUE, fs: float = _FS):
    """A rounded box with its lower-left corner at (x, y) and centred text."""
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.02,rounding_size=0.12",
                                fc=color, ec="#444444", lw=1.0))
    ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=fs, linespacing=1.35)


def _arrow(ax, p, q, text: str = "", dashed: bool = False, offset=(0.0, 0.18), color: str = "#333333"):
    ax.add_patch(FancyArrowPatch(p, q, arrowstyle="-|>", mutation_scale=13, lw=1.3, color=color,
                                 linestyle=(0, (4, 3)) if dashed else "-", shrinkA=0, shrinkB=0))
    if text:
        mid = ((p[0] + q[0]) / 2 + offset[0], (p[1] + q[1]) / 2 + offset[1])
        ax.text(*mid, text, ha="center", va="center", fontsize=_FS, color=color)


def kfac_hooks_diagram() -> Figure:
    r"""Part I: hooks catch :math:`\mathbf a` and :math:`\mathbf g`, and K-FAC averages them.

    A forward hook on the layer's input records :math:`\mathbf a_t`, a backward hook on its output
    records :math:`\mathbf g_t=\partial\ell/\partial\mathbf s_t`; the factors are
    :math:`\mathbf A=\mathbb E[\mathbf a\mathbf a^\top]`, :math:`\mathbf S=\mathbb E[\mathbf g\mathbf
    g^\top]` and :math:`\mathbf G_{\mathbf W}\approx\mathbf A\otimes\mathbf S` (Martens & Grosse
    2015). Derived in notebook ``04_kfac_step_by_step``; shown on the page ``book/diagrams``.
    """
    fig, ax = _canvas(11.0, 5.4)
    top = 3.9
    _box(ax, 0.2, top, 2.0, 1.0, "earlier layers", _GREY)
    _box(ax, 4.0, top, 2.6, 1.0, "linear layer $\\mathbf{W}$\n$\\mathbf{s}_t=\\mathbf{W}\\mathbf{a}_t$")
    _box(ax, 8.0, top, 1.6, 1.0, "later\nlayers", _GREY)
    _box(ax, 10.0, top, 0.8, 1.0, "loss\n$\\ell$", _GREY)
    fwd, bwd = top + 0.72, top + 0.28
    _arrow(ax, (2.2, fwd), (4.0, fwd), "input $\\mathbf{a}_t$")
    _arrow(ax, (6.6, fwd), (8.0, fwd), "output $\\mathbf{s}_t$")
    _arrow(ax, (9.6, fwd), (10.0, fwd))
    _arrow(ax, (10.0, bwd), (9.6, bwd), dashed=True)
    _arrow(ax, (8.0, bwd), (6.6, bwd), dashed=True)
    ax.text(7.3, bwd - 0.45, "$\\mathbf{g}_t=\\partial\\ell/\\partial\\mathbf{s}_t$", ha="center",
            fontsize=_FS)
    ax.text(5.3, top + 1.35, "forward pass (solid)  /  backward pass (dashed)", ha="center",
            fontsize=9.5, color="#555555")
    # hooks
    ax.plot([3.1], [fwd], "o", ms=7, color="#1f77b4")
    ax.plot([7.3], [bwd], "o", ms=7, color="#d62728")
    _arrow(ax, (3.1, fwd - 0.1), (3.1, 2.95), dashed=True, color="#1f77b4")
    _arrow(ax, (7.3, bwd - 0.62), (7.3, 2.95), dashed=True, color="#d62728")
    _box(ax, 1.5, 2.05, 3.2, 0.9, "forward hook on the input\ncatches $\\mathbf{a}_t$", _BLUE)
    _box(ax, 5.7, 2.05, 3.2, 0.9, "backward hook on the output\ncatches $\\mathbf{g}_t$", _RED)
    _box(ax, 1.5, 0.95, 3.2, 0.8, "$\\mathbf{A}=\\frac{1}{N}\\sum_t\\mathbf{a}_t\\mathbf{a}_t^\\top$"
         "   $(d_{in}\\times d_{in})$", _BLUE)
    _box(ax, 5.7, 0.95, 3.2, 0.8, "$\\mathbf{S}=\\frac{1}{N}\\sum_t\\mathbf{g}_t\\mathbf{g}_t^\\top$"
         "   $(d_{out}\\times d_{out})$", _RED)
    _arrow(ax, (3.1, 2.05), (3.1, 1.75))
    _arrow(ax, (7.3, 2.05), (7.3, 1.75))
    _box(ax, 9.3, 0.95, 1.6, 0.8, "$\\mathbf{G}_{\\mathbf{W}}\\approx\\mathbf{A}\\otimes\\mathbf{S}$",
         _GREEN)
    _arrow(ax, (8.9, 1.35), (9.3, 1.35))
    ax.add_patch(FancyArrowPatch((3.1, 0.95), (10.1, 0.95), connectionstyle="arc3,rad=0.18",
                                 arrowstyle="-|>", mutation_scale=13, lw=1.3, color="#333333"))
    ax.text(10.4, top - 0.2, "labels $y$ of $\\ell$\n(section 4.3):", ha="center", va="top", fontsize=9)
    for n, kind in enumerate(("true", "sampled", "type-2")):
        ax.text(10.4, top - 0.8 - 0.28 * n, kind, ha="center", va="top", fontsize=9,
                color=OTHER_COLORS[f"{kind} labels"], weight="bold")
    return fig


def _toy_spectra(d_out: int = 8, d_in: int = 12) -> tuple[np.ndarray, np.ndarray]:
    lam_in = 1.0 / (1.0 + np.arange(d_in)) ** 1.3
    lam_out = 0.72 ** np.arange(d_out)
    return lam_out, lam_in


def kronecker_mask_diagram(gamma: float = 0.8) -> Figure:
    r"""Part I: the Kronecker eigenbasis, the energy cut at :math:`\gamma` and the mask :math:`\mathbf M`.

    The eigenvalues :math:`\lambda^{\rm in}_j` of :math:`\mathbf A` (eigenvectors :math:`\mathbf
    U_{\rm in}`) and :math:`\lambda^{\rm out}_i` of :math:`\mathbf S` (:math:`\mathbf U_{\rm out}`)
    give the grid of products :math:`\lambda^{\rm out}_i\lambda^{\rm in}_j`, the eigenvalues of
    :math:`\mathbf A\otimes\mathbf S`. The energy rule protects the largest products holding a
    fraction :math:`\gamma` of their sum; the rest form the mask :math:`\mathbf M` of
    :math:`\mathbf P_\gamma(\mathbf G)=\mathbf U_{\rm out}((\mathbf U_{\rm out}^\top\mathbf G\mathbf
    U_{\rm in})\odot\mathbf M)\mathbf U_{\rm in}^\top` (CrispEdit eq. 6, Prop. 3). Toy spectra.
    Derived in notebook ``05_matrix_free_projector``; shown on the page ``book/diagrams``.
    """
    lam_out, lam_in = _toy_spectra()
    prod = np.outer(lam_out, lam_in)
    editable, _ = energy_mask(torch.from_numpy(prod), gamma)
    mask = editable.numpy()
    fig = plt.figure(figsize=(12.0, 4.3), dpi=150, layout="none")  # placed by hand
    heat = fig.add_axes((0.115, 0.14, 0.23, 0.56))
    top = fig.add_axes((0.115, 0.72, 0.23, 0.13), sharex=heat)
    left = fig.add_axes((0.065, 0.14, 0.045, 0.56), sharey=heat)
    d_out, d_in = prod.shape
    top.bar(np.arange(d_in), lam_in, color="#1f77b4", width=0.8)
    top.set_title("eigenvalues $\\lambda^{in}_j$ of $\\mathbf{A}$ (columns of $\\mathbf{U}_{in}$)",
                  fontsize=_FS)
    left.barh(np.arange(d_out), lam_out, color="#d62728", height=0.8)
    left.invert_xaxis()
    left.set_ylabel("output direction $i$; bars: eigenvalues\n$\\lambda^{out}_i$ of $\\mathbf{S}$ "
                    "(columns of $\\mathbf{U}_{out}$)", fontsize=_FS)
    heat.imshow(np.log10(prod), cmap="viridis", aspect="auto", origin="upper")
    for i in range(d_out):  # outline the protected cells
        for j in range(d_in):
            if not mask[i, j]:
                heat.add_patch(plt.Rectangle((j - 0.5, i - 0.45), 1, 0.9, fill=False,
                                             ec=OTHER_COLORS["protected"], lw=1.6))
    heat.set_xlabel("input direction $j$", fontsize=_FS)
    heat.text(d_in - 0.6, d_out - 0.7, "$\\log_{10}\\lambda^{out}_i\\lambda^{in}_j$\noutlined: protected",
              ha="right", va="bottom", fontsize=9, color="white")
    for axis in (top, left, heat):
        axis.tick_params(labelsize=8)
        axis.grid(False)  # also under a grid style (the book's chapters): cells, not a grid
    plt.setp(top.get_xticklabels(), visible=False)
    plt.setp(heat.get_yticklabels(), visible=False)
    top.set_yticks([]), left.set_xticks([])
    left.set_yticks(range(d_out))
    left.tick_params(labelleft=True)
    curve = fig.add_axes((0.41, 0.14, 0.25, 0.71))
    energy = energy_curve(torch.from_numpy(prod)).numpy()
    k = int((~mask).sum())  # the protected products
    curve.plot(np.arange(1, energy.size + 1), energy, color="#333333", lw=1.6)
    curve.axhline(gamma, color="#d62728", ls="--", lw=1.2)
    curve.axvline(k, color="#1f77b4", ls=":", lw=1.4)
    curve.text(k + 2, 0.35, f"cut: the top $k$ = {k}\nof {energy.size} products\nare protected",
               fontsize=9.5, va="center")
    curve.text(energy.size * 0.97, gamma - 0.05, f"$\\gamma$ = {gamma}", ha="right", va="top", fontsize=9.5,
               color="#d62728")
    curve.set_xlabel("products, sorted from the largest", fontsize=_FS)
    curve.set_ylabel("share of $\\sum_{ij}\\lambda^{out}_i\\lambda^{in}_j$", fontsize=_FS)
    curve.set_title("energy rule: protect a share $\\gamma$", fontsize=_FS)
    curve.set_ylim(0, 1.03)
    curve.tick_params(labelsize=8)
    mk = fig.add_axes((0.715, 0.14, 0.25, 0.71))
    mk.imshow(mask, cmap=ListedColormap([OTHER_COLORS["protected"], OTHER_COLORS["editable"]]),
              vmin=0, vmax=1, aspect="auto")
    for i in range(d_out):
        for j in range(d_in):
            mk.text(j, i, "1" if mask[i, j] else "0", ha="center", va="center", fontsize=8)
    mk.set_title("mask $\\mathbf{M}$: $M_{ij}=1[\\lambda^{out}_i\\lambda^{in}_j<\\lambda_\\gamma]$\n"
                 "1 = editable (green), 0 = protected (blue)", fontsize=10)
    mk.set_xlabel("$\\mathbf{P}_\\gamma(\\mathbf{G})=\\mathbf{U}_{out}((\\mathbf{U}_{out}^\\top\\mathbf{G}"
                  "\\mathbf{U}_{in})\\odot\\mathbf{M})\\mathbf{U}_{in}^\\top$", fontsize=_FS)
    mk.set_xticks([]), mk.set_yticks([])
    mk.grid(False)
    return fig


def crispedit_seq_diagram() -> Figure:
    r"""Part II: the loop of Algorithm 2 (CrispEdit-Seq), chunk by chunk.

    The projector of chunk :math:`c` is rebuilt from the merged factors :math:`\bar{\mathbf A},
    \bar{\mathbf S}`; after training on the chunk, K-FAC of the chunk's full text on
    :math:`\boldsymbol\theta_c` is merged in by token weights, :math:`\bar{\mathbf A}\leftarrow
    (N\bar{\mathbf A}+N_c\mathbf A_c)/(N+N_c)` (CrispEdit §3.4). Derived in notebook
    ``07_sequential_editing``; shown on the page ``book/diagrams``.

    Listed on the book page ``api``.
    """
    fig, ax = _canvas(11.0, 5.6)
    _box(ax, 0.2, 4.3, 2.2, 0.9, "capability data $\\mathcal{D}_{cap}$", _GREY)
    _box(ax, 0.2, 2.7, 2.2, 1.1, "K-FAC on $\\boldsymbol{\\theta}_0$\n"
         "$\\mathbf{A}_0,\\ \\mathbf{S}_0,\\ N_0$")
    _arrow(ax, (1.3, 4.3), (1.3, 3.8))
    _box(ax, 3.5, 2.7, 3.0, 1.1, "eigendecompose $\\bar{\\mathbf{A}},\\ \\bar{\\mathbf{S}}$\n"
         "$\\to\\ \\mathbf{U}_{in},\\ \\mathbf{U}_{out},\\ \\mathbf{M}$ (cut at $\\gamma$)", _GREEN)
    _arrow(ax, (2.4, 3.25), (3.5, 3.25))
    ax.text(2.95, 2.95, "start:\n$\\bar{\\mathbf{A}}=\\mathbf{A}_0$\n$\\bar{\\mathbf{S}}="
            "\\mathbf{S}_0$\n$N=N_0$", ha="center", va="top", fontsize=9.5)
    _box(ax, 7.5, 2.7, 3.3, 1.1, "train on chunk $c$ with projected\ngradients "
         "$\\mathbf{P}_\\gamma(\\mathbf{G})$ (Adam)  $\\to\\ \\boldsymbol{\\theta}_c$", _ORANGE)
    _arrow(ax, (6.5, 3.25), (7.5, 3.25))
    chunks = ["$\\mathcal{D}^{(1)}_{edit}$", "$\\mathcal{D}^{(2)}_{edit}$", "$\\dots$",
              "$\\mathcal{D}^{(K)}_{edit}$"]
    for n, label in enumerate(chunks):
        _box(ax, 7.3 + 0.95 * n, 4.45, 0.8, 0.6, label, _GREY, fs=9.5)
    ax.text(9.15, 5.3, "edits arrive in $K$ chunks", ha="center", fontsize=9.5)
    ax.plot([7.7, 10.55], [4.3, 4.3], color="#333333", lw=1.3)
    _arrow(ax, (9.15, 4.3), (9.15, 3.8), "one chunk $c$ at a time", offset=(-1.1, 0.0))
    _box(ax, 7.5, 0.6, 3.3, 1.1, "K-FAC of chunk $c$'s full text\n(prompt and target) on "
         "$\\boldsymbol{\\theta}_c$:  $\\mathbf{A}_c,\\ \\mathbf{S}_c,\\ N_c$", _RED)
    _arrow(ax, (9.15, 2.7), (9.15, 1.7))
    _box(ax, 3.5, 0.6, 3.0, 1.1, "merge by token weights:\n$\\bar{\\mathbf{A}}\\leftarrow(N\\bar{\\mathbf{A}}"
         "+N_c\\mathbf{A}_c)/(N+N_c)$\nthe same for $\\bar{\\mathbf{S}}$;  $N\\leftarrow N+N_c$",
         _BLUE, fs=10)
    _arrow(ax, (7.5, 1.15), (6.5, 1.15))
    _arrow(ax, (5.0, 1.7), (5.0, 2.7), "next chunk $c+1$", offset=(-0.95, 0.0))
    _box(ax, 0.2, 0.6, 2.2, 1.1, "after chunk $K$:\nedited model $\\boldsymbol{\\theta}_K$", _GREY)
    _arrow(ax, (3.5, 1.15), (2.4, 1.15), dashed=True)
    ax.text(5.5, 0.2, "no old edit data is stored: only $\\bar{\\mathbf{A}}$, $\\bar{\\mathbf{S}}$ and $N$"
            " per layer", ha="center", fontsize=9.5, color="#555555")
    return fig


def reproduction_diagram() -> Figure:
    """Part III: from one paper table cell to its row beside the paper's number.

    A parameter file under ``reproduce/`` fixes every setting; papermill runs notebook 09 or 10 with
    it; the run writes one results JSON; notebook 11 reads every JSON and sets it beside
    ``paper_tables.json``. Shown on the pages ``book/diagrams`` and ``book/reproducing``; the
    pipeline is used in notebooks ``09_reproduce_llama3_8b``, ``10_reproduce_qwen2_5_1_5b`` and
    ``11_results``.

    Listed on the book page ``api``.
    """
    fig, ax = _canvas(11.0, 2.6)
    steps = [
        ("reproduce/<cell>.yaml\nevery parameter of\none table cell", _GREY),
        ("papermill: notebook\n09 (LLaMA-3-8B) or\n10 (Qwen-2.5-1.5B)", _BLUE),
        ("edit (K-FAC if needed)\nand evaluate on a GPU\n(WILD, lm-eval)", _ORANGE),
        ("results/<cell>/*.json\nsettings, metrics,\ntimings, versions", _GREEN),
        ("notebook 11: the paper's\nnumber beside this run\n(paper_tables.json)", _RED),
    ]
    w, gap = 1.8, 0.35
    for n, (text, color) in enumerate(steps):
        x = 0.2 + n * (w + gap)
        _box(ax, x, 0.75, w, 1.2, text, color, fs=9.5)
        if n:
            _arrow(ax, (x - gap, 1.35), (x, 1.35))
    ax.text(5.4, 2.25, "python -m crispedit_lite reproduce <cell>  does the first four steps",
            ha="center", fontsize=9.5, family="monospace", color="#555555")
    ax.text(5.4, 0.3, "a cell whose JSON exists is skipped, so an interrupted table resumes",
            ha="center", fontsize=9.5, color="#555555")
    return fig


#: File stem -> drawing function, in reading order.
DIAGRAMS: dict[str, Callable[[], Figure]] = {
    "kfac_hooks": kfac_hooks_diagram,
    "kronecker_mask": kronecker_mask_diagram,
    "crispedit_seq": crispedit_seq_diagram,
    "reproduction": reproduction_diagram,
}


def save_all(out_dir: str | os.PathLike = "book/figures", fmt: str = "svg") -> list[Path]:
    """Draw every diagram and write it to ``out_dir/<stem>.<fmt>`` atomically; return the paths.

    SVGs are written without a date and with a fixed id salt, so the same code gives the same bytes.
    Shown on the page ``book/diagrams``.

    Listed on the book page ``api``.
    """
    if fmt not in ("svg", "png"):
        raise ValueError(f"fmt must be 'svg' or 'png', got {fmt!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    with plt.rc_context({"svg.hashsalt": "crispedit-lite", "svg.fonttype": "path"}):
        for stem, draw in DIAGRAMS.items():
            fig = draw()
            target = out / f"{stem}.{fmt}"
            meta = {"Date": None} if fmt == "svg" else {"Software": None}
            with atomic_path(target) as tmp:
                fig.savefig(tmp, format=fmt, dpi=150, metadata=meta)
            plt.close(fig)
            paths.append(target)
    return paths


if __name__ == "__main__":
    for path in save_all(*sys.argv[1:2], *sys.argv[2:3]):
        print(path)
