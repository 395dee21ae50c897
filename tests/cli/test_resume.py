"""crispedit_lite.cli, resumable runs: SIGKILL at several points, run again, and get what an uninterrupted run
gets.

* ``edit`` on the embedded SmolLM2 (tiny CPU setting), killed during K-FAC and again after the K-FAC
  cache entry is written: the rerun's metrics, losses and K-FAC factors equal an uninterrupted run's.
* ``collect-kfac --checkpoint-every`` killed after a checkpoint: the rerun resumes from it and
  its factors equal the uninterrupted run's; under ``torchrun`` (two processes, gloo) too.
* ``reproduce --table`` on a stand-in repository (a tiny notebook): finished cells are skipped, a
  failed cell does not stop the table, a cell killed mid-run leaves nothing that counts as finished.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import psutil
import pytest
import torch
import yaml
from safetensors.torch import load_file

pytestmark = pytest.mark.slow

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
KFAC = ["--layers", "20", "--n-capability", "6", "--max-length", "32", "--kfac-labels", "true"]
EDIT = ["edit", "--model", "smollm2-135m-instruct", "--n-edits", "2", "--epochs", "3", "--batch-size", "2",
        "--n-capability", "6", "--capability-max-length", "32", "--layers", "20", "--eval", "teacher_forced",
        "--device", "cpu", "--seed", "0", "--quiet"]


def _kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL ``proc`` and every process it started (a notebook kernel runs in its own session)."""
    parent = psutil.Process(proc.pid)
    for p in [*parent.children(recursive=True), parent]:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    proc.wait(timeout=60)


def run_until(args: list[str], cwd: Path, when, timeout: float = 300, env=None) -> int:
    """Run ``python -m crispedit_lite ARGS``; SIGKILL it once ``when(stderr_text)`` holds. Its status."""
    log = cwd / f"log-{time.monotonic_ns()}.txt"
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "crispedit_lite", *args], cwd=cwd, env=env or ENV,
                                stdout=fh, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        if when(log.read_text(errors="replace")):
            _kill_tree(proc)
            return proc.returncode
        time.sleep(0.05)
    if proc.poll() is None:
        _kill_tree(proc)
    raise AssertionError(f"the kill point was never reached (status {proc.returncode}):\n"
                         f"{log.read_text()[-2000:]}")


def cli(args: list[str], cwd: Path, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "crispedit_lite", *args], cwd=cwd, env=env or ENV,
                          capture_output=True, text=True, timeout=600)


def _factors(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def test_edit_killed_twice_then_rerun_equals_an_uninterrupted_run(tmp_path):
    straight = cli([*EDIT, "--cache-dir", str(tmp_path / "k1"), "--results-dir", str(tmp_path / "r1"),
                    "--run-id", "straight"], tmp_path)
    assert straight.returncode == 0, straight.stderr
    args = [*EDIT, "--cache-dir", str(tmp_path / "k2"), "--results-dir", str(tmp_path / "r2"),
            "--run-id", "resumed"]
    args.remove("--quiet")
    during_kfac = run_until(args, tmp_path, lambda log: re.search(r"K-FAC:.*\| [2-5]/6", log) is not None)
    after_kfac = run_until(args, tmp_path, lambda _: any((tmp_path / "k2").glob("*.safetensors")))
    assert during_kfac == after_kfac == -signal.SIGKILL
    assert not (tmp_path / "r2").exists() or not list((tmp_path / "r2").glob("*.json"))
    final = cli(args + ["--quiet"], tmp_path)
    assert final.returncode == 0, final.stderr
    a = json.loads((tmp_path / "r1" / "straight.json").read_text())
    b = json.loads(Path(final.stdout.strip()).read_text())
    assert b["edit"]["capability"]["hit"] is True and a["edit"]["capability"]["hit"] is False
    assert a["metrics"] == b["metrics"]
    losses = [[t["epoch_losses"] for t in r["edit"]["train"]] for r in (a, b)]
    assert losses[0] and losses[0] == losses[1]
    (fa,), (fb,) = (list((tmp_path / k).glob("*.safetensors")) for k in ("k1", "k2"))
    ta, tb = _factors(fa), _factors(fb)
    assert fa.name == fb.name and ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)


def test_collect_kfac_resumes_from_its_checkpoint(tmp_path):
    base = ["collect-kfac", "--model", "smollm2-135m-instruct", *KFAC, "--capability-source", "offline",
            "--device", "cpu"]
    straight = cli([*base, "--cache-dir", str(tmp_path / "k1"), "--no-progress"], tmp_path)
    assert straight.returncode == 0, straight.stderr
    args = [*base, "--cache-dir", str(tmp_path / "k2"), "--checkpoint-every", "2"]
    assert run_until(args, tmp_path, lambda _: any((tmp_path / "k2").glob("*.ckpt"))) == -signal.SIGKILL
    assert not list((tmp_path / "k2").glob("*.safetensors"))
    again = cli(args + ["--no-progress"], tmp_path)
    assert again.returncode == 0, again.stderr
    assert "resumed from the checkpoint at batch" in again.stdout
    fa, fb = Path(straight.stdout.strip().splitlines()[-1]), Path(again.stdout.strip().splitlines()[-1])
    ta, tb = _factors(fa), _factors(fb)
    assert fa.name == fb.name and all(torch.equal(ta[k], tb[k]) for k in ta)
    assert not list((tmp_path / "k2").glob("*.ckpt"))  # removed once the entry is written
    # two processes under torchrun (gloo): the same factors, up to the order of the sums
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    run = subprocess.run([torchrun, "--nproc_per_node", "2", "-m", "crispedit_lite", *base, "--cache-dir",
                          str(tmp_path / "k3"), "--no-progress"], cwd=tmp_path, env=ENV,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("K-FAC of 1 module(s)") == 1 and "over 2 processes" in run.stdout  # rank 0 only
    tc = _factors(Path(run.stdout.strip().splitlines()[-1]))
    assert all(torch.allclose(ta[k], tc[k], rtol=1e-5, atol=1e-7) for k in ta if ta[k].is_floating_point())


NOTEBOOK_CODE = '''\
import os, time
from crispedit_lite.reproduction.results import write_result
if FAIL:
    raise RuntimeError("this cell fails on purpose")
if os.environ.get("SLOW_CELL") == CELL:
    time.sleep(600)
write_result({"run_id": CELL, "command": "papermill", "timings": {},
              "metrics": {"after": {"teacher_forced": {"scores": {"rel": 100.0}}}},
              "settings": {"model": "m", "dataset": "d", "n_edits": 1, "method": "ft", "seed": 0},
              "environment": {"python": "3", "torch": "2", "device": "cpu", "packages": {}}}, RESULTS_DIR)
'''


def _stand_in_repository(root: Path) -> None:
    (root / "notebooks").mkdir(parents=True)
    (root / "reproduce").mkdir()
    params = nbformat.v4.new_code_cell('CELL = ""\nFAIL = False\nRESULTS_DIR = "results/x"')
    params.metadata["tags"] = ["parameters"]
    nb = nbformat.v4.new_notebook(cells=[params, nbformat.v4.new_code_cell(NOTEBOOK_CODE)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, root / "notebooks" / "09_reproduce_llama3_8b.ipynb")
    for cell, fail in (("table1_a", False), ("table1_b", True), ("table1_c", False)):
        (root / "reproduce" / f"{cell}.yaml").write_text(yaml.safe_dump({"CELL": cell, "FAIL": fail}))
    (root / "reproduce" / "table7_x.yaml").write_text(yaml.safe_dump({"CELL": "table7_x", "FAIL": False}))


def test_reproduce_table_skips_finished_cells_survives_failures_and_resumes_after_sigkill(tmp_path):
    root, res = tmp_path / "repo", tmp_path / "results"
    _stand_in_repository(root)
    args = ["reproduce", "--table", "table1", "--root", str(root), "--results-root", str(res)]
    slow = {**ENV, "SLOW_CELL": "table1_c"}
    status = run_until(args, tmp_path, lambda log: "table1_c: running" in log and
                       any(res.glob(".table1_c.partial.ipynb")), env=slow)
    assert status == -signal.SIGKILL
    assert (res / "table1_a" / "table1_a.json").is_file() and (res / "table1_a.ipynb").is_file()
    assert (res / "table1_b.failed.ipynb").is_file() and not (res / "table1_b").exists()
    assert not (res / "table1_c.ipynb").exists() and not list(res.glob("table1_c/*.json"))
    again = cli(args, tmp_path)
    assert again.returncode == 1  # table1_b still fails
    out = again.stdout
    assert "table1_a: finished (" in out and "table1_b: FAILED: " in out and "table1_c: done" in out
    assert "summary: 3 cell(s): 1 done, 1 skipped (finished), 1 failed: table1_b" in out
    assert (res / "table1_c" / "table1_c.json").is_file() and (res / "table1_c.ipynb").is_file()
    assert not list(res.glob(".*.partial.ipynb")) and not (res / "table7_x").exists()
    one = cli(["reproduce", "table1_c", "--root", str(root), "--results-root", str(res)], tmp_path)
    assert one.returncode == 0 and "1 cell(s): 0 done, 1 skipped" in one.stdout
