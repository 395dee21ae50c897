r"""``reproduce --executor local|slurm``: one ``submitit`` job per paper table cell.

Each cell that is not finished becomes one job that runs
:func:`crispedit_lite.cli.reproduce.reproduce_cell` (the function the inline executor calls), so the
job writes the same results tree, the same executed notebook and the same marker
``RESULTS_ROOT/<cell>.done.json``: a finished cell is skipped without a job, and chapter 11 reads the
results as it reads those of an inline run. ``local`` starts the jobs as processes on this machine
(``--max-parallel`` at once, 1 unless given); ``slurm`` submits them with ``sbatch`` with the
resources of ``--profile FILE``, a YAML or JSON mapping::

    partition: gpu          # -> slurm_partition
    gpus_per_node: 1
    timeout_min: 240        # per cell; required for slurm
    mem_gb: 64
    cpus_per_task: 8
    slurm_account: my-lab   # any other slurm_* parameter of submitit

The jobs' logs go to ``RESULTS_ROOT/jobs/<cell>/<job id>_0_log.out`` (standard error included). A
job whose cell failed, or that ended without a result (killed, out of time or memory, preempted), is
one ``FAILED`` line naming its log, and the exit status is 1; ``--retries N`` resubmits a job that
ended without a result up to ``N`` times (a notebook that failed is not resubmitted). Running the
same command again resubmits exactly the cells that are not finished.

Described on the book page ``reproducing``.
"""

from __future__ import annotations

import argparse
import collections
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from crispedit_lite.cli.checks import UsageError

__all__ = ["GENERIC_KEYS", "check_options", "load_profile", "make_executor", "require_submitit", "run_jobs"]

#: Profile keys shared by every executor, and the type each must have (``partition``: Slurm's).
GENERIC_KEYS: dict[str, type | tuple[type, ...]] = {
    "partition": str, "gpus_per_node": int, "timeout_min": int, "mem_gb": (int, float),
    "cpus_per_task": int, "nodes": int, "tasks_per_node": int,
}
#: A local job's time limit when the profile gives none (submitit's own default is two minutes).
LOCAL_TIMEOUT_MIN = 3 * 24 * 60


def require_submitit() -> Any:
    """The ``submitit`` module, or a :class:`UsageError` that says how to install it.

    Described on the book page ``reproducing``.
    """
    try:
        import submitit
    except ImportError:
        raise UsageError("argument --executor: local and slurm need the submitit package; install it with "
                         "pip install crispedit-lite[cluster]") from None
    return submitit


def load_profile(path: str | Path) -> dict[str, Any]:
    """The job resources of a YAML or JSON profile, checked: known keys with values of the right type.

    Keys: :data:`GENERIC_KEYS`, and ``slurm_*`` / ``local_*`` parameters that ``submitit`` checks
    itself when the executor is made. Described on the book page ``reproducing``.
    """
    import yaml

    shown = f"argument --profile: {path}"
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"{shown}: no such file; expected a YAML or JSON mapping of job resources") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise UsageError(f"{shown}: cannot be read as YAML or JSON ({' '.join(str(err).split())[:160]})"
                         ) from None
    if not isinstance(data, dict):
        raise UsageError(f"{shown}: expected a mapping of job resources (partition, timeout_min, ...), got "
                         f"{type(data).__name__}")
    for key, value in data.items():
        key = str(key)
        if key in GENERIC_KEYS:
            want = GENERIC_KEYS[key]
            if isinstance(value, bool) or not isinstance(value, want):
                names = " or ".join(t.__name__ for t in (want if isinstance(want, tuple) else (want,)))
                raise UsageError(f"{shown}: key {key} must be {names}, got {value!r}")
            if key != "partition" and not value > 0 and not (key == "gpus_per_node" and value == 0):
                raise UsageError(f"{shown}: key {key} must be positive, got {value!r}")
        elif not key.startswith(("slurm_", "local_")):
            raise UsageError(f"{shown}: unknown key {key}; expected {', '.join(GENERIC_KEYS)} or a slurm_* "
                             "parameter of submitit")
    return {str(k): v for k, v in data.items()}


def check_options(args: argparse.Namespace) -> dict[str, Any]:
    """Check ``--profile``, ``--max-parallel`` and ``--retries`` and that submitit is installed; the profile.

    Described on the book page ``reproducing``.
    """
    if args.max_parallel is not None and args.max_parallel < 1:
        raise UsageError(f"argument --max-parallel: expected at least 1, got {args.max_parallel}")
    if args.retries < 0:
        raise UsageError(f"argument --retries: expected 0 or more, got {args.retries}")
    profile = load_profile(args.profile) if args.profile else {}
    if args.executor == "slurm" and "timeout_min" not in profile:
        raise UsageError("argument --profile: --executor slurm needs a profile with timeout_min (minutes "
                         "per cell), e.g. partition, gpus_per_node, timeout_min, mem_gb, cpus_per_task")
    require_submitit()
    return profile


def make_executor(kind: str, folder: Path, profile: dict[str, Any], name: str) -> Any:
    """A ``submitit.AutoExecutor`` for ``kind`` (``local`` or ``slurm``) with the profile's resources.

    ``partition`` becomes ``slurm_partition``; standard error goes to the standard output log. A
    parameter that submitit refuses is a :class:`UsageError` naming it.

    Described on the book page ``reproducing``.
    """
    submitit = require_submitit()
    params = {("slurm_partition" if k == "partition" else k): v for k, v in profile.items()}
    params.setdefault("timeout_min", LOCAL_TIMEOUT_MIN)
    params.update(name=name, stderr_to_stdout=True)
    try:
        executor = submitit.AutoExecutor(folder=str(folder), cluster=kind)
    except RuntimeError as err:  # slurm without srun on the PATH
        raise UsageError(f"argument --executor {kind}: {err}") from None
    try:
        executor.update_parameters(**params)
    except (NameError, ValueError, AssertionError, TypeError) as err:
        lines = [ln for ln in str(err).splitlines() if ln.strip()]
        raise UsageError(f"argument --profile: submitit refused a parameter: {lines[0] if lines else err}"
                         ) from None
    return executor


def _log(job: Any) -> Path:
    return Path(job.paths.stdout)


def _last_line(err: BaseException) -> str:
    """The exception line of the trace in a ``FailedJobError`` (between its two rules of dashes)."""
    parts = str(err).split("-" * 22)
    lines = [ln.strip() for ln in (parts[1] if len(parts) > 2 else str(err)).splitlines() if ln.strip()]
    return lines[-1] if lines else type(err).__name__


def run_jobs(args: argparse.Namespace, cells: list[str], results_root: Path,
             finished: Callable[[str], Path | None], job: Callable[..., dict[str, Any]],
             job_args: Callable[[str, bool], tuple[Any, ...]], poll_s: float | None = None
             ) -> dict[str, dict[str, Any]]:
    """Submit one job per unfinished cell, at most ``--max-parallel`` at once; ``{cell: outcome}``.

    ``finished(cell)`` is the result of a finished cell (skipped without a job) or ``None``; a job
    runs ``job(*job_args(cell, force))``, i.e. :func:`~crispedit_lite.cli.reproduce.reproduce_cell`,
    and its outcome is the dict that returns, with ``log``; a job that ended without one is
    ``status = "failed"``. On Ctrl-C the running jobs are cancelled.

    Described on the book page ``reproducing``.
    """
    require_submitit()
    from submitit.core.utils import FailedJobError, UncompletedJobError

    profile = load_profile(args.profile) if args.profile else {}
    kind = args.executor
    limit = args.max_parallel or (1 if kind == "local" else len(cells))
    poll = poll_s if poll_s is not None else (0.5 if kind == "local" else 15.0)
    outcomes: dict[str, dict[str, Any]] = {}
    queue: collections.deque[tuple[str, int]] = collections.deque()
    for cell in cells:
        found = finished(cell)
        if found is not None and not args.force:
            print(f"{cell}: finished ({found}); skipped (use --force to run again)", flush=True)
            outcomes[cell] = {"cell": cell, "status": "skipped", "result": str(found)}
        else:
            queue.append((cell, 1))
    results_root.mkdir(parents=True, exist_ok=True)
    running: dict[str, tuple[Any, int]] = {}
    try:
        while queue or running:
            while queue and len(running) < limit:
                cell, attempt = queue.popleft()
                executor = make_executor(kind, results_root / "jobs" / cell, profile, f"crispedit-{cell}")
                submitted = executor.submit(job, *job_args(cell, bool(args.force) and attempt == 1))
                running[cell] = (submitted, attempt)
                print(f"{cell}: submitted as {kind} job {submitted.job_id} (attempt {attempt}); log "
                      f"{_log(submitted)}", flush=True)
            time.sleep(poll)
            for cell, (done, attempt) in list(running.items()):
                if not done.done():
                    continue
                del running[cell]
                try:
                    out = dict(done.result(), log=str(_log(done)))
                except UncompletedJobError:
                    if attempt <= args.retries:
                        print(f"{cell}: job {done.job_id} ended without a result (state {done.state}); "
                              f"resubmitting (attempt {attempt + 1} of {args.retries + 1})", flush=True)
                        queue.append((cell, attempt + 1))
                        continue
                    out = {"cell": cell, "status": "failed", "message": f"FAILED: job {done.job_id} ended "
                           f"without a result (state {done.state}: killed, out of time or memory?)"}
                except FailedJobError as err:  # the job's Python raised (not a failed notebook)
                    out = {"cell": cell, "status": "failed",
                           "message": f"FAILED: job {done.job_id} raised {_last_line(err)}"}
                outcomes[cell] = dict(out, log=str(_log(done)))
                if out["status"] == "failed":
                    print(f"{cell}: {out['message']}; log {_log(done)}", flush=True)
                else:
                    print(f"{cell}: {out['message']} (job {done.job_id})", flush=True)
    except KeyboardInterrupt:
        for cell, (live, _) in running.items():
            live.cancel(check=False)
            print(f"{cell}: cancelled job {live.job_id}", flush=True)
        raise
    return outcomes
