r"""How a grader is built: a *probe* that runs the student's code, a *judge* that decides.

Every ``chNN.check_...`` is an :class:`Exercise`. Its ``probe`` calls the student's function on test
inputs and returns what came out, as plain data (:mod:`~crispedit_lite.exercises.wire`); its
``judge`` receives only that data, recomputes what it needs independently and raises
``AssertionError`` with a hint when the answer is wrong. In a notebook both run in the student's
kernel, one after the other, and the check prints ``correct``. The grading command runs them apart:
the probe in a confined runner process that executes the function's source from the submitted file,
the judge in a fresh process that never executes student code, so that patching ``torch``, the
grader or IPython in the kernel changes nothing the judge sees. A function answer must therefore
work on its own: with its arguments and the notebook's imports, functions and constants, not with
values the chapter computed (:func:`self_contained` says so in the notebook already).

:func:`forbid` fails an answer that uses a library function for the piece the exercise asks the
student to write. Described on the book pages ``exercises`` and ``instructors``.
"""

from __future__ import annotations

import dis
import inspect
import textwrap
import types
from collections.abc import Callable, Iterable
from typing import Any

from crispedit_lite.exercises import wire

__all__ = ["Exercise", "exercise", "RemoteFunction", "self_contained", "forbid", "source_of", "session"]

#: Set by the judge process: runs probes in the runner and holds the submission's function sources.
session: Any = None


class RemoteFunction:
    """A student function that lives in the runner process (the judge only holds its name and source).

    Listed on the book page ``api``.
    """

    def __init__(self, name: str, source: str, call: Callable[[str, tuple], Any]) -> None:
        self.__name__ = self.name = name
        self.source = source
        self._call = call

    def __call__(self, *args: Any) -> Any:
        """Call the function in the runner; its result comes back as plain data."""
        return self._call(self.name, args)

    def __repr__(self) -> str:
        return f"<function {self.name} of the submission>"


class Exercise:
    """A grader: ``check(*answers)`` runs ``probe(*answers)``, then ``judge(observations)``.

    Attributes:
        label: the exercise's label, ``ex-NN-k``.
        probe: module-level function that calls the answers and returns plain data (``None``: the
            answers are data and are judged as they are).
        judge: function of the probe's output that raises ``AssertionError`` on a wrong answer.

    Described on the book page ``instructors``.
    """

    def __init__(
        self,
        label: str,
        probe: Callable[..., Any] | None,
        judge: Callable[[Any], None],
        forbidden: Iterable[str] = (),
        piece: str = "this piece",
    ) -> None:
        self.label, self.probe, self.judge = label, probe, judge
        self.forbidden, self.piece = tuple(forbidden), piece
        self.__name__ = judge.__name__
        self.__qualname__ = judge.__qualname__
        self.__module__ = judge.__module__
        self.__doc__ = judge.__doc__

    def observe(self, *answers: Any) -> Any:
        """What the judge will see: the probe's output as plain data, as the grading command sends it."""
        for a in answers:
            if self.forbidden and (callable(a) or isinstance(a, RemoteFunction)):
                forbid(a, self.forbidden, self.piece)
        if session is not None and any(isinstance(a, RemoteFunction) for a in answers):
            return session.probe(self.probe, answers)
        for a in answers:
            if callable(a) and not isinstance(a, RemoteFunction):
                self_contained(a)
        obs = (
            self.probe(*answers) if self.probe is not None else (answers[0] if len(answers) == 1 else answers)
        )
        return wire.from_data(wire.loads(wire.dumps(wire.to_data(obs))))

    def __call__(self, *answers: Any) -> None:
        """Judge the answers; print ``correct`` or raise ``AssertionError`` saying what is wrong."""
        self.judge(self.observe(*answers))
        print("correct")

    def __repr__(self) -> str:
        return f"<exercise {self.label}: {self.__module__}.{self.__name__}>"


def exercise(
    label: str,
    probe: Callable[..., Any] | None = None,
    forbidden: Iterable[str] = (),
    piece: str = "this piece",
) -> Callable[[Callable[[Any], None]], Exercise]:
    """Decorator: turn a judge function into the grader of exercise ``label`` with this ``probe``.

    ``forbidden`` names library functions that a function answer may not use: the exercise asks the
    student to write ``piece`` instead (see :func:`forbid`).

    Described on the book page ``instructors``.
    """

    def wrap(judge: Callable[[Any], None]) -> Exercise:
        return Exercise(label, probe, judge, forbidden, piece)

    return wrap


def _literal(value: Any) -> bool:
    if value is None or isinstance(value, (bool, int, float, complex, str, bytes)):
        return True
    return isinstance(value, (tuple, frozenset)) and all(_literal(v) for v in value)


def _globals_read(code: types.CodeType) -> set[str]:
    names = {i.argval for i in dis.get_instructions(code) if i.opname in ("LOAD_GLOBAL", "LOAD_NAME")}
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _globals_read(const)
    return names


def _notebook_functions(fn: Callable, seen: set[int] | None = None) -> list[Callable]:
    """``fn`` and the functions of the same notebook that it calls, transitively."""
    seen = set() if seen is None else seen
    if id(fn) in seen or not isinstance(fn, types.FunctionType):
        return []
    seen.add(id(fn))
    out = [fn]
    for name in _globals_read(fn.__code__):
        value = fn.__globals__.get(name)
        if isinstance(value, types.FunctionType) and value.__module__ == fn.__module__:
            out += _notebook_functions(value, seen)
    return out


def _computed(value: Any) -> bool:
    """A value that only running the chapter produces: tensors, arrays, tables, models, lambdas."""
    if isinstance(value, types.FunctionType):
        return value.__name__ == "<lambda>"
    if isinstance(value, (types.ModuleType, type, types.BuiltinFunctionType)) or _literal(value):
        return False
    mod = type(value).__module__.split(".")[0]
    if mod in ("torch", "numpy", "pandas", "functools", "transformers"):
        return True
    import torch

    return isinstance(value, torch.nn.Module)


def self_contained(fn: Callable) -> None:
    """Fail a function answer that reads a value the chapter computed (the grader runs it alone).

    Flagged: tensors, arrays, tables, models and lambdas read as globals by the function or by a
    notebook function it calls. The runner replays the notebook's imports, ``def`` and ``class``
    statements and literal constants only (:func:`crispedit_lite.exercises.static.replay_statements`).

    Described on the book page ``instructors``.
    """
    if not isinstance(fn, types.FunctionType):
        return
    for f in _notebook_functions(fn):
        for name in sorted(_globals_read(f.__code__)):
            if name not in f.__globals__ or not _computed(f.__globals__[name]):
                continue
            raise AssertionError(
                f"`{f.__name__}` reads `{name}`, a value that the chapter computed. The grading command "
                "runs your function on its own, with only the notebook's imports, functions and constants: "
                f"pass `{name}` in as an argument (or compute it inside the function)"
            )


def source_of(fn: Callable | RemoteFunction) -> str:
    """The source of a function answer and of the notebook functions it calls.

    Listed on the book page ``api``.
    """
    if isinstance(fn, RemoteFunction):
        return fn.source
    parts = []
    for f in _notebook_functions(fn):
        try:
            parts.append(textwrap.dedent(inspect.getsource(f)))
        except (OSError, TypeError):
            continue
    return "\n".join(parts)


def forbid(fn: Callable | RemoteFunction, names: Iterable[str], piece: str) -> None:
    """Fail ``fn`` when its source (or a notebook function it calls) mentions one of ``names``.

    ``piece`` says what the student writes instead, e.g. ``"the projector"``. A static check: it
    reads the identifiers of the source, so a library call hidden in a string built at run time
    passes it (the book page ``instructors`` says what the grader does not catch).
    """
    import textwrap

    from crispedit_lite.exercises.static import referenced_names

    src = textwrap.dedent(source_of(fn))
    if not src:
        return
    try:
        used = referenced_names(src)
    except SyntaxError:
        return
    hit = sorted(set(names) & used)
    if hit:
        raise AssertionError(
            f"`{getattr(fn, '__name__', fn)}` uses {', '.join(f'`{h}`' for h in hit)} from "
            f"the library; this exercise asks you to write {piece} yourself"
        )
