"""One style for every figure in the book (seaborn on matplotlib), and one colour per method.

Used by every notebook; call :func:`set_style` once after the imports. ``METHOD_COLORS`` maps display
names to colours: every editor's ``label`` to its ``color`` (both declared in the editor registry,
:mod:`crispedit_lite.editing.registry`, so a new editor brings its own), plus the curvature models and
other curves of the book that are not editors (:data:`OTHER_COLORS`), in colours no editor uses.
"""

from __future__ import annotations

from typing import Any

import matplotlib as mpl
import seaborn as sns

__all__ = ["METHOD_COLORS", "OTHER_COLORS", "PALETTE", "method_color", "set_style"]  # noqa: F822

PALETTE = sns.color_palette("colorblind")

#: Colours of what the figures show beside the editors: the curvature models of chapters 2-5, the
#: unedited model and chapter 6's CrispEdit variant with the neighbourhood texts in its capability set.
OTHER_COLORS: dict[str, str] = {
    "Hessian": "#0173b2",
    "Gauss-Newton": "#de8f05",
    "K-FAC": "#6a3d9a",
    "EK-FAC": "#b2182b",
    "base": "#000000",
    "CrispEdit + nbhd texts": "#7fcdbb",
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
    """The colour of a method by display name (``"FT-Seq"``) or registry name (``"ft_seq"``).

    Names that are neither get ``default``. Described on the book page ``running``.
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
    """Apply the book's figure style: seaborn ``whitegrid``, 150 dpi, tight boxes (no overlapping labels).

    In a Jupyter kernel it also shows figures inline (``%matplotlib inline``), so that a chapter's
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
            "figure.autolayout": True,
        }
    )
