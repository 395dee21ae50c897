"""crispedit_lite.reproduction.inventory: every result sorted by the kind it records, never by luck."""

from __future__ import annotations

import json

import pytest

from crispedit_lite.reproduction.inventory import KINDS, inventory, read_committed, read_folder, result_kind
from tests.helpers import cell_run_record


@pytest.mark.parametrize(
    ("record", "name", "kind"),
    [
        ({"benchmark": "step_ratio", "rows": [{"form": "ft"}]}, "x.json", "step_ratio"),
        ({"benchmark": "mend_regimes", "rows": []}, "x.json", "mend"),
        ({"kind": "long-horizon", "rows": []}, "x.json", "long_horizon"),
        # a declared kind wins over the shape and the name
        (
            {"benchmark": "sweeps", "rows": [{"side_by_side": {}, "method": "ft"}]},
            "cpu-table1-x.json",
            "sweeps",
        ),
        ({"rows": [{"method": "ft", "seed": 0, "side_by_side": {}}]}, "whatever.json", "table1"),
        ({"rows": [{"sweep": "gamma", "value": 0.5}]}, "a.json", "sweeps"),
        ({"rows": [{"eta": 1e-6}]}, "a.json", "eta_sweep"),
        ({"presets": {"llama3-8b": {}}}, "a.json", "scale"),
        ({"editor": "ft_seq", "stream": {"chunk_size": 10}, "rows": []}, "a.json", "long_horizon"),
        ({"rows": []}, "long-horizon-smollm2-ft_seq.json", "long_horizon"),
        ({"what": "?"}, "mend-regimes-smollm2.json", "mend"),
        ({"what": "?"}, "notes.json", "other"),
        ({"benchmark": "something new"}, "a.json", "other"),
    ],
)
def test_result_kind(record, name, kind):
    assert result_kind(record, name) == kind


def test_a_run_of_the_command_line_is_a_run():
    assert result_kind(cell_run_record("r1"), "r1.json") == "run"


def test_every_committed_file_has_a_known_kind():
    records, problems = read_committed()
    assert not problems and records
    kinds = {n: result_kind(r, n) for n, r in records.items()}
    assert "other" not in kinds.values(), kinds
    assert {n for n, k in kinds.items() if k == "table1"} == {
        n for n in records if n.startswith("cpu-table1-")
    }
    assert kinds["ch06-sweeps-smollm2.json"] == "sweeps" and kinds["scale-h200-2026-11-30.json"] == "scale"


def test_read_folder_names_what_it_cannot_read(tmp_path):
    assert read_folder(tmp_path / "missing") == ({}, [])
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "good.json").write_text(json.dumps({"rows": [{"eta": 1e-4}]}))
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "list.json").write_text("[1, 2]")
    records, problems = read_folder(tmp_path)
    assert list(records) == ["sub/good.json"]
    assert len(problems) == 2 and problems[0].startswith("bad.json: ")
    assert problems[1] == "list.json: a JSON object was expected, got list"


def test_inventory_orders_by_kind_and_describes_each_file():
    records = {
        "b.json": {
            "benchmark": "step_ratio",
            "rows": [{"form": "ft"}, {"form": "reference"}],
            "batch": 8,
            "device": "cpu",
            "model": "m",
            "created": "2026-01-02 10:00:00",
        },
        "a.json": {
            "model": "m",
            "n_edits": 40,
            "seeds": [0, 1],
            "created": "2026-01-01 09:00",
            "rows": [
                {"method": "base", "side_by_side": {}},
                {"method": "ft", "side_by_side": {}},
                {"method": "crispedit", "side_by_side": {}},
            ],
        },
        "c.json": {"what": "?"},
    }
    df = inventory(records)
    assert list(df.columns) == ["file", "kind", "model", "what", "created"]
    assert list(df["file"]) == ["a.json", "b.json", "c.json"]
    assert list(df["kind"]) == ["table1", "step_ratio", "other"]
    assert df.loc[0, "what"] == "2 editors x 2 subsets, 40 edits"
    assert df.loc[1, "what"] == "2 forms, batch 8, on cpu" and df.loc[1, "created"] == "2026-01-02 10:00"
    assert set(df["kind"]) <= set(KINDS)
