r"""Where a submission's code may run: its folder, its environment, its allow-list, its processes.

For every submission the grading command makes a fresh temporary folder laid out like a checkout
(``work/notebooks`` is the kernel's working directory, ``work/reproduce`` and ``work/benchmarks`` link
to the real ones, read-only), a scrubbed environment (:func:`scrubbed_env`: paths into that folder,
thread counts and offline switches; nothing else of the grader's environment) and a Landlock
allow-list (:func:`allow_list`) that lets it read the Python installation, the package, the data
folders and the model caches, and write only its own folder. Instructor files (solution notebooks,
the submissions, the book, the git history, the grades folder) are outside the list.

:class:`ProcessJail` kills every process a submission started, by process group and, on Linux, by
adopting orphans (``PR_SET_CHILD_SUBREAPER``), so that nothing outlives its deadline.
:class:`FileGuard` snapshots the instructor files, the package and the interpreter's start-up files
before any kernel runs, and restores them after each submission if anything changed them (the
second line of defence where Landlock is unavailable). Described on the book page ``instructors``.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import signal
import site
import sys
import time
from collections.abc import Iterable
from pathlib import Path

__all__ = [
    "scrubbed_env",
    "allow_list",
    "make_workspace",
    "make_checkout",
    "ProcessJail",
    "FileGuard",
    "landlock_abi",
]

_KEEP_ENV = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "CUDA_VISIBLE_DEVICES",
    "PYTHONPATH",
)
_SYSTEM_READ = ("/usr", "/lib", "/lib32", "/lib64", "/libx32", "/bin", "/sbin", "/etc", "/sys")
_PROC_FILES = ("cpuinfo", "meminfo", "stat", "loadavg", "uptime", "version", "filesystems", "mounts", "sys")
_DEV_READ = ("/dev/zero", "/dev/urandom", "/dev/random", "/dev/full")


def landlock_abi() -> int:
    """The Landlock ABI of this kernel (0: unavailable).

    Listed on the book page ``api``.
    """
    from crispedit_lite.exercises import confine

    return confine.abi_version()


def package_dir() -> Path:
    """The folder of the installed ``crispedit_lite`` package."""
    return Path(__file__).resolve().parents[1]


def checkout() -> Path | None:
    """The checkout the package was installed from (editable installs), else ``None``."""
    root = package_dir().parent
    return root if (root / "reproduce").is_dir() and (root / "notebooks").is_dir() else None


def real_cache() -> Path:
    """The model cache of this machine (``$CRISPEDIT_CACHE``, default ``~/.cache/crispedit_lite``)."""
    from crispedit_lite.models import cache_root

    return Path(cache_root()).resolve()


def make_workspace(base: Path) -> dict[str, Path]:
    """Create the private folders of one process under ``base``: ``home``, ``tmp``, ``ipython``, ``mpl``.

    ``mpl`` is seeded with matplotlib's font list, to skip its rebuild in every kernel.

    Listed on the book page ``api``.
    """
    paths = {k: base / k for k in ("home", "tmp", "ipython", "mpl")}
    for p in paths.values():
        p.mkdir(parents=True, exist_ok=True)
    mpl = Path(os.environ.get("MPLCONFIGDIR") or Path.home() / ".cache" / "matplotlib")
    for f in mpl.glob("fontlist-*.json") if mpl.is_dir() else []:
        shutil.copy2(f, paths["mpl"] / f.name)
    return paths


def make_checkout(root: Path) -> dict[str, Path]:
    """Lay out a checkout-like folder under ``root``; returns ``work``, ``cwd`` and ``cache``.

    ``work/notebooks`` is the kernel's working directory; ``work/reproduce`` and ``work/benchmarks``
    link to the real checkout's (read-only under the allow-list), so that the chapters find their
    data; ``cache`` is a model cache whose entries link to the real one, so that reads hit it and
    writes stay here.

    Listed on the book page ``api``.
    """
    paths = {"work": root / "work", "cwd": root / "work" / "notebooks", "cache": root / "cache"}
    for p in paths.values():
        p.mkdir(parents=True, exist_ok=True)
    repo = checkout()
    if repo is not None:
        for name in ("reproduce", "benchmarks"):
            if (repo / name).is_dir():
                (paths["work"] / name).symlink_to(repo / name, target_is_directory=True)
    real = real_cache()
    if real.is_dir():
        for entry in real.iterdir():
            if entry.is_dir() and entry.name == "kfac":
                (paths["cache"] / "kfac").mkdir(exist_ok=True)
                for f in entry.glob("*.safetensors"):
                    (paths["cache"] / "kfac" / f.name).symlink_to(f)
            elif not entry.name.startswith("."):
                (paths["cache"] / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
    return paths


def scrubbed_env(paths: dict[str, Path], extra: dict[str, str] | None = None) -> dict[str, str]:
    """The only environment a submission sees: its own folders, thread counts, offline switches.

    Listed on the book page ``api``.
    """
    bindir = str(Path(sys.executable).parent)
    env = {
        "PATH": f"{bindir}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(paths["home"]),
        "TMPDIR": str(paths["tmp"]),
        "TMP": str(paths["tmp"]),
        "TEMP": str(paths["tmp"]),
        "IPYTHONDIR": str(paths["ipython"]),
        "MPLCONFIGDIR": str(paths["mpl"]),
        "MPLBACKEND": "Agg",
        "JUPYTER_CONFIG_DIR": str(paths["home"] / ".jupyter"),
        "JUPYTER_DATA_DIR": str(paths["home"] / ".local" / "share" / "jupyter"),
        "JUPYTER_RUNTIME_DIR": str(paths["tmp"]),
        "XDG_CACHE_HOME": str(paths["home"] / ".cache"),
        "XDG_CONFIG_HOME": str(paths["home"] / ".config"),
        "HF_HOME": str(paths["home"] / "hf"),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYDEVD_DISABLE_FILE_VALIDATION": "1",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
    }
    for key in _KEEP_ENV:
        if key in os.environ:
            env[key] = os.environ[key]
    env.update(extra or {})
    return env


def _inside(path: Path, parent: Path) -> bool:
    return path == parent or parent in path.parents


def _carve(root: Path, protected: list[Path], read: list[str], listing: list[str], depth: int = 0) -> None:
    """Grant reading ``root`` minus the protected paths inside it (listing-only along the way)."""
    if any(_inside(root, p) for p in protected) or not root.exists():
        return
    if not any(_inside(p, root) for p in protected):
        read.append(str(root))
        return
    listing.append(str(root))
    if depth > 12 or not root.is_dir():
        return
    for child in sorted(root.iterdir()):
        _carve(child.resolve(), protected, read, listing, depth + 1)


def allow_list(writable: Path, protected: Iterable[str | os.PathLike]) -> dict[str, list]:
    """The Landlock spec of a kernel or runner writing only to ``writable``.

    Readable: the system folders, ``/proc`` entries of the process itself and a few global ones,
    the interpreter and its ``sys.path``, the package, the checkout's ``reproduce`` and
    ``benchmarks``, and the model cache; each minus anything inside ``protected``. Writable:
    ``writable`` and ``/dev/null``. GPU device files are added where they exist.

    Listed on the book page ``api``.
    """
    prot = [Path(p).resolve() for p in protected]
    repo = checkout()
    if repo is not None:
        prot += [repo / "notebooks", repo / "_build", repo / ".git", repo / "book", repo / "tests"]
    roots = [Path(p) for p in _SYSTEM_READ]
    roots += [Path(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)]
    roots.append(Path(os.path.realpath(sys.executable)).parent)
    roots += [Path(p) for p in site.getsitepackages() + [site.getusersitepackages()]]
    roots += [Path(p) for p in sys.path if p and Path(p).is_dir()]
    roots.append(package_dir())
    roots.append(real_cache())
    if repo is not None:
        roots += [repo / "reproduce", repo / "benchmarks"]
    read: list[str] = []
    listing: list[str] = []
    seen = set()
    for r in roots:
        r = r.resolve()
        if r in seen:
            continue
        seen.add(r)
        _carve(r, prot, read, listing)
    read += [f"/proc/{name}" for name in _PROC_FILES] + list(_DEV_READ)
    write = [str(writable.resolve()), "/dev/null"]
    write += sorted(str(p) for p in Path("/dev").glob("nvidia*")) if Path("/dev/nvidiactl").exists() else []
    return {"read": read, "list": listing, "write": write, "proc_self": True}


def _set_subreaper() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        return False


def _children_map() -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir() if Path("/proc").is_dir() else []:
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        out.setdefault(ppid, []).append(int(d.name))
    return out


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (Linux ``/proc``; empty elsewhere)."""
    tree, out, todo = _children_map(), set(), [pid]
    while todo:
        for c in tree.get(todo.pop(), []):
            if c not in out:
                out.add(c)
                todo.append(c)
    return out


class ProcessJail:
    """Kill every process one submission started: its process groups, then every new descendant.

    Made before the submission's first process; :meth:`kill_all` sends ``SIGKILL`` to the groups
    registered with :meth:`add_group` and to every descendant of this process that did not exist
    before (orphans that left their group are adopted by this process, on Linux), and reaps them.

    Listed on the book page ``api``.
    """

    def __init__(self) -> None:
        self.subreaper = _set_subreaper()
        self.before = descendants(os.getpid())
        self.groups: set[int] = set()

    def add_group(self, pgid: int) -> None:
        """Register a process group (a kernel, a judge) to kill at the end."""
        self.groups.add(pgid)

    def kill_all(self) -> list[int]:
        """Kill and reap everything this submission started; returns the pids killed."""
        killed = []
        for _ in range(3):  # a fork during the sweep gets a second look
            for g in self.groups:
                try:
                    os.killpg(g, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            new = descendants(os.getpid()) - self.before
            for pid in new:
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                except (ProcessLookupError, PermissionError):
                    pass
            for pid in new:
                try:
                    os.waitpid(pid, os.WNOHANG)
                except (ChildProcessError, OSError):
                    pass
            if not new:
                break
            time.sleep(0.05)
        return sorted(set(killed))


def _digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


class FileGuard:
    """Snapshot files before any submission runs; after each one, restore what changed.

    Watched: the given files and folders (recursively, up to ``max_bytes`` in all), and the
    interpreter's start-up hooks (``*.pth``, ``sitecustomize.py``, ``usercustomize.py`` in the site
    folders), whose new entries would run code in every later Python process.

    Listed on the book page ``api``.
    """

    def __init__(self, paths: Iterable[str | os.PathLike], max_bytes: int = 512 << 20) -> None:
        self.files: dict[Path, bytes] = {}
        self.folders: list[Path] = []
        total = 0
        for p in map(Path, paths):
            p = p.resolve()
            if p.is_dir():
                self.folders.append(p)
                items = [q for q in p.rglob("*") if q.is_file() and "__pycache__" not in q.parts]
            else:
                items = [p] if p.is_file() else []
            for q in items:
                data = q.read_bytes()
                total += len(data)
                if total > max_bytes:
                    raise ValueError(f"grade: the files to protect exceed {max_bytes >> 20} MiB ({q})")
                self.files[q] = data
        self.site = [
            Path(s) for s in site.getsitepackages() + [site.getusersitepackages()] if Path(s).is_dir()
        ]
        self.startup = {q: q.read_bytes() for q in self._startup_files()}

    def _startup_files(self) -> list[Path]:
        out = []
        for s in self.site:
            out += [
                q
                for q in s.iterdir()
                if q.suffix == ".pth" or q.name in ("sitecustomize.py", "usercustomize.py")
            ]
        return out

    def restore(self) -> list[str]:
        """Put back every changed or deleted file, delete new ones; returns what was repaired."""
        repaired = []
        for p, data in self.files.items():
            try:
                same = p.is_file() and not p.is_symlink() and p.read_bytes() == data
            except OSError:
                same = False
            if not same:
                _write_atomic(p, data)
                repaired.append(str(p))
        for folder in self.folders:
            for q in list(folder.rglob("*")) if folder.is_dir() else []:
                if (
                    (q.is_file() or q.is_symlink())
                    and q.resolve() not in self.files
                    and q not in self.files
                    and "__pycache__" not in q.parts
                ):
                    q.unlink(missing_ok=True)
                    repaired.append(f"{q} (added)")
        for q in self._startup_files():
            if q not in self.startup:
                q.unlink(missing_ok=True)
                repaired.append(f"{q} (added)")
            elif _digest(q) != hashlib.sha256(self.startup[q]).hexdigest():
                _write_atomic(q, self.startup[q])
                repaired.append(str(q))
        return repaired


def _write_atomic(path: Path, data: bytes) -> None:
    from crispedit_lite.atomic import write_bytes_atomic

    write_bytes_atomic(path, data)
