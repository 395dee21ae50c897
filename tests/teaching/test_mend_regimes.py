"""MEND's regimes table reads the committed run and refuses a run without the sequential point."""

from __future__ import annotations

import json

import pytest

from crispedit_lite.reproduction.committed import committed_path
from crispedit_lite.teaching.mend_regimes import regimes_table


def test_the_committed_regimes_are_the_mean_over_subsets():
    record = json.loads(committed_path("mend-regimes-smollm2.json").read_text())
    table = regimes_table()
    singles = [s["single"]["mean"]["tf_rel"] for s in record["subsets"].values()]
    assert table.loc["single", "TF Rel"] == pytest.approx(sum(singles) / len(singles))
    assert list(table.index) == ["single", "sequential (40 edits)"]
    assert table.attrs["subsets"] == [0, 1, 2] and "mend_regimes.py" in table.attrs["command"]


def test_a_run_without_every_edit_evaluated_at_the_point_is_refused(tmp_path):
    record = json.loads(committed_path("mend-regimes-smollm2.json").read_text())
    for sub in record["subsets"].values():
        for point in sub["sequential"]["curve"]:
            if point["edits_applied"] == 40:
                point["evaluated"] = 10
    path = tmp_path / "regimes.json"
    path.write_text(json.dumps(record))
    with pytest.raises(ValueError, match="no sequential point at 40 edits"):
        regimes_table(path)
