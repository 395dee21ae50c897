r"""``python -m crispedit_lite.exercises``: hand out student versions and grade submissions.

``student NOTEBOOK... --out _build/student`` writes the student version of each chapter
(:mod:`crispedit_lite.exercises.student`); ``grade PATH... --out grades`` executes each submitted
notebook in a confined kernel under a hard time limit, judges every exercise in a separate process,
prints the table and rewrites ``grades.csv`` and ``grades.json`` after each notebook
(:mod:`crispedit_lite.exercises.grade`).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (``error: ...``, exit 2), not a usage dump."""

    def error(self, message: str) -> NoReturn:
        """Raise the parse error as a ``ValueError`` for :func:`main` to print on one line."""
        raise ValueError(message)


def _seconds(flag: str):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag}: expected a number of seconds, got {text!r}") from None
        if not math.isfinite(value) or value <= 0:
            raise argparse.ArgumentTypeError(f"{flag}: expected a positive number of seconds, got {text!r}")
        return value

    return parse


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m crispedit_lite.exercises",
                description="student versions of the chapters, and grading")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    s = sub.add_parser("student", help="write student versions (solutions -> stubs, hidden tests removed)")
    s.add_argument("notebooks", nargs="*", help="solution notebooks (default: notebooks/*.ipynb)")
    s.add_argument("--out", default="_build/student", help="output folder (default: _build/student)")
    s.add_argument("--colab-base", default=None, help="URL prefix of the published student notebooks")
    g = sub.add_parser("grade", help="execute submissions and score their exercises")
    g.add_argument("paths", nargs="+", help="submitted notebooks or folders of them")
    g.add_argument("--timeout", type=_seconds("--timeout"), default=600.0,
                   help="seconds per notebook, a hard limit: everything it started is killed (default 600)")
    g.add_argument("--cell-timeout", type=_seconds("--cell-timeout"), default=None,
                   help="seconds per cell (default: --timeout)")
    g.add_argument("--source", default="notebooks",
                   help="folder of the solution notebooks whose grader cells and hidden tests are run "
                        "(default: notebooks; 'none': only the chNN.check_...() calls of the submitted "
                        "grader cells)")
    g.add_argument("--no-confine", action="store_true",
                   help="run student code without Landlock (only for debugging the grader itself)")
    g.add_argument("--points", action="append", default=[], metavar="LABEL=POINTS",
                   help="points of one exercise, e.g. ex-01-3=2 (default 1 each); repeatable")
    g.add_argument("--out", default="grades", help="folder for grades.csv and grades.json")
    return p


def _points(items: Sequence[str]) -> dict[str, float]:
    out = {}
    for item in items:
        label, sep, value = item.partition("=")
        try:
            out[label.strip()] = float(value)
        except ValueError:
            raise ValueError(f"--points: expected LABEL=POINTS such as ex-01-3=2, got {item!r}") from None
        if not sep or not label.strip():
            raise ValueError(f"--points: expected LABEL=POINTS such as ex-01-3=2, got {item!r}")
    return out


def _output_folder(out: str) -> None:
    """Refuse an ``--out`` that is a file or cannot be created or written, before any grading."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise ValueError(f"--out: {out!r} is a file; expected a folder for grades.csv and grades.json")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"--out: cannot create the folder {out!r} ({err.strerror or err})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ValueError(f"--out: the folder {out!r} is not writable")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0, or 2 on bad arguments, one line on stderr).

    Derived in notebook ``01_editing_as_constrained_optimization``.
    """
    try:
        args = _parser().parse_args(argv)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        if args.command == "student":
            from crispedit_lite.exercises.student import COLAB_STUDENT_BASE, write_student_versions

            paths = args.notebooks or sorted(str(p) for p in Path("notebooks").glob("[0-9][0-9]_*.ipynb"))
            written = write_student_versions(paths, args.out, args.colab_base or COLAB_STUDENT_BASE)
            for w in written:
                print(f"wrote {w}")
            return 0
        from crispedit_lite.exercises.grade import grade_paths, write_reports

        _output_folder(args.out)
        source = None if args.source.lower() == "none" else args.source
        if source is not None and not Path(source).is_dir():
            print(f"note: no solution folder {source!r}; running the submitted grader cells", file=sys.stderr)
            source = None
        pts = _points(args.points)
        scores = grade_paths(args.paths, timeout=args.timeout, cell_timeout=args.cell_timeout,
                             source_dir=source, points=pts, confine=not args.no_confine,
                             protect=[args.out], on_notebook=lambda so_far: write_reports(so_far, args.out))
    except (ValueError, OSError) as err:
        message = " ".join(str(err).split()) or type(err).__name__
        print(f"error: {message}", file=sys.stderr)
        return 2
    width = max(len(s.notebook) for s in scores)
    for s in scores:
        print(f"{s.notebook:<{width}}  {s.exercise:<8}  {s.points:g}/{s.max_points:g}  {s.status:<8}  "
              f"{s.feedback.splitlines()[0] if s.feedback else ''}")
    csv_path, json_path = write_reports(scores, args.out)
    total = sum(s.points for s in scores)
    print(f"total {total:g}/{sum(s.max_points for s in scores):g}; wrote {csv_path} and {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
