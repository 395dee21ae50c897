"""One style for every figure in the book (seaborn on matplotlib), one colour per method and per concept.

Used by every notebook; call :func:`set_style` once after the imports. ``METHOD_COLORS`` maps display
names to colours: every editor's ``label`` to its ``color`` (both declared in the editor registry,
:mod:`crispedit_lite.editing.registry`, so a new editor brings its own), plus the curvature models,
the unedited model and the concepts the figures and diagrams colour (:data:`OTHER_COLORS`: protected
and editable directions, the three label choices of K-FAC, the dense projector), in colours no editor
uses. A figure looks a colour up with :func:`method_color` instead of writing it down, so that a method
or a concept has the same colour on every page.
"""

from __future__ import annotations

from typing import Any

import matplotlib as mpl
import seaborn as sns

__all__ = ["METHOD_COLORS", "OTHER_COLORS", "PALETTE", "fit_axis", "legend_below",  # noqa: F822
           "log_ticks", "method_color", "set_style"]

PALETTE = sns.color_palette("colorblind")

#: Colours of what the figures show beside the editors: the curvature models of chapters 2-5, the
#: unedited model, chapter 6's CrispEdit variant with the neighbourhood texts in its capability set,
#: and the concepts of the figures and diagrams: the *protected* (high-curvature) and *editable*
#: (low-curvature) directions of the mask :math:`\mathbf M` (chapters 3 and 5), the labels a K-FAC
#: backward pass uses (true, sampled, type-2; chapter 4) and the dense projector that chapter 5
#: replaces by the matrix-free one (which is CrispEdit's, in CrispEdit's colour).
OTHER_COLORS: dict[str, str] = {
    "Hessian": "#0173b2",
    "Gauss-Newton": "#de8f05",
    "K-FAC": "#6a3d9a",
    "EK-FAC": "#b2182b",
    "base": "#000000",
    "CrispEdit + nbhd texts": "#7fcdbb",
    "protected": "#b0b0e0",
    "editable": "#7fbf3f",
    "true labels": "#e7298a",
    "sampled labels": "#17becf",
    "type-2 labels": "#2b4fd6",
    "dense projector": "#7f2704",
}


def _method_colors() -> dict[str, str]:
    from crispedit_lite.editing.registry import registry

    return {**OTHER_COLORS, **{e.label: e.color for e in registry().values()}}


def __getattr__(name: str) -> Any:
    """``METHOD_COLORS``: ``{display name: hex colour}`` of every editor and of :data:`OTHER_COLORS`."""
    if name == "METHOD_COLORS":
        return _method_colors()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def method_color(name: str, default: Any = None) -> Any:
    """The colour of a method by display name (``"FT-Seq"``) or registry name (``"ft_seq"``), or a concept's.

    Concepts are the other keys of :data:`OTHER_COLORS` (``"protected"``, ``"type-2 labels"``, ...).
    Names that are none of these get ``default``. Described on the book page ``running``.
    """
    from crispedit_lite.editing.registry import registry

    table = registry()
    if name in table:
        return table[name].color
    return _method_colors().get(name, default)


def _show_figures_inline() -> None:
    """In a Jupyter kernel, draw figures inline (``%matplotlib inline``) whatever ``MPLBACKEND`` says.

    ipykernel installs its inline backend only when ``MPLBACKEND`` is unset; with ``MPLBACKEND=Agg``
    inherited from a shell or a build tool, ``plt.show()`` in a notebook would output nothing.
    Outside a kernel (scripts, tests, a terminal IPython) nothing changes.
    """
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover (IPython ships with every Jupyter install)
        return
    shell = get_ipython()
    if shell is not None and getattr(shell, "kernel", None) is not None:
        shell.run_line_magic("matplotlib", "inline")


def set_style(dpi: int = 150) -> None:
    """Apply the book's figure style: seaborn ``whitegrid``, 150 dpi, constrained layout.

    Constrained layout places titles, suptitles, tick labels and legends placed outside the axes
    (``loc="outside ..."``, :func:`legend_below`) without overlaps, every time a figure is drawn. In a
    Jupyter kernel it also shows figures inline (``%matplotlib inline``), so that a chapter's
    ``plt.show()`` outputs its PNG however the kernel was started. Used by every notebook; first in
    notebook ``01_editing_as_constrained_optimization``.
    """
    _show_figures_inline()
    sns.set_theme(style="whitegrid", context="notebook", palette=PALETTE)
    mpl.rcParams.update(
        {
            "figure.dpi": dpi,
            "savefig.dpi": dpi,
            "figure.figsize": (6.4, 4.0),
            "axes.titleweight": "bold",
            "figure.autolayout": False,
            "figure.constrained_layout.use": True,
        }
    )


def fit_axis(ax: Any, which: str, values: Any, pad: float = 0.06) -> tuple[float, float]:
    """Set the ``which`` (``"x"`` or ``"y"``) limits of ``ax`` to hold every finite value, padded.

    The padding is a fraction ``pad`` of the range *in the axis' own scale* (decades on a log axis), so
    that no marker sits on the frame whatever the scale. A log axis holds only the positive values
    (the caller picks ``symlog`` for data that can be zero or negative). Returns the limits.

    Fits the axes of :func:`~crispedit_lite.teaching.cpu_table.pareto_figure`, Table 1's figure in
    notebook ``06_crispedit_on_a_small_lm``.
    """
    import numpy as np

    v = np.asarray(values, dtype=float).ravel()
    v = v[np.isfinite(v)]
    axis = ax.xaxis if which == "x" else ax.yaxis
    if axis.get_scale() == "log":
        v = v[v > 0]
    if not v.size:
        raise ValueError(f"fit_axis: no finite value to fit the {which} axis to")
    tr = axis.get_transform()
    lo, hi = tr.transform(np.array([[v.min()], [v.max()]])).ravel()
    span = hi - lo if hi > lo else 1.0
    lo, hi = tr.inverted().transform(np.array([[lo - pad * span], [hi + pad * span]])).ravel()
    (ax.set_xlim if which == "x" else ax.set_ylim)(lo, hi)
    return float(lo), float(hi)


def log_ticks(ax: Any, which: str) -> None:
    """Plain-number tick labels on a log or symlog axis (0.01, 0.02, 0.05, ...), none on minor ticks.

    Within two decades the ticks are 1-2-5 in each decade; beyond, powers of ten. Matplotlib's default
    labels the minor ticks of a short log axis in scientific notation, where they overlap. Ticks the
    damage axes of the Table 1 figure in notebook ``06_crispedit_on_a_small_lm``.
    """
    import numpy as np
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter, SymmetricalLogLocator

    axis = ax.xaxis if which == "x" else ax.yaxis
    lo, hi = sorted(abs(v) for v in (ax.get_xlim() if which == "x" else ax.get_ylim()))
    scale = axis.get_scale()
    span = np.log10(max(hi, 1e-300)) - np.log10(max(lo, 1e-300)) if scale == "log" else 3.0
    subs = (1.0, 2.0, 5.0) if span <= 2.0 else (1.0,)
    if scale == "log":
        axis.set_major_locator(LogLocator(base=10, subs=subs))
    elif scale == "symlog":
        axis.set_major_locator(SymmetricalLogLocator(axis.get_transform(), subs=subs))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def legend_below(fig: Any, handles: Any, labels: Any, ncol: int | None = None, **kw: Any) -> Any:
    """One legend for the whole figure, below its axes (never over data): needs ``layout="constrained"``.

    Used in notebook ``01_editing_as_constrained_optimization`` and the figures of the chapters after it.
    """
    ncol = ncol or min(len(labels), 5)
    return fig.legend(handles, labels, loc="outside lower center", ncol=ncol, fontsize=8, frameon=False, **kw)
