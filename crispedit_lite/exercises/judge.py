r"""The judge: a fresh process that runs the instructor's grader cells on data, never student code.

Started by the grading command once per submission, before that submission's kernel, with the
grader modules imported at start-up and a scrubbed environment. For each exercise it receives the
instructor's grader cell (hidden tests included), the instructor's imports and supporting functions it
needs, the values it needs from the student's kernel (plain data, :mod:`wire`) and the names of the
student's functions. It executes the cell in a namespace where each student function is a
:class:`~crispedit_lite.exercises.core.RemoteFunction`: calling it, or a grader's probe on it, goes to
a confined runner process (:mod:`runner`) that it starts on demand and restarts after a failure.
Described on the book page ``instructors``.
"""

from __future__ import annotations

import base64
import builtins
import contextlib
import importlib
import io
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from crispedit_lite.exercises import core, wire
from crispedit_lite.exercises.static import closure_source

__all__ = ["main", "Runner"]

GRADER_MODULES = [f"crispedit_lite.exercises.ch{n:02d}" for n in range(1, 12)]


class Runner:
    """The judge's handle on one runner process (started lazily, killed on time-out or failure).

    Listed on the book page ``api``.
    """

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.proc: subprocess.Popen | None = None
        self.fd_in = self.fd_out = -1
        self.failed: dict[str, str] = {}
        self.deadline: float | None = None

    def _start(self) -> None:
        to_runner_r, to_runner_w = os.pipe()
        from_runner_r, from_runner_w = os.pipe()
        cmd = [sys.executable, self.cfg["confine"], self.cfg["spec"], "--"] if self.cfg.get("spec") else []
        cmd += [sys.executable, "-m", "crispedit_lite.exercises.runner", str(to_runner_r), str(from_runner_w)]
        self.proc = subprocess.Popen(
            cmd,
            pass_fds=(to_runner_r, from_runner_w),
            env=self.cfg["env"],
            cwd=self.cfg["cwd"],
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_runner_r)
        os.close(from_runner_w)
        self.fd_in, self.fd_out = from_runner_r, to_runner_w
        wire.write_frame(self.fd_out, wire.dumps({"replay": self.cfg["replay"]}))
        ack = wire.loads(wire.read_frame(self.fd_in, self._deadline(60.0)))
        self.failed = dict(ack.get("failed", {}))

    def _deadline(self, cap: float) -> float:
        d = time.monotonic() + cap
        return min(d, self.deadline) if self.deadline is not None else d

    def kill(self) -> None:
        """Kill the runner's process group and forget it."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, 9)
            with contextlib.suppress(Exception):
                self.proc.wait(timeout=5)
            for fd in (self.fd_in, self.fd_out):
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.proc = None

    def request(self, req: dict[str, Any]) -> Any:
        """Send one request; the runner's result as data, or ``AssertionError`` with its error."""
        try:
            if self.proc is None or self.proc.poll() is not None:
                self.kill()
                self._start()
            wire.write_frame(self.fd_out, wire.dumps(wire.to_data(req)))
            reply = wire.loads(wire.read_frame(self.fd_in, self._deadline(3600.0)))
        except TimeoutError:
            self.kill()
            raise AssertionError("your code ran past the time limit and was stopped") from None
        except (EOFError, BrokenPipeError, OSError, ValueError) as err:
            self.kill()
            raise AssertionError(f"your code ended the process that ran it ({type(err).__name__})") from None
        if not reply.get("ok"):
            raise AssertionError(f"your code raised {reply.get('error', 'an error')}")
        return wire.from_data(reply.get("result"))


class _Session:
    """What :mod:`core` calls in the judge: probes and calls go to the runner."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner

    def call(self, name: str, args: tuple) -> Any:
        return self.runner.request({"op": "call", "name": name, "args": list(args)})

    def probe(self, probe: Any, answers: tuple) -> Any:
        args = [wire.FunctionRef(a.name) if isinstance(a, core.RemoteFunction) else a for a in answers]
        return self.runner.request(
            {"op": "probe", "module": probe.__module__, "name": probe.__name__, "args": args}
        )


def _error_text(err: BaseException) -> str:
    if isinstance(err, AssertionError):
        text = str(err).strip() or "wrong answer (an assertion of the grader failed)"
    else:
        text = f"{type(err).__name__}: {err}".strip()
    return text if len(text) < 800 else text[:800] + " ..."


def grade(req: dict[str, Any], runner: Runner, replay: list) -> dict[str, Any]:
    """Run one grader cell; ``{"passed": bool, "feedback": str}``."""
    runner.deadline = time.monotonic() + float(req["seconds"])
    ns: dict[str, Any] = {"__name__": "__grader__", "__builtins__": builtins}
    for _, src in req.get("trusted", []):  # the instructor's imports and helper functions
        try:
            exec(compile(src, "<instructor>", "exec"), ns)  # noqa: S102  the instructor's own code
        except Exception as err:  # noqa: BLE001
            return {"passed": False, "feedback": f"the grader could not run `{src[:60]}`: {_error_text(err)}"}
    for name in req.get("functions", []):
        ns[name] = core.RemoteFunction(name, closure_source(replay, name), core.session.call)
    try:
        values = wire.loads(base64.b64decode(req["export"], validate=True)) if req.get("export") else {}
    except Exception as err:  # noqa: BLE001  whatever the kernel sent, it is not data
        return {
            "passed": False,
            "feedback": f"the values the notebook sent cannot be read: {_error_text(err)}",
        }
    if not isinstance(values, dict):
        return {"passed": False, "feedback": "the values the notebook sent cannot be read"}
    for name, value in values.items():
        why = wire.unavailable(value)
        if why is not None:
            return {"passed": False, "feedback": why}
        ns[name] = wire.from_data(value)
    missing = [n for n in req.get("data", []) if n not in ns]
    if missing:
        return {"passed": False, "feedback": f"the notebook did not provide {', '.join(missing)}"}
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            exec(compile(req["code"], f"<grader {req['label']}>", "exec"), ns)  # noqa: S102  instructor's
    except BaseException as err:  # noqa: BLE001  any failure of the answer is a failed exercise
        return {"passed": False, "feedback": _error_text(err)}
    return {"passed": True, "feedback": "correct"}


def main() -> None:
    """Serve the grading command on the pipe it handed over (file descriptors in ``argv``).

    Described on the book page ``instructors``.
    """
    fd_in, fd_out = int(sys.argv[1]), int(sys.argv[2])
    for m in GRADER_MODULES:  # imported once, before any student code of this submission runs
        importlib.import_module(m)
    setup = wire.loads(wire.read_frame(fd_in))
    replay = setup["replay"]
    runner = Runner(
        {**setup["runner"], "replay": replay, "confine": str(Path(__file__).with_name("confine.py"))}
    )
    core.session = _Session(runner)
    wire.write_frame(fd_out, wire.dumps({"ready": True}))
    try:
        while True:
            try:
                req = wire.loads(wire.read_frame(fd_in))
            except EOFError:
                return
            try:
                result = grade(req, runner, replay)
            except BaseException as err:  # noqa: BLE001  never die on a bad answer
                result = {"passed": False, "feedback": f"grader error: {_error_text(err)}"}
            wire.write_frame(fd_out, wire.dumps(result))
    finally:
        runner.kill()


if __name__ == "__main__":
    main()
