r"""Atomic writes: a file or directory appears whole under its final name, or not at all.

Every writer of the package goes through :func:`atomic_path`: the content is written to a temporary
name in the *same directory* as the target (so the final rename never crosses a file system), flushed
to disk with ``fsync``, given the permissions of a plain ``open`` (``0o666`` less the process umask
for a file, ``0o777`` less the umask for a directory; ``mkstemp`` and ``mkdtemp`` would leave
``0o600``/``0o700``), and published with ``os.replace``, which POSIX makes atomic. On any error the
temporary is removed and the target is untouched, so an interrupted run (even ``kill -9`` between
two steps) never leaves a half-written file under the final name. JSON is written strictly:
``NaN`` and infinity, which are not JSON, are refused with an error naming the file and the first
offending key.

Used by the K-FAC cache (:mod:`crispedit_lite.kfac.io`, notebook ``04_kfac_step_by_step``), the
embedded models' cache, saved edited models, result records, graders' reports and the benchmarks.
"""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_path", "atomic_open", "write_bytes_atomic", "write_text_atomic", "write_json_atomic",
           "current_umask"]


_FULL = (errno.ENOSPC, errno.EDQUOT)


def current_umask() -> int:
    """The process umask, read without changing it where the system allows (Linux ``/proc``).

    ``os.umask`` can only be read by setting it, which, briefly, changes it for every thread.

    Listed on the book page ``api``.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    try:  # durability of the rename itself; not every system lets a directory be fsynced
        _fsync(path)
    except OSError:
        pass


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        path.unlink()


def _publish(tmp: Path, path: Path, directory: bool, overwrite: bool) -> None:
    mask = current_umask()
    if directory:
        for root, _dirs, files in os.walk(tmp):
            for name in files:
                _fsync(Path(root) / name)
        os.chmod(tmp, 0o777 & ~mask)
    else:
        os.chmod(tmp, 0o666 & ~mask)
        _fsync(tmp)
    if overwrite or directory:  # a directory only ever replaces a missing or empty one (POSIX rename)
        os.replace(tmp, path)
    else:
        try:
            os.link(tmp, path)  # fails if ``path`` exists, atomically
        except FileExistsError:
            raise FileExistsError(f"{path} exists; it is not overwritten") from None
        except OSError:  # a file system without hard links: check, then rename
            if os.path.lexists(path):
                raise FileExistsError(f"{path} exists; it is not overwritten") from None
            os.replace(tmp, path)
        else:
            os.unlink(tmp)
    _fsync_dir(path.parent)


@contextmanager
def atomic_path(path: str | os.PathLike, *, directory: bool = False,
                overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; when the block ends without error, publish it there.

    For writers that need a path rather than bytes (``safetensors.torch.save_file``,
    ``save_pretrained``, ``Figure.savefig``). With ``directory=True`` the temporary is an empty
    directory to fill, and the target must not exist or be empty. With ``overwrite=False`` an
    existing file is never replaced (``FileExistsError``, decided atomically by ``os.link``).
    The parent directory is created if needed. On any error the temporary is removed and the
    target is left as it was.

    Listed on the book page ``api``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix, suffix = f".{path.name}.", ".tmp"
    if directory:
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=prefix, suffix=suffix))
    else:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=suffix)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        _publish(tmp, path, directory, overwrite)
    except OSError as err:
        if err.errno in _FULL:  # name the target, not the temporary (which is removed below)
            raise OSError(err.errno, f"no space left on the device of {path}; nothing was written there",
                          str(path)) from err
        raise
    finally:
        _remove(tmp)


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", *, encoding: str | None = "utf-8",
                newline: str | None = None, overwrite: bool = True) -> Iterator[IO[Any]]:
    """Open a temporary file next to ``path`` for writing; publish it as ``path`` when the block ends.

    ``mode`` is ``"w"`` (text, ``encoding`` and ``newline`` as for :func:`open`) or ``"wb"``.

    Listed on the book page ``api``.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open: mode must be 'w' or 'wb', got {mode!r}")
    with atomic_path(path, overwrite=overwrite) as tmp:
        kw: dict[str, Any] = {} if mode == "wb" else {"encoding": encoding, "newline": newline}
        with open(tmp, mode, **kw) as fh:
            yield fh


def write_bytes_atomic(path: str | os.PathLike, data: bytes, *, overwrite: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically; return the path.

    Listed on the book page ``api``.
    """
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str, *, encoding: str = "utf-8",
                      overwrite: bool = True) -> Path:
    """Write ``text`` to ``path`` atomically, line endings as given (no translation); return the path.

    Listed on the book page ``api``.
    """
    return write_bytes_atomic(path, text.encode(encoding), overwrite=overwrite)


def _first_nonfinite(obj: Any, where: str, default: Callable[[Any], Any] | None,
                     seen: set[int]) -> tuple[str, float] | None:
    if isinstance(obj, float):
        return None if math.isfinite(obj) else (where, obj)
    if isinstance(obj, (str, int, bool)) or obj is None:
        return None
    if id(obj) in seen:
        return None
    seen.add(id(obj))
    if isinstance(obj, dict):
        items: Any = ((f"{where}.{k}" if where else str(k), v) for k, v in obj.items())
    elif isinstance(obj, (list, tuple)):
        items = ((f"{where}[{i}]", v) for i, v in enumerate(obj))
    elif default is not None:
        items = [(where, default(obj))]
    else:
        return None
    for key, value in items:
        found = _first_nonfinite(value, key, default, seen)
        if found is not None:
            return found
    return None


def write_json_atomic(path: str | os.PathLike, obj: Any, *, indent: int | None = 1,
                      sort_keys: bool = False, ensure_ascii: bool = True,
                      default: Callable[[Any], Any] | None = None, overwrite: bool = True) -> Path:
    """Write ``obj`` as strict JSON (and a final newline) to ``path`` atomically; return the path.

    ``NaN`` and infinity are refused (``allow_nan=False``: they are not JSON, and most readers reject
    them) with a ``ValueError`` naming the file and the first offending key path, e.g.
    ``rows[3].kl``; nothing is written then. ``indent``, ``sort_keys``, ``ensure_ascii`` and
    ``default`` are passed to :func:`json.dumps`.

    Listed on the book page ``api``.
    """
    try:
        text = json.dumps(obj, indent=indent, sort_keys=sort_keys, ensure_ascii=ensure_ascii,
                          default=default, allow_nan=False)
    except ValueError as err:
        found = _first_nonfinite(obj, "", default, set())
        if found is None:
            raise ValueError(f"{path}: cannot write as JSON: {err}") from None
        where, value = found
        raise ValueError(f"{path}: {where or 'the value'} is {value!r}; strict JSON has no NaN or "
                         f"infinity, so nothing was written") from None
    return write_text_atomic(path, text + "\n", overwrite=overwrite)

