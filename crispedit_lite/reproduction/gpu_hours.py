r"""Expected GPU-hours of each paper table: :func:`crispedit_lite.costs.edit_cell_seconds` over its cells.

Every cell ``reproduce/<cell>.yaml`` (:func:`~crispedit_lite.reproduction.cells.paper_cell`) is one
editing job: eigendecompositions, the edit and the evaluation. The K-FAC factors of the capability
text are collected once per model, capability set and layers (``collect-kfac``, before the editing
jobs) and read from the cache by every cell that needs them, so they are counted once per table.
The numbers are estimates scaled from the H200 device anchor, not measurements. Print them with::

    python -m crispedit_lite.reproduction.gpu_hours

Described on the book page ``reproducing``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["PARAMS_B", "cell_seconds", "table_gpu_hours"]

#: Published parameter counts (billions) of the paper's models.
PARAMS_B = {"meta-llama/Meta-Llama-3-8B-Instruct": 8.03, "Qwen/Qwen2.5-1.5B-Instruct": 1.54}


def cell_seconds(name: str) -> tuple[dict[str, float], tuple[Any, ...] | None]:
    """``(seconds by phase, K-FAC key)`` of paper cell ``name``; the key is ``None`` without K-FAC.

    Described on the book page ``reproducing``.
    """
    from crispedit_lite.costs import edit_cell_seconds
    from crispedit_lite.editing import needs_capability
    from crispedit_lite.models.presets import LAYER_PRESETS
    from crispedit_lite.reproduction.cells import _method, paper_cell

    p = paper_cell(name)
    if p is None:
        raise ValueError(f"no paper cell {name!r}")
    model = str(p["MODEL"])
    _, _, hidden, intermediate = LAYER_PRESETS[model]["shape"]
    layers = tuple(p["LAYERS"] or LAYER_PRESETS[model]["layers"])
    params_b = PARAMS_B[model]
    kfac = needs_capability(_method(p))
    sec = edit_cell_seconds(
        n_edits=int(p["N_EDITS"]), epochs=int(p["EPOCHS"]), batch_size=int(p["BATCH_SIZE"]),
        n_capability=int(p["N_CAPABILITY"]), params_b=params_b, fp32=p["DTYPE"] == "float32",
        layers=[(hidden, intermediate)] * len(layers), kfac=kfac,
        lm_eval=bool(p["RUN_LM_EVAL"]))
    return sec, ((model, int(p["N_CAPABILITY"]), layers, p["DTYPE"]) if kfac else None)


def table_gpu_hours() -> list[dict[str, Any]]:
    """One row per paper table: cells, K-FAC collections, their hours, the editing jobs' hours, total.

    Described on the book page ``reproducing``.
    """
    from crispedit_lite.reproduction.cells import paper_cell_names

    tables: dict[str, dict[str, Any]] = {}
    for name in paper_cell_names():
        sec, key = cell_seconds(name)
        row = tables.setdefault(name.split("_", 1)[0], {"cells": 0, "kfac": {}, "jobs_s": 0.0})
        row["cells"] += 1
        row["jobs_s"] += sec["eigh"] + sec["edit"] + sec["eval"]
        if key is not None:
            row["kfac"][key] = sec["kfac"]
    out = []
    for table, row in sorted(tables.items(), key=lambda kv: int(kv[0][5:])):
        kfac_h = sum(row["kfac"].values()) / 3600
        jobs_h = row["jobs_s"] / 3600
        out.append({"table": table, "cells": row["cells"], "kfac_collections": len(row["kfac"]),
                    "kfac_h": kfac_h, "jobs_h": jobs_h, "total_h": kfac_h + jobs_h})
    return out


def _main() -> None:
    """Print :func:`table_gpu_hours` as a table."""
    print("estimated H200 GPU-hours per table (scaled from the device anchor; evaluation assumed)")
    print(f"{'table':<8}{'cells':>6}{'K-FAC runs':>11}{'K-FAC h':>9}{'jobs h':>9}{'total h':>9}")
    for r in table_gpu_hours():
        print(f"{r['table']:<8}{r['cells']:>6}{r['kfac_collections']:>11}{r['kfac_h']:>9.1f}{r['jobs_h']:>9.1f}"
              f"{r['total_h']:>9.1f}")


if __name__ == "__main__":
    _main()
