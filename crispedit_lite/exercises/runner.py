r"""The runner: a confined process that executes a submission's functions for the judge.

Started by the judge (never by the student) inside Landlock's allow-list (:mod:`confine`), with a
scrubbed environment in its own temporary folder. It reads the replayable statements of the
submitted notebook (:func:`crispedit_lite.exercises.static.replay_statements`), executes them in a
fresh namespace, then answers requests on a pipe: call a function, or run a grader's probe with the
student's functions as arguments. Every answer is plain data (:mod:`wire`); an exception is sent
back as its type and message. Nothing the student's code does here reaches the judge but that data.
Described on the book page ``instructors``.
"""

from __future__ import annotations

import builtins
import importlib
import os
import sys
import traceback
from typing import Any

__all__ = ["main"]


def _error_text(err: BaseException) -> str:
    text = f"{type(err).__name__}: {err}".strip()
    return text if len(text) < 800 else text[:800] + " ..."


def _resolve(args: Any, ns: dict[str, Any], failed: dict[str, str]) -> Any:
    from crispedit_lite.exercises.wire import FunctionRef

    out = []
    for a in args:
        if isinstance(a, FunctionRef):
            if a.name not in ns:
                why = failed.get(a.name)
                raise NameError(
                    f"`{a.name}` is not defined by a `def` in the notebook"
                    if why is None
                    else f"`{a.name}` could not be defined: {why}"
                )
            out.append(ns[a.name])
        else:
            out.append(a)
    return out


def main() -> None:
    """Serve the judge on the pipe it handed over (file descriptor in ``argv[1]``).

    Described on the book page ``instructors``.
    """
    proto_in, proto_out = int(sys.argv[1]), int(sys.argv[2])
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # the student's prints never reach the protocol pipe
    from crispedit_lite.exercises import wire

    setup = wire.loads(wire.read_frame(proto_in))
    ns: dict[str, Any] = {"__name__": "__main__", "__builtins__": builtins}
    failed: dict[str, str] = {}
    for names, src in setup["replay"]:
        try:
            exec(compile(src, "<notebook>", "exec"), ns)  # noqa: S102  the submission's own statements
        except BaseException as err:  # noqa: BLE001  a broken cell is reported, not fatal
            for n in names:
                failed[n] = _error_text(err)
    wire.write_frame(proto_out, wire.dumps({"ok": True, "failed": failed}))
    while True:
        try:
            req = wire.from_data(wire.loads(wire.read_frame(proto_in)))
        except EOFError:
            return
        try:
            args = _resolve(req.get("args", ()), ns, failed)
            if req["op"] == "call":
                fn = _resolve([wire.FunctionRef(req["name"])], ns, failed)[0]
                result = fn(*args)
            else:
                probe = getattr(importlib.import_module(req["module"]), req["name"])
                result = probe(*args)
            reply = {"ok": True, "result": wire.to_data(result)}
        except BaseException as err:  # noqa: BLE001  the student's exception is the answer
            tb = traceback.extract_tb(err.__traceback__)
            where = next(
                (f"line {f.lineno} of `{f.name}`" for f in reversed(tb) if f.filename == "<notebook>"), ""
            )
            reply = {"ok": False, "error": _error_text(err) + (f" (in {where})" if where else "")}
        try:
            payload = wire.dumps(reply)
        except Exception as err:  # noqa: BLE001
            payload = wire.dumps({"ok": False, "error": f"the result cannot be sent: {_error_text(err)}"})
        wire.write_frame(proto_out, payload)


if __name__ == "__main__":
    main()
