r"""Pareto fronts of methods compared on two measures, and the area a set of points dominates.

A method with measures :math:`(x, y)` is *dominated* when another method is at least as good on both
and strictly better on one; the front is the set of methods nothing dominates. Equal points do not
dominate each other, so duplicates are on the front together. Which direction is "better" is chosen
per measure (reliability up, damage down for the editors of Table 1; both accuracies up for the
trade-off curves of chapter 3). :func:`dominated_area` is the two-dimensional hypervolume indicator
(Zitzler & Thiele 1999): the area of the union of the rectangles between a reference point and the
points of the front.

Derived in notebooks ``03_low_curvature_subspace`` (area) and ``06_crispedit_on_a_small_lm`` (front).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping

__all__ = ["dominated_area", "pareto_front"]


def pareto_front(points: Mapping[Hashable, tuple[float, float]],
                 maximize: tuple[bool, bool] = (True, False)) -> list:
    r"""The keys of ``points`` that no other point dominates, in the order of ``points``.

    ``q`` dominates ``p`` when :math:`q \succeq p` on both measures and :math:`q \succ p` on one,
    with :math:`\succ` meaning ``>`` for a measure in ``maximize`` and ``<`` otherwise (default:
    ``(reliability, damage)``). Ties on both measures (duplicates) dominate neither way.

    Raises:
        ValueError: a coordinate that is NaN (it would be neither better nor worse than anything).

    Derived in notebook ``06_crispedit_on_a_small_lm``.
    """
    sign = tuple(1.0 if up else -1.0 for up in maximize)
    if len(sign) != 2:
        raise ValueError(f"maximize must name a direction for each of the two measures, got {maximize!r}")
    pts = {}
    for key, (x, y) in points.items():
        if math.isnan(x) or math.isnan(y):
            raise ValueError(f"pareto_front: point {key!r} has a NaN measure ({x}, {y})")
        pts[key] = (sign[0] * x, sign[1] * y)  # now larger is better on both

    def dominated(k: Hashable) -> bool:
        x, y = pts[k]
        return any(x2 >= x and y2 >= y and (x2 > x or y2 > y) for k2, (x2, y2) in pts.items() if k2 != k)

    return [k for k in pts if not dominated(k)]


def dominated_area(points: Iterable[tuple[float, float]], ref: float | tuple[float, float]) -> float:
    r"""Area of :math:`\{(x, y): r_x\le x\le x_i,\ r_y\le y\le y_i \text{ for some point } i\}`.

    Both measures are maximised and measured from the reference point ``ref`` (a number for both
    coordinates, e.g. chance accuracy); points below the reference on a measure add nothing. Only the
    Pareto front (:func:`pareto_front`) contributes: the area is the staircase
    :math:`\sum_i (x_i - r_x)(y_i - y_{i-1})` over the front sorted by decreasing :math:`x`.

    Derived in notebook ``03_low_curvature_subspace``.
    """
    rx, ry = (ref, ref) if isinstance(ref, (int, float)) else ref
    pts = list(points)
    front = pareto_front(dict(enumerate(pts)), maximize=(True, True))
    area, best_y = 0.0, ry
    for x, y in sorted((pts[i] for i in front), key=lambda p: -p[0]):
        if y > best_y and x > rx:
            area += (x - rx) * (y - best_y)
            best_y = y
    return area
