r"""Confine a process to an allow-list of files with Linux Landlock, then run a command in it.

``python confine.py SPEC.json -- CMD ...`` reads the allow-list from ``SPEC.json``, restricts itself
with Landlock (Linux 5.13 or later; unprivileged, inherited by every child and across ``exec``) and
replaces itself by ``CMD``. The grading command starts each student kernel and each runner of student
functions this way, so that the code of a submission can read only what a chapter needs (the Python
installation, the package, the model caches) and write only inside its own temporary folder. Where
the kernel's ABI allows, it also cannot bind or connect TCP ports other than its own (ABI 4) and cannot
signal processes outside its domain, such as the grader (ABI 6); Landlock always forbids it to
``ptrace`` them or read their ``/proc`` entries.

The spec is ``{"read": [paths], "list": [paths], "write": [paths], "bind": [ports]}``: ``read`` grants
reading and executing files under a path, ``list`` only listing a folder (the names of its entries,
not their contents), ``write`` everything under a path. This file imports nothing from the package,
so that it runs before any of the package's code. Described on the book page ``instructors``.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys

__all__ = ["abi_version", "restrict", "main"]

_CREATE, _ADD_RULE, _RESTRICT = 444, 445, 446  # the same numbers on every Linux architecture
_RULE_PATH, _RULE_NET = 1, 2
_EXECUTE, _WRITE_FILE, _READ_FILE, _READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
_REMOVE_DIR, _REMOVE_FILE, _MAKE_CHAR, _MAKE_DIR = 1 << 4, 1 << 5, 1 << 6, 1 << 7
_MAKE_REG, _MAKE_SOCK, _MAKE_FIFO, _MAKE_BLOCK, _MAKE_SYM = 1 << 8, 1 << 9, 1 << 10, 1 << 11, 1 << 12
_REFER, _TRUNCATE, _IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
_BIND_TCP, _CONNECT_TCP = 1 << 0, 1 << 1
_SCOPE_ABSTRACT_UNIX, _SCOPE_SIGNAL = 1 << 0, 1 << 1
_FILE_RIGHTS = _EXECUTE | _WRITE_FILE | _READ_FILE | _TRUNCATE | _IOCTL_DEV
_PR_SET_NO_NEW_PRIVS = 38


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


class _NetPort(ctypes.Structure):
    _fields_ = [("allowed_access", ctypes.c_uint64), ("port", ctypes.c_uint64)]


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def abi_version() -> int:
    """The Landlock ABI version of the running kernel, or 0 where Landlock is unavailable.

    Listed on the book page ``api``.
    """
    if not sys.platform.startswith("linux"):
        return 0
    try:
        v = _libc().syscall(_CREATE, None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    except (OSError, AttributeError):
        return 0
    return max(int(v), 0)


def _fs_rights(abi: int) -> int:
    rights = (1 << 13) - 1  # EXECUTE ... MAKE_SYM (ABI 1)
    if abi >= 2:
        rights |= _REFER
    if abi >= 3:
        rights |= _TRUNCATE
    if abi >= 5:
        rights |= _IOCTL_DEV
    return rights


def restrict(read: list[str], write: list[str], listing: list[str] = (), bind: list[int] = ()) -> int:
    """Restrict this process (and its future children) to the given paths; returns the ABI used.

    Paths that do not exist are skipped. Raises ``OSError`` when Landlock is unavailable or a
    system call fails, so that a caller never runs unconfined by accident.

    Listed on the book page ``api``.
    """
    abi = abi_version()
    if abi < 1:
        raise OSError("Landlock is not available on this system")
    libc = _libc()
    handled = _fs_rights(abi)
    attr = _RulesetAttr(handled_access_fs=handled)
    size = 8
    if abi >= 4:
        attr.handled_access_net, size = _BIND_TCP | _CONNECT_TCP, 16
    if abi >= 6:
        attr.scoped, size = _SCOPE_ABSTRACT_UNIX | _SCOPE_SIGNAL, 24
    fd = libc.syscall(_CREATE, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    if fd < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset failed")
    read_rights = _EXECUTE | _READ_FILE | _READ_DIR
    try:
        for paths, rights in ((listing, _READ_DIR), (read, read_rights), (write, handled)):
            for path in paths:
                _add_path(libc, fd, path, rights & handled)
        for port in bind if abi >= 4 else ():
            rule = _NetPort(allowed_access=_BIND_TCP, port=int(port))
            if libc.syscall(_ADD_RULE, fd, _RULE_NET, ctypes.byref(rule), 0) != 0:
                raise OSError(ctypes.get_errno(), f"landlock_add_rule failed for port {port}")
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
        if libc.syscall(_RESTRICT, fd, 0) != 0:
            raise OSError(ctypes.get_errno(), "landlock_restrict_self failed")
    finally:
        os.close(fd)
    return abi


def _add_path(libc, ruleset: int, path: str, rights: int) -> None:
    try:
        pfd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return  # a path that does not exist grants nothing
    try:
        if not os.path.isdir(path):
            rights &= _FILE_RIGHTS
            if not rights:
                return
        rule = _PathBeneath(allowed_access=rights, parent_fd=pfd)
        if libc.syscall(_ADD_RULE, ruleset, _RULE_PATH, ctypes.byref(rule), 0) != 0:
            raise OSError(ctypes.get_errno(), f"landlock_add_rule failed for {path}")
    finally:
        os.close(pfd)


def main(argv: list[str] | None = None) -> None:
    """``confine.py SPEC.json -- CMD ...``: restrict, then ``exec`` the command (never returns).

    Described on the book page ``instructors``.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) < 3 or argv[1] != "--":
        sys.stderr.write("usage: confine.py SPEC.json -- CMD ...\n")
        raise SystemExit(2)
    with open(argv[0], encoding="utf-8") as f:
        spec = json.load(f)
    read = list(spec.get("read", []))
    if spec.get("proc_self"):
        read.append(f"/proc/{os.getpid()}")  # this process's own entries: the command keeps the pid
    restrict(read, spec.get("write", []), spec.get("list", []), spec.get("bind", []))
    os.execv(argv[2], argv[2:])


if __name__ == "__main__":
    main()
