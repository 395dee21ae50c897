"""One style for every figure in the book (seaborn on matplotlib).

Used by every notebook; call :func:`set_style` once after the imports.
"""

from __future__ import annotations

import matplotlib as mpl
import seaborn as sns

__all__ = ["set_style", "PALETTE", "METHOD_COLORS"]

PALETTE = sns.color_palette("colorblind")

#: A fixed colour per method, so that the same method looks the same in every chapter.
METHOD_COLORS = {
    "Hessian": PALETTE[0],
    "Gauss-Newton": PALETTE[1],
    "K-FAC": PALETTE[2],
    "EK-FAC": PALETTE[3],
    "Adam-NSCL": PALETTE[4],
    "FT": PALETTE[7],
    "CrispEdit": PALETTE[2],
    "LoRA": PALETTE[5],
    "LocBF-FT": PALETTE[6],
    "AlphaEdit": PALETTE[8],
    "MEMIT": PALETTE[9],
    "UltraEdit": PALETTE[3],
    "FT-Seq": PALETTE[7],
    "LoRA-Seq": PALETTE[5],
    "CrispEdit-Seq": PALETTE[2],
}


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
