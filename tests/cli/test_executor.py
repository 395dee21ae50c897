"""crispedit_lite.cli.executor: ``reproduce --executor local|slurm``, one submitit job per cell.

* Without submitit, ``--executor local`` is one line naming ``pip install crispedit-lite[cluster]``,
  exit 2; a bad profile is one line naming the file and key, before anything runs.
* Slurm, up to the executor's parameters: the profile reaches ``submitit.AutoExecutor`` (monkeypatched,
  no Slurm), a finished cell gets no job, a job that ended without a result is resubmitted with
  ``--retries`` and reported with its log otherwise; the real ``AutoExecutor(cluster="slurm")`` turns
  the profile into the expected ``#SBATCH`` lines.
* Local, end to end on a stand-in repository (a tiny notebook that computes a seeded number): a job
  SIGKILLed mid-way is one FAILED line with its log and exit status 1; the same command again
  resubmits only that cell; every cell ends done exactly once, with the inline executor's results.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import nbformat
import pytest
import yaml

from crispedit_lite.cli import main

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}

NOTEBOOK_CODE = '''\
import os, signal
from pathlib import Path
import torch
from crispedit_lite.reproduction.results import write_result
marker = os.environ.get("KILL_ONCE_MARKER", "")
if marker and CELL == "table1_b" and not Path(marker).exists():
    Path(marker).write_text("killed once")
    os.kill(os.getppid(), signal.SIGKILL)  # the job's process (papermill runs this kernel)
    os.kill(os.getpid(), signal.SIGKILL)
torch.manual_seed(SEED)
score = float(torch.linalg.svdvals(torch.randn(12, 12, dtype=torch.float64))[0])
with open(os.environ["RUNS_LOG"], "a") as log:
    log.write(CELL + "\\n")
write_result({"run_id": CELL, "command": "papermill", "timings": {},
              "metrics": {"after": {"teacher_forced": {"scores": {"rel": score}}}},
              "settings": {"model": "m", "dataset": "d", "n_edits": 1, "method": "ft", "seed": SEED},
              "environment": {"python": "3", "torch": "2", "device": "cpu", "packages": {}}}, RESULTS_DIR)
'''


def _stand_in(root: Path, cells: dict[str, int]) -> None:
    (root / "notebooks").mkdir(parents=True)
    (root / "reproduce").mkdir()
    params = nbformat.v4.new_code_cell('CELL = ""\nSEED = 0\nRESULTS_DIR = "results/x"')
    params.metadata["tags"] = ["parameters"]
    nb = nbformat.v4.new_notebook(cells=[params, nbformat.v4.new_code_cell(NOTEBOOK_CODE)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, root / "notebooks" / "09_reproduce_llama3_8b.ipynb")
    for cell, seed in cells.items():
        (root / "reproduce" / f"{cell}.yaml").write_text(yaml.safe_dump({"CELL": cell, "SEED": seed}))


def _one_error_line(capsys) -> str:
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert out == "" and len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_without_submitit_the_error_names_the_extra(tmp_path, monkeypatch, capsys):
    _stand_in(tmp_path / "repo", {"table1_a": 1})
    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit raises ImportError
    code = main(["reproduce", "--table", "table1", "--root", str(tmp_path / "repo"), "--results-root",
                 str(tmp_path / "res"), "--executor", "local"])
    assert code == 2 and "pip install crispedit-lite[cluster]" in _one_error_line(capsys)
    assert not (tmp_path / "res").exists()


@pytest.mark.parametrize(("text", "phrase"), [
    ("partition: [gpu\n", "cannot be read as YAML or JSON"),
    ("- 1\n", "expected a mapping of job resources"),
    ("timeout_min: 2h\n", "key timeout_min must be int, got '2h'"),
    ("timeout_min: 60\nmem_gb: -4\n", "key mem_gb must be positive"),
    ("timeout_min: 60\ngpus: 1\n", "unknown key gpus"),
])
def test_a_bad_profile_is_one_line(tmp_path, capsys, text, phrase):
    _stand_in(tmp_path / "repo", {"table1_a": 1})
    profile = tmp_path / "p.yaml"
    profile.write_text(text)
    code = main(["reproduce", "table1_a", "--root", str(tmp_path / "repo"), "--results-root",
                 str(tmp_path / "res"), "--executor", "slurm", "--profile", str(profile)])
    line = _one_error_line(capsys)
    assert code == 2 and f"argument --profile: {profile}: {phrase}" in line, line
    assert not (tmp_path / "res").exists()


def test_slurm_needs_a_time_limit(tmp_path, capsys):
    _stand_in(tmp_path / "repo", {"table1_a": 1})
    code = main(["reproduce", "table1_a", "--root", str(tmp_path / "repo"), "--executor", "slurm"])
    assert code == 2 and "needs a profile with timeout_min" in _one_error_line(capsys)


class _FakeJob:
    def __init__(self, folder: Path, job_id: str, outcome) -> None:
        self.job_id, self.state, self._outcome = job_id, "COMPLETED", outcome
        self.paths = SimpleNamespace(stdout=folder / f"{job_id}_0_log.out")

    def done(self) -> bool:
        return True

    def result(self):
        if isinstance(self._outcome, BaseException):
            self.state = "NODE_FAIL"
            raise self._outcome
        return self._outcome


def test_slurm_jobs_get_the_profile_and_a_dead_job_is_resubmitted(tmp_path, monkeypatch, capsys):
    submitit = pytest.importorskip("submitit")
    from submitit.core.utils import UncompletedJobError

    from crispedit_lite.reproduction.finished import write_marker
    from crispedit_lite.reproduction.results import write_result
    from tests.helpers import cell_run_record

    root, res = tmp_path / "repo", tmp_path / "res"
    _stand_in(root, {"table1_a": 1, "table1_b": 2, "table1_c": 3})
    result = write_result(cell_run_record("table1_a"), res / "table1_a")  # table1_a is finished
    nbformat.write(nbformat.v4.new_notebook(), res / "table1_a.ipynb")
    write_marker(res, "table1_a", result, res / "table1_a.ipynb", root / "reproduce" / "table1_a.yaml")
    made, submitted = [], []

    class FakeAutoExecutor:
        def __init__(self, folder, cluster):
            self.folder, self.cluster = Path(folder), cluster
            made.append(self)

        def update_parameters(self, **kw):
            self.params = kw

        def submit(self, fn, *args):
            cell = args[1]
            submitted.append((fn, cell, args[-1]))
            attempt = sum(1 for s in submitted if s[1] == cell)
            if cell == "table1_b" and attempt == 1:
                outcome = UncompletedJobError("job 101 has not produced any output (state: NODE_FAIL)")
            elif cell == "table1_c":
                outcome = {"cell": cell, "status": "failed", "message": "FAILED: PapermillExecutionError: x"}
            else:
                outcome = {"cell": cell, "status": "done", "message": "done; result r.json", "result": "r"}
            return _FakeJob(self.folder, str(100 + len(submitted)), outcome)

    monkeypatch.setattr(submitit, "AutoExecutor", FakeAutoExecutor)
    profile = tmp_path / "cluster.json"
    profile.write_text(json.dumps({"partition": "gpu", "gpus_per_node": 1, "timeout_min": 240, "mem_gb": 64,
                                   "cpus_per_task": 8, "slurm_account": "lab"}))
    args = ["reproduce", "--table", "table1", "--root", str(root), "--results-root", str(res), "--executor",
            "slurm", "--profile", str(profile), "--retries", "1", "--force"]
    from crispedit_lite.cli import build_parser
    from crispedit_lite.cli.executor import run_jobs
    from crispedit_lite.cli.reproduce import finished_result, reproduce_cell

    parsed = build_parser().parse_args(args[:-1])  # without --force: table1_a stays skipped
    def run(parsed, cells):
        return run_jobs(parsed, cells, res, lambda c: finished_result(res, c, root)[0], reproduce_cell,
                        lambda c, force: (root, c, {}, res, force), poll_s=0)

    outcomes = run(parsed, ["table1_a", "table1_b", "table1_c"])
    out = capsys.readouterr().out
    assert submitted == [(reproduce_cell, "table1_b", False), (reproduce_cell, "table1_c", False),
                         (reproduce_cell, "table1_b", False)]
    assert {m.cluster for m in made} == {"slurm"}
    assert made[0].folder == res / "jobs" / "table1_b"
    assert made[0].params == {"slurm_partition": "gpu", "gpus_per_node": 1, "timeout_min": 240, "mem_gb": 64,
                              "cpus_per_task": 8, "slurm_account": "lab", "name": "crispedit-table1_b",
                              "stderr_to_stdout": True}
    assert f"table1_a: finished ({result}); skipped" in out
    assert "table1_b: job 101 ended without a result (state NODE_FAIL); resubmitting (attempt 2 of 2)" in out
    log_c = res / "jobs" / "table1_c" / "102_0_log.out"
    assert f"table1_c: FAILED: PapermillExecutionError: x; log {log_c}" in out
    assert [outcomes[c]["status"] for c in ("table1_a", "table1_b", "table1_c")] == \
        ["skipped", "done", "failed"]

    submitted.clear()  # --force: the finished cell is submitted too, forced on its first attempt only
    parsed = build_parser().parse_args([*args[:-3], "--force"])
    run(parsed, ["table1_a"])
    assert submitted == [(reproduce_cell, "table1_a", True)]


def test_the_real_slurm_executor_writes_the_profile_into_sbatch(tmp_path, monkeypatch):
    pytest.importorskip("submitit")
    from crispedit_lite.cli.checks import UsageError
    from crispedit_lite.cli.executor import make_executor

    monkeypatch.setenv("PATH", str(tmp_path / "no-slurm"))
    with pytest.raises(UsageError, match='argument --executor slurm: Could not detect "srun"'):
        make_executor("slurm", tmp_path, {"timeout_min": 5}, "x")
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "srun").write_text("#!/bin/sh\nexit 1\n")  # submitit looks for srun on the PATH
    (tmp_path / "bin" / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    profile = {"partition": "gpu", "gpus_per_node": 1, "timeout_min": 240, "mem_gb": 64, "cpus_per_task": 8,
               "slurm_account": "lab"}
    ex = make_executor("slurm", tmp_path, profile, "crispedit-table1_zsre_ft")
    text = ex._executor._make_submission_file_text("python -m x", "uid")
    for line in ("--partition=gpu", "--gpus-per-node=1", "--time=240", "--mem=64GB", "--cpus-per-task=8",
                 "--account=lab", "--job-name=crispedit-table1_zsre_ft"):
        assert f"#SBATCH {line}\n" in text, line
    assert "#SBATCH --error" not in text  # standard error goes to the one log
    with pytest.raises(UsageError, match="submitit refused a parameter: .*slurm_acount"):
        make_executor("slurm", tmp_path, {**profile, "slurm_acount": "lab"}, "x")


def _cli(args: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "crispedit_lite", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)


def _finished(res: Path, cells) -> dict[str, dict]:
    from crispedit_lite.reproduction.finished import marker_path

    out = {}
    for cell in cells:
        marker = json.loads(marker_path(res, cell).read_text())
        assert sorted(p.name for p in (res / cell).glob("*.json")) == [f"{cell}.json"]
        out[cell] = json.loads(Path(marker["result"]).read_text())
    return out


@pytest.mark.slow
def test_local_jobs_killed_and_resubmitted_end_with_the_inline_results(tmp_path, monkeypatch, capsys):
    pytest.importorskip("submitit")
    cells = {"table1_a": 1, "table1_b": 2, "table1_c": 3}
    root = tmp_path / "repo"
    _stand_in(root, cells)
    base = ["reproduce", "--table", "table1", "--root", str(root)]
    monkeypatch.setenv("RUNS_LOG", str(tmp_path / "inline.log"))
    assert main([*base, "--results-root", str(tmp_path / "inline")]) == 0
    assert "summary: 3 cell(s): 3 done" in capsys.readouterr().out

    res, runs = tmp_path / "local", tmp_path / "local.log"
    env = {**ENV, "RUNS_LOG": str(runs), "KILL_ONCE_MARKER": str(tmp_path / "killed-once")}
    args = [*base, "--results-root", str(res), "--executor", "local", "--max-parallel", "2"]
    first = _cli(args, tmp_path, env)
    assert first.returncode == 1, first.stdout + first.stderr
    failed = [ln for ln in first.stdout.splitlines() if "FAILED" in ln]
    assert len(failed) == 1 and failed[0].startswith("table1_b: FAILED: job ") \
        and "ended without a result" in failed[0], first.stdout
    log = Path(failed[0].rsplit("; log ", 1)[1])
    assert log.is_file() and log.parent == res / "jobs" / "table1_b"
    assert "table1_b: running" in log.read_text()
    assert "summary: 3 cell(s): 2 done, 0 skipped (finished), 1 failed: table1_b" in first.stdout
    assert (tmp_path / "killed-once").is_file() and not (res / "table1_b.done.json").exists()

    again = _cli(args, tmp_path, env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "table1_a: finished (" in again.stdout and "table1_c: finished (" in again.stdout
    assert again.stdout.count("submitted as local job") == 1 and "table1_b: submitted" in again.stdout
    assert "summary: 3 cell(s): 1 done, 2 skipped (finished), 0 failed" in again.stdout
    assert sorted(runs.read_text().split()) == sorted(cells)  # every cell ran to the end exactly once
    inline, local = _finished(tmp_path / "inline", cells), _finished(res, cells)
    for cell in cells:
        assert local[cell]["metrics"] == inline[cell]["metrics"] and local[cell]["settings"] == \
            inline[cell]["settings"]
    assert len({r["metrics"]["after"]["teacher_forced"]["scores"]["rel"] for r in local.values()}) == 3
