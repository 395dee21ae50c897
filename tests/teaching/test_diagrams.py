"""crispedit_lite.teaching.diagrams, the book's diagrams: readable (no overlapping text), computed by the
library, committed up to date."""

from __future__ import annotations

import itertools
import xml.etree.ElementTree as ET

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.text import Text

from crispedit_lite.projector import KroneckerProjector
from crispedit_lite.teaching import diagrams
from tests.helpers import ROOT


def _text_boxes(fig):
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = []
    for t in fig.findobj(Text):
        if t.get_visible() and t.get_text().strip() and t.get_alpha() != 0:
            bb = t.get_window_extent(renderer)
            boxes.append((t.get_text(), bb.shrunk(0.97, 0.9)))  # ignore sub-pixel touching
    return boxes


@pytest.mark.parametrize("stem", list(diagrams.DIAGRAMS))
def test_no_two_labels_overlap_and_all_stay_inside(stem):
    fig = diagrams.DIAGRAMS[stem]()
    try:
        boxes = _text_boxes(fig)
        assert len(boxes) >= 4, f"{stem}: the diagram has almost no labels"
        clashes = [(a, b) for (a, ba), (b, bb) in itertools.combinations(boxes, 2) if ba.overlaps(bb)]
        assert not clashes, f"{stem}: overlapping labels {clashes[:3]}"
        w, h = fig.canvas.get_width_height()
        outside = [t for t, bb in boxes if bb.x0 < 0 or bb.y0 < 0 or bb.x1 > w or bb.y1 > h]
        assert not outside, f"{stem}: labels cut off at the border: {outside}"
    finally:
        plt.close(fig)


def test_mask_diagram_is_the_projectors_mask():
    gamma = 0.8
    fig = diagrams.kronecker_mask_diagram(gamma)
    try:
        shown = np.asarray(fig.axes[-1].images[0].get_array(), dtype=bool)
    finally:
        plt.close(fig)
    lam_out, lam_in = diagrams._toy_spectra()
    A, S = torch.diag(torch.tensor(lam_in)), torch.diag(torch.tensor(lam_out))
    proj = KroneckerProjector.from_factors(A, S, gamma)
    products = np.outer(lam_out, lam_in)
    editable = np.sort(products[shown])
    lib = torch.outer(proj.eig_out, proj.eig_in).numpy()[proj.mask.numpy()]
    np.testing.assert_allclose(editable, np.sort(lib), rtol=1e-12)
    # the energy guarantee the caption states: the protected share is at least gamma, and minimal
    protected = np.sort(products[~shown])
    assert protected.sum() / products.sum() >= gamma
    assert (protected.sum() - protected.min()) / products.sum() < gamma


def test_committed_figures_are_what_the_code_draws(tmp_path):
    fresh = diagrams.save_all(tmp_path)
    for path in fresh:
        committed = ROOT / "book" / "figures" / path.name
        assert committed.is_file(), f"{committed} missing: run `python -m crispedit_lite.teaching.diagrams`"
        ET.fromstring(committed.read_bytes())  # well-formed SVG
        assert committed.read_bytes() == path.read_bytes(), (
            f"{committed.name} is stale: run `python -m crispedit_lite.teaching.diagrams`"
        )
    text = (ROOT / "book" / "diagrams.md").read_text(encoding="utf-8")
    for path in fresh:
        assert f"figures/{path.name}" in text, f"book/diagrams.md does not show {path.name}"


def test_save_all_rejects_unknown_format(tmp_path):
    with pytest.raises(ValueError, match="fmt"):
        diagrams.save_all(tmp_path, fmt="jpg")


def test_diagrams_use_the_books_concept_colours():
    """Protected and editable cells, and the three label choices, in the colours of every figure."""
    import matplotlib.colors as mcolors

    from crispedit_lite.teaching.plotting import method_color

    fig = diagrams.kronecker_mask_diagram(0.8)
    try:
        image = fig.axes[-1].images[0]
        cmap = image.get_cmap()
        assert mcolors.to_hex(cmap(0.0)) == method_color("protected")
        assert mcolors.to_hex(cmap(1.0)) == method_color("editable")
        outlines = {mcolors.to_hex(p.get_edgecolor()) for p in fig.axes[0].patches}
        assert outlines == {method_color("protected")}
    finally:
        plt.close(fig)
    fig = diagrams.kfac_hooks_diagram()
    try:
        colours = {t.get_text(): mcolors.to_hex(t.get_color()) for t in fig.axes[0].texts}
        for kind in ("true", "sampled", "type-2"):
            assert colours[kind] == method_color(f"{kind} labels")
    finally:
        plt.close(fig)


@pytest.mark.parametrize("stem", list(diagrams.DIAGRAMS))
def test_diagrams_draw_without_warnings_in_the_book_style(stem):
    """The book's constrained layout leaves hand-placed diagrams alone (no layout-engine warning)."""
    import io
    import warnings

    with plt.rc_context({"figure.constrained_layout.use": True}), warnings.catch_warnings():
        warnings.simplefilter("error")
        fig = diagrams.DIAGRAMS[stem]()
        try:
            fig.savefig(io.BytesIO(), format="png")
        finally:
            plt.close(fig)
