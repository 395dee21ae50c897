r"""Grade submitted notebooks: run each in a confined kernel, judge its answers in a fresh process.

A chapter's exercises are the ``{exercise}`` directives of its markdown (label ``ex-NN-k``); the
first code cell after a directive that calls ``chNN.check_...`` is that exercise's grader cell.
Before any student code runs, the command reads every submission, the instructor's solution
notebooks (``source_dir``: grader cells and hidden tests) and a snapshot of the instructor's files
into memory. Then, for each submission in turn:

1. a fresh temporary folder, a scrubbed environment and a Landlock allow-list
   (:mod:`~crispedit_lite.exercises.isolation`); a judge process (:mod:`judge`) with the graders
   imported; an IPython kernel confined to the allow-list (:mod:`confine`);
2. the submission's cells run in the kernel in order, except grader cells: at a grader cell the
   kernel only *sends the values* that the instructor's grader cell names (plain data,
   :mod:`wire`), and the judge runs that cell, hidden tests included, on them. Student functions
   are not taken from the kernel: a runner process executes their source from the submitted file
   (:mod:`runner`, :mod:`static`), so nothing done to the kernel changes what the judge sees;
3. a hard deadline: every wait is bounded by the time left, and at the deadline (or when a cell
   ignores an interrupt) the kernel, judge and runner are killed with their process groups and any
   orphan they left (:class:`~crispedit_lite.exercises.isolation.ProcessJail`);
4. the instructor's files, the package and every submission are compared with the snapshot and
   restored if they changed; a submission that changed them scores zero.

An error before the ``## Exercises`` heading, or the deadline, stops the notebook: the exercises
graded so far keep their score, the rest score zero with the reason. The grader never raises on a
bad submission, and one submission cannot change another's grade.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import queue
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import nbformat

from crispedit_lite.atomic import write_json_atomic, write_text_atomic
from crispedit_lite.exercises import isolation, static, wire
from crispedit_lite.exercises.student import is_grader_cell, is_solution_cell

__all__ = ["ExerciseScore", "exercise_cells", "grade_notebook", "grade_paths", "write_reports"]

_LABEL = re.compile(r":label:\s*(ex-\d{2}-\d+)")
_EXERCISE = re.compile(r"^(```|:::)\{exercise\}", re.M)
_WRITTEN = re.compile(r"\*\*Written answer\*\*")
_CHECK_CALL = re.compile(r"^ch\d{2}$")


@dataclasses.dataclass
class ExerciseScore:
    """One exercise of one notebook: ``points`` out of ``max_points``, with a status and feedback.

    ``status`` is ``passed``, ``failed`` (the grader or the solution raised), ``not run`` (the
    notebook stopped before it), ``missing`` (no grader cell) or ``manual`` (a written answer,
    graded by hand).

    Listed on the book page ``api``.
    """

    notebook: str
    exercise: str
    points: float
    max_points: float
    status: str
    feedback: str


def exercise_cells(nb: nbformat.NotebookNode) -> dict[str, int | None]:
    """Map each exercise label to the index of its grader cell (``None`` when there is none).

    Raises:
        ValueError: when an ``{exercise}`` directive has no ``:label: ex-NN-k``.

    Listed on the book page ``api``.
    """
    starts = []
    for i, c in enumerate(nb.cells):
        if c.cell_type == "markdown" and _EXERCISE.search(c.source):
            m = _LABEL.search(c.source)
            if not m:
                raise ValueError(f"cell {i}: an {{exercise}} directive needs ':label: ex-NN-k'")
            starts.append((i, m.group(1)))
    out: dict[str, int | None] = {}
    for k, (i, label) in enumerate(starts):
        stop = starts[k + 1][0] if k + 1 < len(starts) else len(nb.cells)
        out[label] = next((j for j in range(i + 1, stop) if is_grader_cell(nb.cells[j])), None)
    return out


def written_exercises(nb: nbformat.NotebookNode) -> set[str]:
    """Labels of the exercises marked ``**Written answer**`` (graded by hand, no grader cell)."""
    out = set()
    for c in nb.cells:
        if c.cell_type == "markdown" and _EXERCISE.search(c.source) and _WRITTEN.search(c.source):
            m = _LABEL.search(c.source)
            if m:
                out.add(m.group(1))
    return out


def _first_exercise_cell(nb: nbformat.NotebookNode) -> int:
    for i, c in enumerate(nb.cells):
        if c.cell_type == "markdown" and (
            re.search(r"^## Exercises\s*$", c.source, re.M) or _EXERCISE.search(c.source)
        ):
            return i
    return len(nb.cells)


def _error_text(err: BaseException | str) -> str:
    if isinstance(err, str):
        text = err
    else:
        ename = getattr(err, "ename", type(err).__name__)
        evalue = getattr(err, "evalue", str(err))
        text = f"{ename}: {evalue}".strip()
    return text if len(text) < 600 else text[:600] + " ..."


def _safe_calls(source: str) -> str:
    """Only the ``chNN.check_...(name, ...)`` calls of a submitted grader cell (no hidden tests)."""
    try:
        tree = ast.parse(static.python_source(source))
    except SyntaxError:
        return ""
    keep = []
    for node in tree.body:
        call = node.value if isinstance(node, ast.Expr) else None
        if (
            isinstance(call, ast.Call)
            and isinstance(call.func, ast.Attribute)
            and isinstance(call.func.value, ast.Name)
            and _CHECK_CALL.match(call.func.value.id)
            and call.func.attr.startswith("check_")
            and not call.keywords
            and all(isinstance(a, (ast.Name, ast.Constant)) for a in call.args)
        ):
            keep.append(f"from crispedit_lite.exercises import {call.func.value.id}\n{ast.unparse(node)}")
    return "\n".join(keep)


@dataclasses.dataclass
class _Plan:
    """What the judge runs for one exercise: code, trusted statements, function and data names."""

    code: str
    trusted: list[tuple[list[str], str]]
    functions: list[str]
    data: list[str]


def _plans(
    src: nbformat.NotebookNode | None, sub: nbformat.NotebookNode, sub_cells: Mapping[str, int | None]
) -> dict[str, _Plan | None]:
    """The judge's plan per exercise: from the instructor's notebook, else the submitted calls only."""
    if src is None:
        codes = {
            lab: (_safe_calls(sub.cells[i].source) if i is not None else None) for lab, i in sub_cells.items()
        }
        trusted_pool: list[tuple[list[str], str]] = []
        student = static.defined_functions(
            c.source for c in sub.cells if c.cell_type == "code" and not is_grader_cell(c)
        )
    else:
        codes = {
            lab: (src.cells[i].source if i is not None else None) for lab, i in exercise_cells(src).items()
        }
        code_cells = [c for c in src.cells if c.cell_type == "code" and not is_grader_cell(c)]
        student = static.defined_functions(c.source for c in code_cells if is_solution_cell(c))
        body = [c.source for c in code_cells if not is_solution_cell(c)]
        trusted_pool = [(n, s) for n, s in static.replay_statements(body) if not any(x in student for x in n)]
    plans: dict[str, _Plan | None] = {}
    for lab, code in codes.items():
        if not code:
            plans[lab] = None
            continue
        try:
            need = static.free_names(code)
        except SyntaxError:
            plans[lab] = None
            continue
        functions = [n for n in need if n in student]
        trusted = [(n, s) for n, s in trusted_pool if set(n) & set(need) and not set(n) & set(functions)]
        provided = {x for n, _ in trusted for x in n}
        data = [n for n in need if n not in student and n not in provided]
        plans[lab] = _Plan(code, trusted, functions, data)
    return plans


class _Kernel:
    """A confined IPython kernel, talked to over local sockets with a bounded wait for everything."""

    def __init__(
        self,
        base: Path,
        spec: dict[str, Any] | None,
        env: dict[str, str],
        cwd: Path,
        jail: isolation.ProcessJail,
        deadline: float,
    ) -> None:
        from jupyter_client import BlockingKernelClient
        from jupyter_client.connect import write_connection_file

        conn = base / "tmp" / "kernel.json"
        write_connection_file(
            str(conn), ip=str(base / "tmp" / "ipc"), transport="ipc", key=secrets.token_hex(16).encode()
        )
        cmd = [sys.executable, "-m", "ipykernel_launcher", "-f", str(conn)]
        if spec is not None:
            spec_path = base.parent / f"{base.name}.landlock.json"
            spec_path.write_text(json.dumps(spec))
            cmd = [sys.executable, str(Path(__file__).with_name("confine.py")), str(spec_path), "--", *cmd]
        log = base.parent / f"{base.name}.log"
        with open(log, "wb") as err:
            self.proc = subprocess.Popen(
                cmd,
                env=env,
                cwd=cwd,
                start_new_session=True,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        jail.add_group(self.proc.pid)
        self.kc = BlockingKernelClient(connection_file=str(conn))
        self.kc.load_connection_file()
        self.kc.start_channels(hb=False)  # liveness is the process itself, not a heartbeat
        try:
            self._wait_ready(log, deadline)
        except BaseException:
            self.close()
            raise

    def _wait_ready(self, log: Path, deadline: float) -> None:
        ready_by = min(deadline, time.monotonic() + 120.0)
        while True:
            msg_id = self.kc.kernel_info()
            try:
                while True:
                    reply = self.kc.get_shell_msg(timeout=1.0)
                    if reply.get("parent_header", {}).get("msg_id") == msg_id:
                        break
                break
            except queue.Empty:
                pass
            if not self.alive() or time.monotonic() >= ready_by:
                tail = log.read_text(errors="replace")[-400:].strip()
                raise RuntimeError(f"the kernel did not start: {tail}")
        while True:  # drain the start-up messages
            try:
                self.kc.get_iopub_msg(timeout=0.2)
            except queue.Empty:
                break

    def alive(self) -> bool:
        return self.proc.poll() is None

    def interrupt(self) -> None:
        try:
            os.kill(self.proc.pid, signal.SIGINT)
        except ProcessLookupError:
            pass

    def execute(self, code: str, deadline: float) -> tuple[str, str, list[str]]:
        """Run ``code``; ``(status, error text, exported payloads)``. ``TimeoutError`` past ``deadline``."""
        msg_id = self.kc.execute(code, store_history=False, allow_stdin=False, stop_on_error=False)
        return self.wait(msg_id, deadline)

    def wait(self, msg_id: str, deadline: float) -> tuple[str, str, list[str]]:
        """Wait for the reply and the outputs of request ``msg_id``."""
        reply, idle, exports, err = None, False, [], ""
        while reply is None or not idle:
            if time.monotonic() >= deadline:
                raise TimeoutError(msg_id)
            if not self.alive():
                raise ChildProcessError("the kernel died")
            try:
                msg = self.kc.get_iopub_msg(timeout=0.1)
                if msg.get("parent_header", {}).get("msg_id") == msg_id:
                    kind, content = msg["msg_type"], msg["content"]
                    if kind == "status" and content.get("execution_state") == "idle":
                        idle = True
                    elif kind in ("display_data", "execute_result") and wire.MIME in content.get("data", {}):
                        exports.append(content["data"][wire.MIME])
                    elif kind == "error":
                        err = _error_text(f"{content.get('ename', '')}: {content.get('evalue', '')}")
            except queue.Empty:
                pass
            while reply is None:
                try:
                    msg = self.kc.get_shell_msg(timeout=0)
                except queue.Empty:
                    break
                if msg.get("parent_header", {}).get("msg_id") == msg_id:
                    reply = msg
        content = reply["content"]
        if content.get("status") == "error" and not err:
            err = _error_text(f"{content.get('ename', '')}: {content.get('evalue', '')}")
        return content.get("status", "error"), err, exports

    def close(self) -> None:
        """Close the channels and destroy their ZMQ context at once (a lingering one blocks at exit)."""
        try:
            self.kc.stop_channels()
        except Exception:  # noqa: BLE001
            pass
        finally:
            ctx = getattr(self.kc, "context", None)
            if ctx is not None and not ctx.closed:
                ctx.destroy(linger=0)


class _Judge:
    """The harness's handle on the judge process of one submission."""

    def __init__(
        self,
        base: Path,
        replay: list,
        runner: dict[str, Any],
        env: dict[str, str],
        jail: isolation.ProcessJail,
    ) -> None:
        to_r, to_w = os.pipe()
        from_r, from_w = os.pipe()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "crispedit_lite.exercises.judge", str(to_r), str(from_w)],
            pass_fds=(to_r, from_w),
            env=env,
            cwd=base,
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=open(base / "judge.log", "wb"),
        )
        jail.add_group(self.proc.pid)
        os.close(to_r)
        os.close(from_w)
        self.fd_in, self.fd_out = from_r, to_w
        wire.write_frame(self.fd_out, wire.dumps({"replay": replay, "runner": runner}))
        self.ready = False

    def wait_ready(self, deadline: float) -> None:
        """Wait until the judge has imported the graders (``TimeoutError`` past ``deadline``)."""
        if not self.ready:
            wire.loads(wire.read_frame(self.fd_in, deadline))
            self.ready = True

    def close(self) -> None:
        """Close the pipes to the judge (its process is killed with the submission's others)."""
        for fd in (self.fd_in, self.fd_out):
            try:
                os.close(fd)
            except OSError:
                pass

    def grade(self, label: str, plan: _Plan, export: str, deadline: float) -> tuple[bool, str]:
        """Judge one exercise; ``(passed, feedback)``. ``TimeoutError`` past ``deadline``."""
        self.wait_ready(deadline)
        req = {
            "label": label,
            "code": plan.code,
            "trusted": plan.trusted,
            "functions": plan.functions,
            "data": plan.data,
            "export": export,
            "seconds": max(1.0, deadline - time.monotonic()),
        }
        wire.write_frame(self.fd_out, wire.dumps(req))
        reply = wire.loads(wire.read_frame(self.fd_in, deadline + 5.0))
        return bool(reply["passed"]), str(reply["feedback"])


def grade_notebook(
    path: str | os.PathLike,
    timeout: float = 600.0,
    cell_timeout: float | None = None,
    source_dir: str | os.PathLike | None = None,
    points: Mapping[str, float] | None = None,
    confine: bool = True,
) -> list[ExerciseScore]:
    """Grade one submitted notebook (see :func:`grade_paths`, which grades many).

    Listed on the book page ``api``.
    """
    return grade_paths(
        [path],
        timeout=timeout,
        cell_timeout=cell_timeout,
        source_dir=source_dir,
        points=points,
        confine=confine,
        keep_path=False,
    )


def _read_source(source_dir: Path | None, name: str) -> nbformat.NotebookNode | None:
    if source_dir is None or not (source_dir / name).is_file():
        return None
    return nbformat.reads((source_dir / name).read_text(encoding="utf-8"), as_version=4)


def grade_paths(
    paths: Iterable[str | os.PathLike],
    *,
    timeout: float = 600.0,
    cell_timeout: float | None = None,
    source_dir: str | os.PathLike | None = None,
    points: Mapping[str, float] | None = None,
    confine: bool = True,
    protect: Iterable[str | os.PathLike] = (),
    on_notebook: Callable[[list[ExerciseScore]], None] | None = None,
    keep_path: bool = True,
) -> list[ExerciseScore]:
    """Grade every ``.ipynb`` among ``paths`` (files, or folders searched recursively, sorted).

    Args:
        paths: submitted notebooks or folders of them.
        timeout: seconds for each notebook, from its kernel's start to its last exercise; at the
            deadline everything the submission started is killed.
        cell_timeout: seconds per cell (default ``timeout``); a cell past it is interrupted, and
            killed with its kernel if it does not stop.
        source_dir: folder of the instructor's solution notebooks (same file names), or ``None``
            to judge only the ``chNN.check_...`` calls of the submitted grader cells.
        points: points per exercise label (default 1 each).
        confine: run student code under Landlock where the system has it (Linux 5.13 or later).
        protect: further paths that student code must neither read nor change (e.g. the grades folder).
        on_notebook: called with all scores so far after each notebook (to write reports as it goes).
        keep_path: report the path as given (else the file name).

    Raises:
        ValueError: when a path does not exist or no notebook is found.

    Listed on the book page ``api``.
    """
    files: list[Path] = []
    roots = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(q for q in p.rglob("*.ipynb") if ".ipynb_checkpoints" not in q.parts)
            roots.append(p)
        elif p.is_file():
            files.append(p)
            roots.append(p)
        else:
            raise ValueError(f"grade: {p} does not exist")
    if not files:
        raise ValueError("grade: no .ipynb found in the given paths")
    src_dir = Path(source_dir).resolve() if source_dir is not None else None
    # everything instructor-side is read before the first kernel starts
    submissions = [(f, f.read_bytes()) for f in files]
    sources = {f.name: _read_source(src_dir, f.name) for f in files}
    protected = [*roots, *protect] + ([src_dir] if src_dir is not None else [])
    guard = isolation.FileGuard([*([src_dir] if src_dir else []), *files, isolation.package_dir()])
    abi = isolation.landlock_abi() if confine else 0
    if confine and abi == 0:
        print(
            "warning: Landlock is not available here: submissions run unconfined (instructor files are "
            "restored afterwards); run each one in a container where that matters",
            file=sys.stderr,
        )
    scores: list[ExerciseScore] = []
    for f, data in submissions:
        jail = isolation.ProcessJail()
        try:
            rows = _grade_one(
                f.name, data, sources[f.name], timeout, cell_timeout, points or {}, protected, abi > 0, jail
            )
        except Exception as err:  # noqa: BLE001  a grader failure costs this notebook, not the others
            rows = [ExerciseScore(f.name, "-", 0.0, 0.0, "failed", f"grading failed: {_error_text(err)}")]
        finally:
            jail.kill_all()
        repaired = guard.restore()
        if repaired:
            for s in rows:
                s.points, s.status = 0.0, "failed"
                s.feedback = (
                    "the submission changed files outside its folder (restored; no points): "
                    + ", ".join(Path(r).name for r in repaired[:5])
                )
        for s in rows:
            s.notebook = str(f) if keep_path else f.name
        scores += rows
        if on_notebook is not None:
            on_notebook(list(scores))
    return scores


def _grade_one(
    name: str,
    data: bytes,
    src: nbformat.NotebookNode | None,
    timeout: float,
    cell_timeout: float | None,
    points: Mapping[str, float],
    protected: list,
    confine: bool,
    jail: isolation.ProcessJail,
) -> list[ExerciseScore]:
    try:
        sub = nbformat.reads(data.decode("utf-8"), as_version=4)
        sub_cells = exercise_cells(sub)
    except Exception as err:  # noqa: BLE001  a broken submission is a score, not a crash
        why = f"cannot read the notebook: {_error_text(err)}"
        if src is None:  # nothing says what it should have held
            return [ExerciseScore(name, "-", 0.0, 0.0, "failed", why)]
        held = written_exercises(src)  # every exercise of the chapter scores zero of its points
        return [ExerciseScore(name, lab, 0.0, float(points.get(lab, 0.0 if lab in held else 1.0)), "failed",
                              why) for lab in exercise_cells(src)]
    labels = list(exercise_cells(src)) if src is not None else list(sub_cells)
    if not labels:
        return [ExerciseScore(name, "-", 0.0, 0.0, "missing", "no {exercise} directives found")]
    written = written_exercises(src if src is not None else sub)
    plans = _plans(src, sub, sub_cells)
    pts = {lab: float(points.get(lab, 0.0 if lab in written else 1.0)) for lab in labels}
    result: dict[str, ExerciseScore] = {}
    for lab in labels:
        if lab in written and plans.get(lab) is None:
            result[lab] = ExerciseScore(
                name, lab, 0.0, pts[lab], "manual", "written answer: graded by hand with the rubric"
            )
        elif plans.get(lab) is None:
            result[lab] = ExerciseScore(
                name, lab, 0.0, pts[lab], "missing", "no grader cell for this exercise"
            )
        else:
            result[lab] = ExerciseScore(name, lab, 0.0, pts[lab], "not run", "")
    replay = static.replay_statements(
        c.source for c in sub.cells if c.cell_type == "code" and not is_grader_cell(c)
    )
    root = Path(tempfile.mkdtemp(prefix="crispedit-grade-"))
    stopped = ""
    kernel = judge = None
    start = time.monotonic()
    deadline = start + timeout
    try:
        k_paths = isolation.make_workspace(root / "kernel")
        work = isolation.make_checkout(root / "checkout")
        (work["cwd"] / name).write_bytes(data)
        r_paths = isolation.make_workspace(root / "runner")
        j_paths = isolation.make_workspace(root / "judge")
        real_cache = str(isolation.real_cache())
        j_env = isolation.scrubbed_env(j_paths, {"CRISPEDIT_CACHE": real_cache})
        runner_cfg = {
            "env": isolation.scrubbed_env(r_paths, {"CRISPEDIT_CACHE": real_cache}),
            "cwd": str(root / "runner"),
            "spec": (str(root / "runner.landlock.json") if confine else ""),
        }
        if confine:
            (root / "runner.landlock.json").write_text(
                json.dumps(isolation.allow_list(root / "runner", protected))
            )
        judge = _Judge(root / "judge", replay, runner_cfg, j_env, jail)
        spec = isolation.allow_list(root / "kernel", protected) if confine else None
        if spec is not None:
            spec["write"].append(str(root / "checkout"))
        k_env = isolation.scrubbed_env(k_paths, {"CRISPEDIT_CACHE": str(work["cache"])})
        kernel = _Kernel(root / "kernel", spec, k_env, work["cwd"], jail, deadline)
        stopped = _run_cells(sub, sub_cells, plans, result, kernel, judge, deadline, cell_timeout, timeout)
    except Exception as err:  # noqa: BLE001  kernel start-up and the like: score what was reached
        stopped = stopped or f"execution failed: {_error_text(err)}"
    finally:
        if kernel is not None:
            kernel.close()
        if judge is not None:
            judge.close()
        jail.kill_all()
        shutil.rmtree(root, ignore_errors=True)
    for score in result.values():
        if score.status == "not run":
            score.feedback = f"not graded: {stopped or 'the notebook stopped before this exercise'}"
    return list(result.values())


def _run_cells(
    sub,
    sub_cells,
    plans,
    result,
    kernel: _Kernel,
    judge: _Judge,
    deadline: float,
    cell_timeout: float | None,
    timeout: float,
) -> str:
    """Execute the submission cell by cell and judge each exercise; returns why it stopped ("" if not)."""
    by_cell = {i: lab for lab, i in sub_cells.items() if i is not None and lab in result}
    first_ex = _first_exercise_cell(sub)
    failed_solution: dict[str, str] = {}
    current = None
    limit = cell_timeout or timeout

    def judge_one(label: str) -> str:
        plan = plans[label]
        export = ""
        if plan.data:
            status, err, payloads = kernel.execute(
                "__import__('crispedit_lite.exercises.wire', fromlist=['export']).export(globals(), "
                f"{plan.data!r})",
                min(deadline, time.monotonic() + max(limit, 60.0)),
            )
            export = payloads[-1] if payloads else ""
            if not export:
                result[label] = ExerciseScore(
                    result[label].notebook,
                    label,
                    0.0,
                    result[label].max_points,
                    "failed",
                    "the notebook did not send the values the grader needs" + (f" ({err})" if err else ""),
                )
                return ""
        judge.wait_ready(deadline)  # its start-up is not the student's time
        passed, feedback = judge.grade(
            label, plan, export, min(deadline, time.monotonic() + max(limit, 120.0))
        )
        if not passed and label in failed_solution:
            feedback += f" (your solution cell raised first: {failed_solution[label]})"
        result[label] = ExerciseScore(
            result[label].notebook,
            label,
            result[label].max_points if passed else 0.0,
            result[label].max_points,
            "passed" if passed else "failed",
            feedback,
        )
        return ""

    for i, cell in enumerate(sub.cells):
        if cell.cell_type == "markdown" and _EXERCISE.search(cell.source):
            m = _LABEL.search(cell.source)
            current = m.group(1) if m else current
        if cell.cell_type != "code":
            continue
        if time.monotonic() >= deadline:
            return f"the notebook ran past its {timeout:.0f} s limit before cell {i}"
        label = by_cell.get(i)
        try:
            if label is not None:
                if plans.get(label) is not None and result[label].status == "not run":
                    judge_one(label)
                continue
            if is_grader_cell(cell):
                continue  # a grader cell of an exercise the instructor does not grade
            cell_deadline = min(deadline, time.monotonic() + limit)
            try:
                status, err, _ = kernel.execute(cell.source, cell_deadline)
            except TimeoutError as t:
                if time.monotonic() >= deadline:
                    return f"the notebook ran past its {timeout:.0f} s limit in cell {i}"
                kernel.interrupt()
                try:
                    kernel.wait(t.args[0], min(deadline, time.monotonic() + 5.0))
                except (TimeoutError, ChildProcessError):
                    return f"cell {i} ran past the time limit and did not stop when interrupted"
                status, err = "error", f"TimeoutError: cell {i} ran past the time limit ({limit:.0f} s)"
            if status != "ok":
                if i < first_ex:
                    return f"cell {i} (the chapter before the exercises) raised {err}"
                if current in result:
                    failed_solution.setdefault(current, err)
                    if "time limit" in err and result[current].status == "not run":
                        result[current] = ExerciseScore(
                            result[current].notebook, current, 0.0, result[current].max_points, "failed", err
                        )
        except ChildProcessError:
            return f"the kernel died in cell {i}"
        except TimeoutError:
            return f"the notebook ran past its {timeout:.0f} s limit in cell {i}"
    for label, score in result.items():  # exercises whose grader cell the submission lacks
        if score.status == "not run" and plans.get(label) is not None:
            if time.monotonic() >= deadline:
                return f"the notebook ran past its {timeout:.0f} s limit"
            try:
                judge_one(label)
            except (TimeoutError, ChildProcessError) as err:
                return f"grading {label} failed: {_error_text(err)}"
    return ""


def write_reports(scores: list[ExerciseScore], out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``grades.csv`` (one row per exercise) and ``grades.json`` (per notebook, with totals).

    Listed on the book page ``api``.
    """
    import csv
    import io

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    fields = [f.name for f in dataclasses.fields(ExerciseScore)]
    w = csv.DictWriter(buf, fieldnames=fields)
    w.writeheader()
    for s in scores:
        w.writerow(dataclasses.asdict(s))
    per_nb: dict[str, dict[str, Any]] = {}
    for s in scores:
        d = per_nb.setdefault(
            s.notebook, {"notebook": s.notebook, "points": 0.0, "max_points": 0.0, "exercises": []}
        )
        d["points"] += s.points
        d["max_points"] += s.max_points
        d["exercises"].append(dataclasses.asdict(s))
    csv_path, json_path = out / "grades.csv", out / "grades.json"
    write_text_atomic(csv_path, buf.getvalue())
    write_json_atomic(json_path, list(per_nb.values()), indent=2)
    return csv_path, json_path
