"""crispedit_lite.editing.precision: the share of an update lost to the weights' rounding, exact on
constructed cases, and recorded (and warned) by the closed-form editors in reduced precision."""

from __future__ import annotations

import warnings

import pytest
import torch

from crispedit_lite.editing import edit
from crispedit_lite.editing.precision import LOSS_WARN, RoundingLog, rounding_loss
from crispedit_lite.editing.registry import paper_dtype, paper_dtypes
from crispedit_lite.models import random_init_model
from tests.helpers import REQUESTS, ROOT, edit_config


def test_rounding_loss_is_exact_on_representable_cases():
    w = torch.ones(4, 3)
    # bfloat16 keeps 8 significant bits: next to 1.0 the spacing is 2^-7
    assert rounding_loss(w.bfloat16(), torch.full((4, 3), 2.0 ** -10)) == 1.0  # rounded away entirely
    assert rounding_loss(w.bfloat16(), torch.full((4, 3), 2.0 ** -7)) == 0.0  # representable
    assert rounding_loss(w.half(), torch.full((4, 3), 2.0 ** -10)) == 0.0  # float16 keeps 11 bits
    # half the entries lost: ||lost|| / ||delta|| = sqrt(1/2)
    d = torch.full((4, 3), 2.0 ** -7)
    d[:2] = 2.0 ** -10
    lost = 2.0 ** -10 * 6 ** 0.5  # six entries of 2^-10 rounded away
    assert rounding_loss(w.bfloat16(), d) == pytest.approx(lost / torch.linalg.norm(d).item())
    assert rounding_loss(w.bfloat16(), torch.zeros(4, 3)) == 0.0
    assert rounding_loss(w, torch.full((4, 3), 1e-3)) <= 2.0 ** -24 / 1e-3  # float32: half a spacing
    with pytest.raises(ValueError, match="differ in shape"):
        rounding_loss(w, torch.zeros(3, 4))


def test_rounding_log_measures_reduced_precision_only_and_warns_above_one_percent():
    log = RoundingLog("memit")
    log.measure("a", torch.ones(2, 2), torch.full((2, 2), 1e-9))
    assert log.summary() == {"weight_dtype": "float32", "warn_above": LOSS_WARN, "rounding_loss": None,
                             "warning": None}
    log = RoundingLog("memit")
    log.measure("a", torch.ones(2, 2).bfloat16(), torch.full((2, 2), 2.0 ** -7))
    log.measure("b", torch.ones(2, 2).bfloat16(), torch.full((2, 2), 2.0 ** -10))
    with pytest.warns(UserWarning, match=r"memit: .*bfloat16 weights loses up to 100.0 % .*\(b\)"):
        out = log.summary()
    assert out["rounding_loss"] == {"max": 1.0, "mean": 0.5, "per_module": {"a": 0.0, "b": 1.0}}
    assert "float32" in out["warning"]


def test_closed_form_editor_in_bfloat16_records_and_warns(tok):
    model = random_init_model("tiny-llama", dtype=torch.bfloat16, seed=0)
    cfg = edit_config("ultraedit", ultra_lr=1e-6, ultra_modules="pattern", chunk_size=3)
    with pytest.warns(UserWarning, match="ultraedit: adding its updates to bfloat16 weights loses"):
        res = edit(model, tok, REQUESTS, cfg, progress=False)
    p = res.details["precision"]
    assert p["weight_dtype"] == "bfloat16" and p["rounding_loss"]["max"] > LOSS_WARN and p["warning"]
    model32 = random_init_model("tiny-llama", dtype=torch.float32, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # float32: nothing to warn about
        res = edit(model32, tok, REQUESTS, cfg, progress=False)
    assert res.details["precision"]["rounding_loss"] is None


def test_the_book_page_prints_the_precision_table_of_the_registry():
    from crispedit_lite.editing.registry import registry

    table = paper_dtypes()
    assert table["memit"] == table["alphaedit"] == table["lora"] == table["adam_nscl"] == "float32"
    assert table["crispedit"] == "bfloat16" and table["ultraedit"] == "float16"
    by_row = {e.paper_row: n for n, e in registry().items() if e.paper_row}
    page = (ROOT / "book" / "reproducing.md").read_text().split("## Precision", 1)[1].split("\n## ")[0]
    rows = [ln.strip("|").split("|") for ln in page.splitlines() if ln.startswith("| ")][1:]
    shown = {}
    for names, _, dtype in rows:
        for row in names.split(","):
            shown[by_row[row.strip()]] = dtype.strip()
    assert {n: paper_dtype(n) for n in shown} == shown
    assert set(shown) >= {"crispedit", "crispedit_seq", "ft", "ft_seq", "locbf_ft", "lora", "lora_seq",
                          "adam_nscl", "memit", "alphaedit", "ultraedit"}
