"""crispedit_lite.reproduction.results: strict JSON, NaN refused, diverged runs recorded but never counted."""

from __future__ import annotations

import json
import os
import stat

import pytest

from crispedit_lite.reproduction.results import (
    nonfinite_paths,
    read_results,
    result_problem,
    validate_result,
    write_result,
)
from tests.helpers import cell_run_record


def test_validate_result_refuses_nan_and_infinity_naming_the_field():
    record = cell_run_record("r")
    validate_result(record)
    record["metrics"]["after"]["teacher_forced"]["scores"]["rel"] = float("nan")
    record["timings"]["total_s"] = float("inf")
    where = r"result field metrics.after.teacher_forced.scores.rel"
    with pytest.raises(ValueError, match=where + r": not a finite number \(NaN or infinity\), and 1 more"):
        validate_result(record)
    assert nonfinite_paths(record) == ["metrics.after.teacher_forced.scores.rel", "timings.total_s"]


def test_a_bare_nan_in_an_old_file_is_an_error_naming_the_file(tmp_path):
    (tmp_path / "old.json").write_text(json.dumps(cell_run_record("old")).replace("100.0", "NaN", 1))
    with pytest.raises(ValueError, match=r"old.json: result field .*: not a finite number"):
        read_results(tmp_path)


def test_a_diverged_run_is_written_as_strict_json_and_never_counts(tmp_path):
    record = cell_run_record("div")
    record["metrics"]["after"]["teacher_forced"]["scores"]["rel"] = float("nan")
    record["edit"]["losses"] = [0.5, float("inf")]
    path = write_result(record, tmp_path)
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    back = json.loads(text)
    assert back["diverged"] == {"nonfinite": ["metrics.after.teacher_forced.scores.rel", "edit.losses[1]"]}
    assert back["metrics"]["after"]["teacher_forced"]["scores"]["rel"] is None
    assert back["notes"][-1].startswith("diverged: 2 non-finite number(s), first metrics.after.")
    validate_result(back)  # a valid record of a diverged run ...
    assert result_problem(back) == ("the run diverged (metrics.after.teacher_forced.scores.rel was not "
                                    "finite)")  # ... that is not a result
    assert read_results(tmp_path) == []
    assert read_results(tmp_path, include_diverged=True)[0]["run_id"] == "div"


def test_result_problem_of_a_sound_and_an_empty_record():
    assert result_problem(cell_run_record("ok")) is None
    empty = cell_run_record("empty")
    empty["metrics"]["after"] = {}
    assert result_problem(empty) == "it holds no metrics after the edit"
    assert result_problem({"run_id": "x"}).startswith("result field (top level): ")


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664)])
def test_a_results_json_gets_0666_less_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        path = write_result(cell_run_record("u"), tmp_path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == mode
