r"""A lock file that names its holder, waits a stated time, and leaves nothing behind.

Two processes that need the same K-FAC cache entry must not both collect it: the first holds an
exclusive ``fcntl.flock`` on ``<key>.lock`` while it collects and writes, the second waits and then
reads the entry. The holder writes who it is into the lock file (process id, host, start time,
command); a process that has to wait prints that once, and gives up with ``TimeoutError`` after
:func:`lock_timeout` seconds (``$CRISPEDIT_LOCK_TIMEOUT``, default two hours) instead of waiting
forever. The operating system drops a lock when its holder dies, even by ``kill -9``, so a crashed
holder never blocks the next process. The holder deletes the lock file before it releases the lock,
and a process that locked a file that is no longer the one at the path opens the path again, so no
``.lock`` file is left behind and no two processes ever hold "the" lock at once.

Described on the book page ``running`` (two runs that need the same factors).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

__all__ = ["DEFAULT_LOCK_TIMEOUT", "file_lock", "lock_holder", "lock_timeout"]

#: Seconds a process waits for another one's lock before it gives up.
DEFAULT_LOCK_TIMEOUT = 7200.0


def lock_timeout() -> float:
    """Seconds to wait for a lock: ``$CRISPEDIT_LOCK_TIMEOUT``, else :data:`DEFAULT_LOCK_TIMEOUT`.

    Listed on the book page ``api``.
    """
    raw = os.environ.get("CRISPEDIT_LOCK_TIMEOUT", "")
    try:
        value = float(raw) if raw.strip() else DEFAULT_LOCK_TIMEOUT
    except ValueError:
        raise ValueError(f"CRISPEDIT_LOCK_TIMEOUT must be a number of seconds, got {raw!r}") from None
    if not value >= 0 or value == float("inf"):
        raise ValueError(f"CRISPEDIT_LOCK_TIMEOUT must be a finite number of seconds >= 0, got {raw!r}")
    return value


def lock_holder(path: str | os.PathLike) -> str:
    """Who holds the lock at ``path``, in words (from what the holder wrote), or ``"an unknown process"``.

    Listed on the book page ``api``.
    """
    try:
        info = json.loads(Path(path).read_text(encoding="utf-8"))
        return (f"process {info['pid']} on {info['host']} (since {info['since']}, "
                f"command: {info['command']})")
    except (OSError, ValueError, KeyError, TypeError):
        return "an unknown process"


def _same_file(fd: int, path: Path) -> bool:
    try:
        now = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (now.st_ino, now.st_dev) == (mine.st_ino, mine.st_dev)


@contextmanager
def file_lock(path: str | os.PathLike, timeout: float | None = None, poll: float = 0.2) -> Iterator[Path]:
    """Hold an exclusive ``fcntl.flock`` on ``path`` (created if needed) for the ``with`` block.

    ``timeout`` (seconds; ``None``: :func:`lock_timeout`) bounds the wait for another holder; then
    ``TimeoutError`` names the lock and its holder. While waiting, one line on stderr says whom it
    waits for and for how long at most. The lock file is removed when the block ends. Without
    ``fcntl`` (Windows) nothing is locked.

    Listed on the book page ``api``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield path
        return
    limit = lock_timeout() if timeout is None else float(timeout)
    deadline, told = time.monotonic() + limit, False
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = lock_holder(path)
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{path} is still held by {holder} after {limit:g} s; if that process "
                                   "is gone, delete the lock file, or set CRISPEDIT_LOCK_TIMEOUT "
                                   "to wait longer") from None
            if not told:
                print(f"waiting for {path}, held by {holder}; giving up after {limit:g} s "
                      "(CRISPEDIT_LOCK_TIMEOUT)", file=sys.stderr, flush=True)
                told = True
            time.sleep(poll)
            continue
        if _same_file(fd, path):
            break
        os.close(fd)  # the holder before us removed this file: lock the path's new file
    try:
        command = " ".join([os.path.basename(sys.argv[0]) if sys.argv else "python", *sys.argv[1:]])
        info = {"pid": os.getpid(), "host": socket.gethostname(), "command": command[:300],
                "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(info).encode())
        yield path
    finally:
        try:
            os.unlink(path)  # while still locked: a waiter that locks the old file opens the path again
        except FileNotFoundError:
            pass
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
