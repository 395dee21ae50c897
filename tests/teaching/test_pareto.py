"""One Pareto front: ties, duplicates, directions; the dominated area against a brute-force count."""

from __future__ import annotations

import itertools
import math
import random

import numpy as np
import pytest

from crispedit_lite.teaching import cpu_table
from crispedit_lite.teaching.pareto import dominated_area, pareto_front


def brute_front(points, maximize):
    s = [1 if up else -1 for up in maximize]
    better_eq = lambda q, p: all(s[i] * q[i] >= s[i] * p[i] for i in range(2))  # noqa: E731
    return [k for k, p in points.items()
            if not any(better_eq(q, p) and q != p for k2, q in points.items() if k2 != k)]


def test_reliability_up_damage_down_by_default():
    assert pareto_front({"a": (90, 0.1), "b": (80, 0.2), "c": (95, 0.3)}) == ["a", "c"]
    assert cpu_table.pareto_front is pareto_front  # the table module shows the same function


def test_duplicates_are_on_the_front_together_and_dominated_together():
    assert pareto_front({"a": (90, 0.1), "b": (90, 0.1)}) == ["a", "b"]
    assert pareto_front({"a": (90, 0.1), "b": (90, 0.1), "c": (95, 0.1)}) == ["c"]


def test_a_tie_on_one_measure_is_decided_by_the_other():
    assert pareto_front({"a": (90, 0.2), "b": (90, 0.1)}) == ["b"]  # same reliability, less damage
    assert pareto_front({"a": (80, 0.1), "b": (90, 0.1)}) == ["b"]  # same damage, more reliable
    assert pareto_front({"a": (80, 0.1), "b": (90, 0.1)}, maximize=(False, False)) == ["a"]


@pytest.mark.parametrize("maximize", list(itertools.product([True, False], repeat=2)))
def test_matches_a_brute_force_definition_on_random_points_with_ties(maximize):
    rng = random.Random(0)
    for _ in range(30):
        pts = {f"m{i}": (rng.choice([1.0, 2.0, 3.0]), rng.choice([0.5, 1.5])) for i in range(7)}
        assert pareto_front(pts, maximize) == brute_front(pts, maximize)


def test_nan_and_bad_directions_are_errors():
    with pytest.raises(ValueError, match="point 'b' has a NaN measure"):
        pareto_front({"a": (1.0, 2.0), "b": (math.nan, 1.0)})
    with pytest.raises(ValueError, match="maximize must name a direction"):
        pareto_front({"a": (1.0, 2.0)}, maximize=(True,))
    assert pareto_front({}) == []


def test_dominated_area_is_the_area_of_the_union_of_rectangles():
    rng = np.random.default_rng(0)
    pts = [tuple(p) for p in rng.uniform(0, 1, (8, 2)).round(1)] + [(0.5, 0.5), (0.5, 0.5), (0.05, 0.9)]
    ref = 0.1
    grid = (np.arange(2000) + 0.5) / 2000
    X, Y = np.meshgrid(grid, grid)
    covered = np.zeros_like(X, dtype=bool)
    for x, y in pts:
        covered |= (X >= ref) & (X <= x) & (Y >= ref) & (Y <= y)
    assert dominated_area(pts, ref) == pytest.approx(covered.mean(), abs=2e-3)
    assert dominated_area([(0.5, 0.5)], (0.1, 0.3)) == pytest.approx(0.4 * 0.2)
    assert dominated_area([(0.05, 0.9)], 0.1) == 0.0  # below the reference on one measure
