"""crispedit_lite.teaching.sweeps on the tiny Llama: the gamma and n sweeps of chapter 6.

What must hold whatever the training does: the editable share falls as gamma grows and as the
capability sample grows (the energy rule and the rank argument), n = 0 is FT with everything editable,
every point starts from the same base weights (restored after each), and the FT row's KL is the one a
direct FT edit gives.
"""

from __future__ import annotations

import pytest
import torch

from crispedit_lite.editing import edit
from crispedit_lite.evaluation import evaluate_run
from crispedit_lite.teaching.sweeps import run_sweeps
from tests.helpers import CAP_TEXT, REQUESTS, edit_config, weights_of

TEXTS = [CAP_TEXT, "the dog runs and the cat lies in the house", "a red tree on the river",
         "the capital of germany is berlin and the city lies on the river"]


def _capability(n: int) -> list[str]:
    return TEXTS[:n]


@pytest.fixture()
def swept(model, tok):
    base = evaluate_run(model, tok, REQUESTS, ("teacher_forced", "proxies"), proxy_texts=TEXTS[1:],
                        progress=False)
    before = weights_of(model)
    rows = run_sweeps(model, tok, REQUESTS, config=lambda m, **kw: edit_config(m, **kw),
                      capability=_capability, base=base, proxy_texts=TEXTS[1:], gamma=0.7, n_capability=4,
                      gammas=[0.5, 0.9, 0.99], n_caps=[1, 4], progress=False)
    return rows, base, before


def test_sweep_rows_and_orderings(model, swept):
    rows, _, before = swept
    assert [(r["sweep"], r["value"], r["method"]) for r in rows] == [
        ("gamma", 0.5, "crispedit"), ("gamma", 0.9, "crispedit"), ("gamma", 0.99, "crispedit"),
        ("n", 0, "ft"), ("n", 1, "crispedit"), ("n", 4, "crispedit")]
    editable = [r["editable %"] for r in rows if r["sweep"] == "gamma"]
    assert editable[0] > editable[1] > editable[2]
    n_rows = [r for r in rows if r["sweep"] == "n"]
    assert n_rows[0]["editable %"] == 100.0 and n_rows[0]["kfac tokens"] == 0
    assert n_rows[1]["kfac tokens"] < n_rows[2]["kfac tokens"]
    assert n_rows[1]["editable %"] > n_rows[2]["editable %"]
    assert all(torch.equal(before[n], p.detach()) for n, p in model.named_parameters())  # restored


def test_ft_point_equals_a_direct_ft_edit(model, tok, swept):
    rows, base, _ = swept
    ft_row = next(r for r in rows if r["method"] == "ft")
    torch.manual_seed(edit_config("ft").seed)
    res = edit(model, tok, REQUESTS, edit_config("ft"), progress=False)
    ev = evaluate_run(model, tok, REQUESTS, ("teacher_forced", "proxies"), base=base, proxy_texts=TEXTS[1:],
                      progress=False)
    res.restore(model)
    assert ft_row["KL"] == pytest.approx(ev["metrics"]["proxies"]["kl_to_base"], rel=1e-6)
    assert ft_row["KL"] > 0
