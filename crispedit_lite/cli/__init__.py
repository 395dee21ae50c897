r"""Command line: ``python -m crispedit_lite edit | reproduce | collect-kfac``.

Example (CPU, the embedded model)::

    python -m crispedit_lite edit --model smollm2-135m-instruct --data smollm2-counterfacts \
        --n-edits 16 --method crispedit --gamma 0.7 --preset cpu --results-dir results/

The same command edits a hub model on a GPU (``--model meta-llama/Meta-Llama-3-8B-Instruct
--preset paper --device cuda --dtype bfloat16``), or a randomly initialised model with real shapes
for timing (``--model random:llama3-8b-shape --tokenizer DIR``). ``collect-kfac`` fills the K-FAC
cache first (also under ``torchrun``), ``reproduce`` runs paper table cells resumably.

A mistake in the command (an argument, a data record, a file, a model name, a setting the method
does not read) is one line on stderr, ``error: ...``, with exit status 2 and nothing written;
``--debug`` shows the traceback instead. Every check that needs only the arguments, the data, the
tokenizer or the model's config runs before the weights load
(:mod:`crispedit_lite.reproduction.preflight`). Trouble with the machine (a full disk, a network
that cannot be reached, a lock held too long) and a diverged run are one line and exit 2 as well.
Any other exception keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from crispedit_lite.cli.checks import UsageError
from crispedit_lite.cli.edit import run_edit

__all__ = ["UsageError", "build_parser", "main", "run_edit"]


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are :class:`UsageError` (one line, exit 2), not usage dumps."""

    def error(self, message: str) -> NoReturn:
        """Raise the parse error as a :class:`UsageError`."""
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m crispedit_lite``.

    Listed on the book page ``api``.
    """
    from crispedit_lite.cli import collect, edit, reproduce

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    p = _Parser(prog="python -m crispedit_lite", description=__doc__.split("\n")[0], parents=[common])
    sub = p.add_subparsers(dest="command", required=True)
    edit.add_parser(sub, common)
    reproduce.add_parser(sub, common)
    collect.add_parser(sub, common)
    return p


def _run(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "reproduce":
        from crispedit_lite.cli.reproduce import run_reproduce

        return run_reproduce(args)
    if args.command == "collect-kfac":
        from crispedit_lite.cli.collect import run_collect

        run_collect(args)
        return 0
    from crispedit_lite.cli.edit import print_summary

    print_summary(run_edit(args, argv), quiet=args.quiet, as_json=args.json)
    return 0


def _message(err: BaseException, argv: list[str]) -> str:
    """One line for ``err``: a refused setting by its flag, an OS error by its cause and file."""
    from crispedit_lite.reproduction.preflight import SettingError

    if isinstance(err, SettingError):
        from crispedit_lite.cli import collect, edit

        flags = collect.FLAGS if argv[:1] == ["collect-kfac"] else edit.FLAGS
        if err.setting in flags:
            return f"argument {flags[err.setting]}: {err.message}"
    if isinstance(err, OSError) and not isinstance(err, (FileNotFoundError, PermissionError)) \
            and err.strerror and err.args[1:2] == (err.strerror,):
        where = f": {err.filename}" if err.filename and str(err.filename) not in err.strerror else ""
        return f"{err.strerror}{where}"
    if isinstance(err, RecursionError):
        return "input nested too deeply (a JSON file or value of thousands of levels?)"
    return str(err)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m crispedit_lite``; the exit status (2: a mistake in the command).

    Described on the book page ``running``.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        return _run(argv)
    except (ValueError, OSError, RecursionError) as err:
        if "--debug" in argv:
            raise
        message = " ".join(_message(err, argv).split()) or type(err).__name__
        print(f"error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
