"""crispedit_lite.teaching.intuition: chapter 1's two-dimensional picture, computed and drawn."""

from __future__ import annotations

import matplotlib
import matplotlib.colors as mcolors
import matplotlib.pyplot as plt
import numpy as np
import pytest

from crispedit_lite.teaching import intuition
from crispedit_lite.teaching.plotting import method_color

matplotlib.use("Agg")


def test_the_landscape_has_its_stiff_and_flat_eigenpairs():
    land = intuition.Landscape(stiff=8.0, flat=0.25, angle_deg=25.0)
    w, v = np.linalg.eigh(land.H)
    np.testing.assert_allclose(w, [0.25, 8.0], rtol=1e-12)
    assert abs(abs(v[:, 1] @ land.u_stiff) - 1) < 1e-12 and abs(land.u_stiff @ land.u_flat) < 1e-15
    theta = np.array([[0.3, -1.1]])
    assert land.old_loss(theta)[0] == pytest.approx(0.5 * theta[0] @ land.H @ theta[0])
    with pytest.raises(ValueError, match="stiff > flat"):
        intuition.Landscape(stiff=1.0, flat=2.0)


def test_the_projected_direction_is_orthogonal_to_the_stiff_eigenvector():
    land = intuition.Landscape()
    for g in (np.array([1.0, 0.0]), np.array([-0.3, 2.0]), -land.new_grad(np.zeros(2))):
        pg = intuition.projected_direction(land, g)
        assert abs(pg @ land.u_stiff) < 1e-12 * np.linalg.norm(g)
        np.testing.assert_allclose(intuition.projected_direction(land, pg), pg, atol=1e-15)  # idempotent
        assert (g - pg) @ pg == pytest.approx(0.0, abs=1e-12)  # an orthogonal projection


def test_the_old_loss_rises_less_along_the_projected_path():
    land = intuition.Landscape()
    paths = intuition.gd_paths(land, lr=0.15, steps=30)
    plain, proj = land.old_loss(paths["plain"]), land.old_loss(paths["projected"])
    assert plain[0] == proj[0] == 0.0
    assert (proj[1:] < plain[1:]).all() and proj[-1] < plain[-1] / 20
    # every projected step stays on the flat line, where the old loss is (flat / 2) |theta|^2
    np.testing.assert_allclose(proj, 0.5 * land.flat * (paths["projected"] ** 2).sum(1), rtol=1e-10)
    # the edit still makes progress, and plain GD fits it better: the price of the constraint
    new_plain, new_proj = land.new_loss(paths["plain"]), land.new_loss(paths["projected"])
    assert new_proj[-1] < new_proj[0] and new_plain[-1] < new_proj[-1]
    with pytest.raises(ValueError, match="lr > 0"):
        intuition.gd_paths(land, lr=0.0)


def test_the_figure_uses_the_registry_and_concept_colours_and_fits_its_data():
    fig = intuition.landscape_figure()
    try:
        ax, ax2 = fig.axes[:2]
        lines = {line.get_label(): mcolors.to_hex(line.get_color()) for line in ax.get_lines()}
        assert lines["plain gradient descent (FT)"] == method_color("FT")
        assert lines["projected gradient descent (CrispEdit)"] == method_color("CrispEdit")
        assert any(k.startswith("stiff") and v == method_color("protected") for k, v in lines.items())
        assert any(k.startswith("flat") and v == method_color("editable") for k, v in lines.items())
        (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
        for line in ax.get_lines():
            xy = line.get_xydata()
            if len(xy):
                assert (xy[:, 0] >= x0).all() and (xy[:, 0] <= x1).all()
                assert (xy[:, 1] >= y0).all() and (xy[:, 1] <= y1).all()
        lo, hi = ax2.get_ylim()
        for line in ax2.get_lines():
            assert (line.get_ydata() >= lo).all() and (line.get_ydata() <= hi).all()
        fig.canvas.draw()
        legend = fig.legends[0].get_window_extent()
        assert not any(legend.overlaps(a.get_window_extent()) for a in (ax, ax2))
    finally:
        plt.close(fig)
