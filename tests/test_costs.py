"""crispedit_lite.costs: memory and FLOPs of the dense and matrix-free projectors, the device anchor."""

import json
from importlib import resources
from pathlib import Path

import pytest
import torch

from crispedit_lite import costs
from crispedit_lite.models.presets import DOWN_PROJ_SHAPES
from crispedit_lite.projector import KroneckerProjector


def test_llama_down_proj_matches_device_anchor_and_dossier():
    s = DOWN_PROJ_SHAPES["LLaMA-3-8B"]
    anchor = costs.load_device_anchor()["measurements"]
    assert costs.dense_projector_bytes(s.d_out, s.d_in) == anchor["explicit_projector_bytes_fp32"]
    assert costs.matrix_free_flops(s.d_out, s.d_in) == anchor["project_flops"]
    mf = costs.matrix_free_bytes(s.d_out, s.d_in)
    assert mf["U_in"] == 784 * 2**20 and mf["U_out"] == 64 * 2**20 and mf["mask"] == 56 * 2**20
    dense = costs.dense_projector_bytes(s.d_out, s.d_in)
    assert costs.format_bytes(dense, binary=False) == "13.8 PB"
    assert costs.format_bytes(mf["total"]) == "904.0 MiB"


def test_qwen_and_smollm_shapes():
    q = DOWN_PROJ_SHAPES["Qwen-2.5-1.5B"]
    assert (q.d_in, q.d_out, q.n_params) == (8960, 1536, 8960 * 1536)
    # dossier: explicit projector 7.6e14 B, 0.58 TFLOP per projection
    assert abs(costs.dense_projector_bytes(q.d_out, q.d_in) / 7.6e14 - 1) < 0.01
    assert abs(costs.matrix_free_flops(q.d_out, q.d_in) / 0.58e12 - 1) < 0.01
    sm = DOWN_PROJ_SHAPES["SmolLM2-135M"]
    assert (sm.d_in, sm.d_out) == (1536, 576)


def test_matrix_free_bytes_equal_projector_tensors():
    torch.manual_seed(0)
    d_out, d_in = 5, 7
    A = torch.randn(d_in, d_in)
    S = torch.randn(d_out, d_out)
    proj = KroneckerProjector.from_factors(A @ A.T, S @ S.T, 0.9)
    mf = costs.matrix_free_bytes(d_out, d_in)
    assert mf["U_in"] == proj.U_in.nbytes
    assert mf["U_out"] == proj.U_out.nbytes
    assert mf["mask"] == proj.mask.nbytes
    assert costs.dense_projector_bytes(d_out, d_in) == proj.dense().nbytes


def test_flop_formula_counts_the_four_gemms():
    d_out, d_in = 3, 11
    gemm = lambda m, k, n: 2 * m * k * n  # noqa: E731
    expected = gemm(d_out, d_out, d_in) + gemm(d_out, d_in, d_in) * 2 + gemm(d_out, d_out, d_in)
    assert costs.matrix_free_flops(d_out, d_in) == expected
    assert costs.dense_projection_flops(d_out, d_in) == 2 * (d_out * d_in) ** 2


def test_dense_is_quadratically_worse():
    # the ratio of dense to matrix-free memory grows without bound with the layer size
    ratios = [costs.dense_projector_bytes(d, d) / costs.matrix_free_bytes(d, d)["total"]
              for d in (8, 64, 512)]
    assert ratios[0] < ratios[1] < ratios[2]
    # and for a 4096 x 14336 layer it is seven orders of magnitude
    llama = costs.dense_projector_bytes(4096, 14336) / costs.matrix_free_bytes(4096, 14336)["total"]
    assert ratios[2] > 1e4 and 1e7 < llama < 1e8


def test_cost_table_rows():
    rows = costs.cost_table(DOWN_PROJ_SHAPES)
    assert [r["model"] for r in rows] == list(DOWN_PROJ_SHAPES)
    for r in rows:
        assert r["matrix_free_bytes"] == r["U_in_bytes"] + r["U_out_bytes"] + r["mask_bytes"]
        assert r["dense_bytes"] > r["matrix_free_bytes"]


@pytest.mark.parametrize("bad", [0, -3, 2.5])
def test_bad_dims_raise(bad):
    with pytest.raises(ValueError, match="d_out"):
        costs.dense_projector_bytes(bad, 4)
    with pytest.raises(ValueError, match="d_in"):
        costs.matrix_free_flops(4, bad)


def test_format_bytes():
    assert costs.format_bytes(512) == "512 B"
    assert costs.format_bytes(2048) == "2.0 KiB"
    assert costs.format_bytes(1.5e9, binary=False) == "1.5 GB"
    with pytest.raises(ValueError):
        costs.format_bytes(-1)


def test_device_anchor_is_package_data_and_unchanged():
    data = costs.load_device_anchor()
    assert "H200" in data["source"] and data["date"].startswith("2026")
    m = data["measurements"]
    assert m["project_down_proj_ms_tf32_True"] < m["project_down_proj_ms_tf32_False"]
    assert m["eigh_fp32_4096_ms"] < m["eigh_fp32_14336_ms"]
    path = resources.files("crispedit_lite").joinpath("resources/device_anchor.json")
    assert path.is_file()
    shared = Path(__file__).resolve().parents[2] / "shared" / "reference" / "device-anchor.json"
    if shared.is_file():  # the project lead's original, when this checkout sits beside it
        assert json.loads(shared.read_text()) == m
