r"""Graders for the exercises of notebook ``09_reproduce_llama3_8b``.

9.1 judges a bootstrap confidence interval by the properties any correct percentile bootstrap of a
mean has (inside the data's range, around the mean, reproducible for a seed, about the width of
the normal approximation for a large sample, half as wide for four times the data, wider for a
higher level), never by a stored interval. Derived in notebook ``09_reproduce_llama3_8b``.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from crispedit_lite.exercises.core import exercise

__all__ = ["check_bootstrap_ci"]


def _samples() -> dict[str, list[float]]:
    g = torch.Generator().manual_seed(91)
    big = (torch.rand(400, generator=g) < 0.7).double().tolist()
    skew = (torch.rand(40, generator=g) < 0.95).double().tolist()
    scores = (torch.rand(60, generator=g) * 100).round().tolist()
    return {"constant": [1.0] * 10, "big": big, "big4": big * 4, "skew": skew, "scores": scores}


def _probe_bootstrap(fn) -> dict[str, Any]:
    s = _samples()
    out = {
        name: [float(x) for x in fn(list(data), n_boot=2000, level=0.95, seed=0)] for name, data in s.items()
    }
    out["again"] = [float(x) for x in fn(list(s["big"]), n_boot=2000, level=0.95, seed=0)]
    out["level80"] = [float(x) for x in fn(list(s["big"]), n_boot=2000, level=0.80, seed=0)]
    out["level99"] = [float(x) for x in fn(list(s["big"]), n_boot=2000, level=0.99, seed=0)]
    return out


@exercise(
    "ex-09-1", probe=_probe_bootstrap, forbidden=["bootstrap", "scipy", "statsmodels"], piece="the resampling"
)
def check_bootstrap_ci(obs: dict[str, Any]) -> None:
    r"""Exercise 9.1: ``bootstrap_ci(scores, n_boot, level, seed)``: a bootstrap interval of a mean.

    Judged by properties on made-up samples: a constant sample gives a zero-width interval; every
    interval lies inside the range of its data and contains the sample mean; the same seed gives the
    same interval; for 400 Bernoulli scores its width is within 25 % of the normal approximation's;
    four copies of the data halve it; a higher level widens it. Derived in notebook
    ``09_reproduce_llama3_8b``.
    """
    s = _samples()
    for name, (lo, hi) in ((k, obs[k]) for k in s):
        data = s[name]
        mean = sum(data) / len(data)
        assert lo <= hi, f"{name}: the lower bound {lo} is above the upper bound {hi}"
        assert min(data) - 1e-12 <= lo and hi <= max(data) + 1e-12, (
            f"{name}: the interval ({lo:.4g}, {hi:.4g}) leaves the range of the data: a bootstrap interval "
            "of a "
            "mean is made of means of resamples (is it a normal approximation?)"
        )
        assert lo - 1e-12 <= mean <= hi + 1e-12, (
            f"{name}: the interval does not contain the sample mean {mean:.4g}"
        )
    assert obs["constant"][1] - obs["constant"][0] < 1e-12, "a constant sample has no uncertainty"
    assert obs["again"] == obs["big"], "the same seed must give the same interval (seed the resampling)"
    data = s["big"]
    p = sum(data) / len(data)
    normal = 2 * 1.959964 * math.sqrt(p * (1 - p) / len(data))
    width = obs["big"][1] - obs["big"][0]
    assert 0.75 * normal < width < 1.25 * normal, (
        f"for 400 scores the interval is {width:.3f} wide, far from the {normal:.3f} of the normal "
        "approximation: resample as many scores as the data has, with replacement, and take the "
        "percentiles of the resampled means"
    )
    width4 = obs["big4"][1] - obs["big4"][0]
    assert 0.35 * width < width4 < 0.65 * width, (
        f"four copies of the data should halve the width ({width:.3f} -> {width4:.3f})"
    )
    w80, w99 = (obs[k][1] - obs[k][0] for k in ("level80", "level99"))
    assert w80 < width < w99, "a higher level must give a wider interval (level is the coverage, e.g. 0.95)"
