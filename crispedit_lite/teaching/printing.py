r"""Printing for the book's pages: recorded commands and long lines that fit a page.

A printed line wider than about 100 characters scrolls sideways on a book page, so the chapters print
the shell command recorded in a results JSON with :func:`shell_block` (one command per line, ``\\``
continuations) and long sentences with :func:`wrap`.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterable

__all__ = ["shell_block", "wrap", "WIDTH"]

#: The widest line the chapters print (``tests/book`` checks every stored output against it).
WIDTH = 100


def _wrap_command(command: str, width: int) -> list[str]:
    """One shell command over several lines, broken before ``--options`` where it is too long."""
    parts = re.split(r" (?=--)", command.strip())
    lines, current = [], parts[0]
    for part in parts[1:]:
        if len(current) + 1 + len(part) + 2 > width:
            lines.append(current + " \\")
            current = "    " + part
        else:
            current += " " + part
    lines.append(current)
    return lines


def shell_block(command: str, width: int = WIDTH) -> str:
    r"""A recorded command line as a shell block: one command per line, long ones cut with ``\``.

    Commands chained with ``;`` or ``&&`` go on separate lines; a command longer than ``width`` is
    broken before its ``--options`` and continued with a backslash, so the block still runs when
    pasted into a shell. A single option longer than ``width`` stays on its own line.

    Used in notebook ``06_crispedit_on_a_small_lm`` (and chapter 10).
    """
    commands = [c for c in re.split(r"\s*(?:;|&&)\s*", command.strip()) if c]
    return "\n".join(line for c in commands for line in _wrap_command(c, width))


def wrap(text: str | Iterable[str], width: int = WIDTH, indent: str = "") -> str:
    """``text`` (or the items joined by ``"; "``) filled to ``width`` characters per line.

    Used in notebook ``06_crispedit_on_a_small_lm`` (and chapters 4, 5, 9, 10 and 11).
    """
    if not isinstance(text, str):
        text = "; ".join(str(t) for t in text)
    return textwrap.fill(
        text, width=width, subsequent_indent=indent or "  ", break_on_hyphens=False, break_long_words=False
    )
