"""Execute the book's notebooks side by side into the cache that ``jupyter-book build`` reads.

``make book`` runs this first, then ``jupyter-book build``. The book executes its notebooks through
jupyter-cache (``execute_notebooks: cache`` in ``_config.yml``), one after the other. This script executes
the same notebooks, in the same working directory (``notebooks/``) with the same cell timeout, on
``--workers`` kernels at once (default: one per core, each with its share of the cores' threads), longest
first (the chapter that collects the others' runs last), and stores each executed notebook in
``_build/.jupyter_cache`` exactly as the build would. The build then finds every notebook in the cache
and renders it. Notebooks that the cache already holds
unchanged are skipped; one that fails stops the run with its error (the build would fail on it too).

    python tools/execute_book.py [--workers N]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
#: Chapters that read what the other chapters write (chapter 11 collects the runs of chapters 9 and 10
#: under results/): executed after all the others, as in the build's own order.
COLLECTORS = ("notebooks/11_results.ipynb",)


def _book_notebooks() -> list[Path]:
    """The notebooks of ``_toc.yml`` that the build executes (``_config.yml``'s exclusions left out)."""
    import fnmatch

    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    files = [c["file"] + ".ipynb" for part in toc.get("parts", []) for c in part.get("chapters", [])
             if (ROOT / (c["file"] + ".ipynb")).is_file()]
    excluded = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))["execute"].get(
        "exclude_patterns") or []
    return [ROOT / f for f in files if not any(fnmatch.fnmatch(f, p) for p in excluded)]


def _expected_seconds(path: Path) -> float:
    """The notebook's last execution time, from papermill's cell timings in the committed file (0 if none)."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    return sum(c.get("metadata", {}).get("papermill", {}).get("duration") or 0 for c in nb["cells"])


def _execute(path: str, timeout: int, threads: int) -> tuple[str, Any, float, str | None]:
    """Run one notebook in a fresh kernel (working directory: its folder); return it run, or its error."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    env.pop("MPLBACKEND", None)  # ipykernel installs its inline backend (the figures) only without it
    nb = nbformat.read(path, as_version=4)
    # no timings in the cells' metadata: they would change the hash that the build looks the notebook up by
    client = NotebookClient(nb, timeout=timeout, allow_errors=False, kernel_name="python3",
                            record_timing=False, resources={"metadata": {"path": str(Path(path).parent)}})
    start = time.perf_counter()
    try:
        client.execute(env=env)
    except CellExecutionError as err:
        return path, None, time.perf_counter() - start, str(err)[-3000:]
    return path, nb, time.perf_counter() - start, None


def main(argv: list[str] | None = None) -> int:
    """Execute what the cache lacks; 0 when every notebook ran, 1 when one failed."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args(argv)
    import nbformat
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn

    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    timeout = int(config["execute"].get("timeout", 900))
    cache = get_cache(str(ROOT / "_build" / ".jupyter_cache"))
    todo = []
    for path in _book_notebooks():
        try:
            cache.match_cache_notebook(nbformat.read(path, as_version=4))
        except KeyError:
            todo.append(path)
    if not todo:
        print("every notebook of the book is cached already")
        return 0
    todo.sort(key=_expected_seconds, reverse=True)  # the longest first: the workers finish together
    workers = max(1, min(args.workers, len(todo)))
    threads = max(1, (os.cpu_count() or 1) // workers)
    print(f"executing {len(todo)} notebooks on {workers} kernels at once ({threads} thread(s) each)")
    start, failed = time.perf_counter(), []
    last = [p for p in todo if str(p.relative_to(ROOT)) in COLLECTORS]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for batch in ([p for p in todo if p not in last], last):
            jobs = [pool.submit(_execute, str(p), timeout, threads) for p in batch]
            for job in as_completed(jobs):
                path, nb, seconds, error = job.result()
                name = Path(path).relative_to(ROOT)
                if error is not None:
                    failed.append(name)
                    print(f"{name}: FAILED after {seconds:.0f} s\n{error}", file=sys.stderr)
                    continue
                bundle = CacheBundleIn(nb, cache.add_nb_to_project(path).uri,
                                       data={"execution_seconds": seconds})
                cache.cache_notebook_bundle(bundle, check_validity=False, overwrite=True)
                print(f"{name}: {seconds:.0f} s")
    print(f"notebooks executed in {time.perf_counter() - start:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
