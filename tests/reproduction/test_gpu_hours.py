"""crispedit_lite.reproduction.gpu_hours and costs.edit_cell_seconds: GPU-hours of the paper's tables.

The phases are checked against the device anchor by hand; a table's hours are the sum of its cells',
with each K-FAC collection counted once.
"""

from __future__ import annotations

import math

import pytest

from crispedit_lite import costs
from crispedit_lite.reproduction import gpu_hours
from crispedit_lite.reproduction.cells import paper_cell_names


def test_phases_follow_the_anchor():
    m = costs.load_device_anchor()["measurements"]
    t = m["edit_step_fwd_bwd_b32_s32_ms"] / 1e3
    sec = costs.edit_cell_seconds(n_edits=3000, epochs=25, batch_size=32, n_capability=10_000,
                                  layers=[(4096, 14336)] * 5, params_b=m["n_params_B"])
    assert sec["edit"] == pytest.approx(25 * 94 * t)  # ceil(3000 / 32) = 94 batches per epoch
    assert sec["kfac"] == pytest.approx(10_000 * 512 / 1024 * t)
    assert sec["eigh"] == pytest.approx(5 * (m["eigh_fp32_4096_ms"] + m["eigh_fp32_14336_ms"]) / 1e3)
    assert sec["eval"] == pytest.approx(0.6 * 3000 + 2700)
    fp32 = costs.edit_cell_seconds(n_edits=3000, epochs=25, batch_size=32, n_capability=10_000,
                                   layers=[(4096, 14336)], params_b=m["n_params_B"], fp32=True, kfac=False)
    ratio = m["bf16_matmul_tflops"] / (m["project_flops"] / m["project_down_proj_ms_tf32_False"] * 1e3 / 1e12)
    assert fp32["edit"] == pytest.approx(sec["edit"] * ratio) and ratio > 5
    assert fp32["kfac"] == fp32["eigh"] == 0.0


def test_a_table_sums_its_cells_and_collects_each_kfac_once():
    rows = {r["table"]: r for r in gpu_hours.table_gpu_hours()}
    assert set(rows) == {"table1", "table4", "table5", "table7", "table8"}
    for table, row in rows.items():
        cells = paper_cell_names(f"{table}_")
        secs = [gpu_hours.cell_seconds(c) for c in cells]
        jobs = sum(s["eigh"] + s["edit"] + s["eval"] for s, _ in secs) / 3600
        kfac = {key: s["kfac"] for s, key in secs if key is not None}
        assert row["cells"] == len(cells) and row["kfac_collections"] == len(kfac)
        assert math.isclose(row["jobs_h"], jobs) and math.isclose(row["kfac_h"], sum(kfac.values()) / 3600)
        assert math.isclose(row["total_h"], row["jobs_h"] + row["kfac_h"])
    assert rows["table8"]["kfac_collections"] == 1  # every gamma reuses the same factors
    assert rows["table7"]["kfac_collections"] == 8  # one per capability-set size n
