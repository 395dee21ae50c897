r"""Shared code of the reproduction notebooks: papermill parameters -> config -> one run -> paper cells.

Notebooks ``09_reproduce_llama3_8b`` and ``10_reproduce_qwen2_5_1_5b`` take the parameters of
``reproduce/<cell>.yaml`` (:data:`PARAMETERS`); :func:`config_from_parameters` turns them into an
:class:`~crispedit_lite.editing.EditConfig` (the paper's preset, CrispEdit Table 2 / App. E, when
``MODEL`` is one of the paper's models, else the CPU preset), :func:`run_cell` runs
:func:`crispedit_lite.experiment.run_experiment` with them, and :func:`compare_runs` puts the paper's
cells beside any runs (:func:`crispedit_lite.paper_tables.compare`, plus a check that the edit data is
the paper's file). ``11_results`` reads every run back with :func:`load_runs`.

Derived in notebook ``09_reproduce_llama3_8b``.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crispedit_lite.editing import EditConfig, cpu_config, paper_config

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["PARAMETERS", "PAPER_MODELS", "repo_root", "resolve_path", "config_from_parameters",
           "run_cell", "run_metrics", "editable_fractions", "compare_runs", "side_by_side", "load_runs",
           "scale_notes", "scale_summary", "benchmark_summary"]

#: The parameters of the reproduction notebooks, as ``reproduce/*.yaml`` sets them.
PARAMETERS = ("MODEL", "DATASET", "DATA_PATH", "N_EDITS", "METHOD", "GAMMA", "N_CAPABILITY", "LAYERS",
              "SEQUENTIAL", "CHUNK_SIZE", "JUDGE", "RUN_LM_EVAL", "RESULTS_DIR", "SEED", "DEVICE",
              "DTYPE", "EPOCHS", "BATCH_SIZE")

#: The paper's models and the tables they fill (CrispEdit Table 2: edited ``down_proj`` layers).
PAPER_MODELS: dict[str, dict[str, Any]] = {
    "meta-llama/Meta-Llama-3-8B-Instruct": {"tables": ("table1", "table3", "table4", "table7", "table8"),
                                            "layers": (19, 20, 21, 22, 23)},
    "Qwen/Qwen2.5-1.5B-Instruct": {"tables": ("table5",), "layers": (4, 5, 6)},
}

_PAPER_DATASETS = ("zsre", "counterfact", "wikibigedit")
#: Columns of the per-run metrics frame, in the paper's order.
_RUN_COLUMNS = ("QA Rel", "QA Gen", "NoCtx Rel", "NoCtx Gen", "TF Rel", "TF Gen", "TF Spec")


def repo_root(start: str | os.PathLike | None = None) -> Path | None:
    """The checkout holding ``start`` (a folder with ``reproduce/`` and ``notebooks/``), or ``None``."""
    here = Path(start or Path.cwd()).resolve()
    for d in (here, *here.parents):
        if (d / "reproduce").is_dir() and (d / "notebooks").is_dir():
            return d
    return None


def resolve_path(path: str | os.PathLike, root: Path | None = None) -> Path:
    """A relative path of ``reproduce/*.yaml`` resolved against the repository root (else the cwd).

    The yaml files give paths relative to the root; papermill may run the notebook from ``notebooks/``
    (``python -m crispedit_lite reproduce``) or from the root, and both must write to the same place.
    """
    p = Path(path)
    if p.is_absolute():
        return p
    root = root if root is not None else repo_root()
    return (root / p) if root is not None else p.resolve()


def _method(params: Mapping[str, Any]) -> str:
    method, seq = str(params["METHOD"]), bool(params["SEQUENTIAL"])
    if method == "crispedit" and seq:
        return "crispedit_seq"
    if method == "crispedit_seq" and not seq:
        raise ValueError("parameters METHOD='crispedit_seq' and SEQUENTIAL=False contradict each other")
    if seq and method != "crispedit_seq":
        raise ValueError(f"parameter SEQUENTIAL=True: only CrispEdit has a sequential form here, "
                         f"got METHOD={method!r}")
    return method


def config_from_parameters(params: Mapping[str, Any]) -> tuple[EditConfig, str]:
    r"""``(config, preset)`` for notebook parameters; ``preset`` is ``"paper"`` or ``"cpu"``.

    The paper's preset (:func:`~crispedit_lite.editing.paper_config`: fp32 eigendecompositions,
    Wikipedia capability text, 512-token texts) applies when ``MODEL`` is one of :data:`PAPER_MODELS`,
    the CPU preset (:func:`~crispedit_lite.editing.cpu_config`: offline capability text, 128 tokens)
    otherwise. Either way ``GAMMA`` (:math:`\gamma`), ``N_CAPABILITY`` (:math:`n`), ``LAYERS``,
    ``CHUNK_SIZE``, ``EPOCHS``, ``BATCH_SIZE`` and ``SEED`` override the preset, and ``METHOD`` with
    ``SEQUENTIAL`` gives the method. Derived in notebook ``09_reproduce_llama3_8b``.
    """
    missing = [k for k in PARAMETERS if k not in params]
    if missing:
        raise ValueError(f"reproduction parameters lack {missing}")
    method = _method(params)
    changes = dict(gamma=float(params["GAMMA"]), n_capability=int(params["N_CAPABILITY"]),
                   chunk_size=int(params["CHUNK_SIZE"]), epochs=int(params["EPOCHS"]),
                   batch_size=int(params["BATCH_SIZE"]), seed=int(params["SEED"]),
                   layers=None if params["LAYERS"] is None else tuple(int(i) for i in params["LAYERS"]))
    if str(params["MODEL"]) in PAPER_MODELS:
        dataset = str(params["DATASET"])
        if dataset not in _PAPER_DATASETS:
            raise ValueError(f"parameter DATASET must be one of {_PAPER_DATASETS} for the paper's model "
                             f"{params['MODEL']}, got {dataset!r}")
        return paper_config(method, dataset, **changes), "paper"
    return cpu_config(method, **changes), "cpu"


def run_cell(params: Mapping[str, Any], *, notebook: str, progress: bool = False) -> dict[str, Any]:
    """Run one reproduction cell (:func:`~crispedit_lite.experiment.run_experiment`); the result record.

    Evaluations: WILD, teacher-forced and the capability proxies always, lm-eval with ``RUN_LM_EVAL``.
    ``DATA_PATH`` (when it names a file) and ``RESULTS_DIR`` are resolved with :func:`resolve_path`.
    The record's ``command`` is the papermill call that repeats the run. Derived in notebook
    ``09_reproduce_llama3_8b``.
    """
    from crispedit_lite.experiment import run_experiment

    config, _ = config_from_parameters(params)
    data = str(params["DATA_PATH"])
    if re.search(r"[/\\]|\.jsonl?$", data) and not data.startswith(("http://", "https://", "hf:")):
        data = str(resolve_path(data))
    evals = ["wild", "teacher_forced", "proxies"] + (["lm_eval"] if params["RUN_LM_EVAL"] else [])
    shown = {k: (list(v) if isinstance(v, tuple) else v) for k, v in params.items() if k in PARAMETERS}
    command = (f"papermill notebooks/{notebook}.ipynb out.ipynb --cwd notebooks -y "
               f"'{json.dumps(shown, sort_keys=True)}'")
    return run_experiment(
        config, model=str(params["MODEL"]), data=data, dataset_name=str(params["DATASET"]),
        n_edits=int(params["N_EDITS"]), device=str(params["DEVICE"]), dtype=str(params["DTYPE"]),
        evals=evals, judge=bool(params["JUDGE"]), results_dir=str(resolve_path(params["RESULTS_DIR"])),
        command=command, progress=progress)


def run_metrics(result: Mapping[str, Any]) -> pd.DataFrame:
    """A run's paper columns (WILD and teacher-forced) before and after the edit, in percent.

    Columns ``metric, before, after``; metrics the run did not measure are left out. Derived in
    notebook ``09_reproduce_llama3_8b``.
    """
    import pandas as pd

    from crispedit_lite.paper_tables import run_metric

    rows = [{"metric": m, "before": run_metric(result, m, phase="before"),
             "after": run_metric(result, m, phase="after")} for m in _RUN_COLUMNS]
    return pd.DataFrame([r for r in rows if r["after"] is not None], columns=["metric", "before", "after"])


def editable_fractions(result: Mapping[str, Any]) -> pd.DataFrame:
    """Editable share of each edited layer's weight space under the run's projectors.

    One row (``"batch"``) for CrispEdit / Adam-NSCL, one per chunk for CrispEdit-Seq (the projector
    each chunk was trained under: chunk :math:`k` protects the capability factors merged with the
    K-FAC of chunks :math:`1..k-1`); columns ``layer <i>``. Empty for methods without a projector.
    Derived in notebook ``09_reproduce_llama3_8b``.
    """
    import pandas as pd

    proj = (result.get("edit") or {}).get("projectors") or {}
    if "editable_fraction_per_chunk" in proj:
        rows = list(proj["editable_fraction_per_chunk"])
        index = [f"chunk {k + 1}" for k in range(len(rows))]
    else:
        rows = [{m: s["editable_fraction"] for m, s in proj.items()
                 if isinstance(s, Mapping) and "editable_fraction" in s}]
        index = ["batch"] if rows[0] else []
        rows = rows if rows[0] else []

    def name(m: str) -> str:
        found = re.search(r"layers\.(\d+)\.", m)
        return f"layer {found.group(1)}" if found else m

    return pd.DataFrame(rows, index=index).rename(columns=name)


def _data_issue(result: Mapping[str, Any]) -> str | None:
    from crispedit_lite.paper_tables import DATASETS

    s = result.get("settings", {})
    data = str(s.get("data", ""))
    stem = re.sub(r"\.jsonl?$", "", data.replace("\\", "/").rsplit("/", 1)[-1].lower())
    if DATASETS.get(re.sub(r"[^a-z0-9]+", "_", stem).strip("_")) is None:
        return f"edit data {stem or '?'} (paper: the {s.get('dataset')} file of the official repo)"
    return None


def compare_runs(runs: Iterable[Mapping[str, Any]], tables: Sequence[str] | None = None, *,
                 include_missing: bool = True) -> pd.DataFrame:
    """:func:`crispedit_lite.paper_tables.compare` on ``tables`` (``None``: all), also flagging edit data.

    A run is matched to paper cells by its recorded dataset *label*; if its edit data is not one of
    the paper's files (e.g. the bundled ``smollm2-counterfacts`` set labelled ``counterfact``), the
    cell is not at paper scale and ``scale notes`` says so. Derived in notebook ``11_results``.
    """
    from crispedit_lite.paper_tables import compare, load_paper_tables

    runs = list(runs)
    rows = load_paper_tables()
    if tables is not None:
        rows = rows[rows["table"].isin(list(tables))]
    frame = compare(rows, runs, include_missing=include_missing)
    issues = {str(r.get("run_id")): _data_issue(r) for r in runs}
    for i, rid in frame["run id"].items():
        note = issues.get(str(rid)) if rid is not None else None
        if note:
            frame.at[i, "paper scale"] = False
            frame.at[i, "scale notes"] = "; ".join(x for x in (frame.at[i, "scale notes"], note) if x)
    return frame


def side_by_side(frame: pd.DataFrame, table: str) -> pd.DataFrame:
    """One table of a :func:`compare_runs` frame: a row per paper row, ``paper``/``this run`` per column.

    Rows are ``(dataset, label, setting)`` in the paper's order; columns ``(metric, "paper" | "this
    run")`` in the paper's column order. Derived in notebook ``11_results``.
    """
    import pandas as pd

    g = frame[frame["table"] == table]
    if g.empty:
        raise ValueError(f"the frame has no cells of {table!r}; tables: {sorted(frame['table'].unique())}")
    index = ["dataset", "label", "setting"]
    order = list(dict.fromkeys(map(tuple, g[index].itertuples(index=False))))
    metrics = list(dict.fromkeys(g["metric"]))
    wide = g.pivot_table(index=index, columns="metric", values=["paper", "this run"], aggfunc="first",
                         dropna=False)
    wide = wide.swaplevel(0, 1, axis=1)
    cols = pd.MultiIndex.from_tuples([(m, k) for m in metrics for k in ("paper", "this run")])
    return wide.reindex(index=pd.MultiIndex.from_tuples(order, names=index), columns=cols)


def load_runs(*roots: str | os.PathLike) -> tuple[list[dict[str, Any]], list[str]]:
    """Every results JSON under ``roots`` (recursively): ``(valid runs, problems)``.

    A file that is not valid JSON or breaks :data:`crispedit_lite.results.SCHEMA` is not read, and
    ``problems`` names it with the reason, so the notebook can show it (never a silent skip).
    Missing roots are fine (nothing has been run yet). Derived in notebook ``11_results``.
    """
    from crispedit_lite.results import validate_result

    runs, problems, seen = [], [], set()
    for root in roots:
        base = Path(root)
        for path in sorted(base.rglob("*.json")) if base.is_dir() else []:
            if path.resolve() in seen:
                continue
            seen.add(path.resolve())
            try:
                data = json.loads(path.read_text())
                validate_result(data)
            except (ValueError, OSError) as err:  # json.JSONDecodeError is a ValueError
                problems.append(f"{path.relative_to(base)}: {err}")
                continue
            data["_path"] = str(path)
            runs.append(data)
    return sorted(runs, key=lambda r: r["created"]), problems


def scale_notes(frame: pd.DataFrame) -> list[str]:
    """The distinct ``scale notes`` of a :func:`compare_runs` frame, unmeasured columns merged in one.

    Derived in notebook ``09_reproduce_llama3_8b``.
    """
    notes = {n for s in frame["scale notes"] for n in str(s).split("; ") if n}
    prefix = "the run did not measure "
    unmeasured = sorted(n[len(prefix):] for n in notes if n.startswith(prefix))
    out = sorted(n for n in notes if not n.startswith(prefix))
    return out + ([f"not measured: {', '.join(unmeasured)}"] if unmeasured else [])


def scale_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Per table of a :func:`compare_runs` frame: paper cells, cells run, cells at paper scale.

    Derived in notebook ``11_results``.
    """
    import pandas as pd

    rows = []
    for table, g in frame.groupby("table", sort=True):
        ran = g[g["run id"].notna()]
        notes = scale_notes(ran)
        rows.append({"table": table, "paper cells": len(g), "cells run": len(ran),
                     "at paper scale": int(g["paper scale"].sum()),
                     "why not at paper scale": "; ".join(notes) if len(ran) else "not run"})
    return pd.DataFrame(rows, columns=["table", "paper cells", "cells run", "at paper scale",
                                       "why not at paper scale"])


def benchmark_summary(paths: Iterable[str | os.PathLike]) -> pd.DataFrame:
    """Headline figures of ``benchmarks/scale.py`` JSON files, one row per (file, preset).

    Random-init weights: timings and memory only. Fields absent from a file are NaN.
    Derived in notebook ``11_results``.
    """
    import pandas as pd

    def get(d: Any, *keys: str) -> Any:
        for k in keys:
            d = d.get(k) if isinstance(d, Mapping) else None
        return math.nan if d is None or isinstance(d, (dict, list)) else d

    rows = []
    for path in sorted(Path(p) for p in paths):
        data = json.loads(path.read_text())
        for name, p in (data.get("presets") or {}).items():
            rows.append({
                "file": path.name, "date": data.get("date"), "device": get(data, "hardware", "gpu"),
                "preset": name, "weights": data.get("weights", "random init"),
                "K-FAC tokens/s": get(p, "kfac", "kfac_tokens_per_s"),
                "K-FAC / fwd-bwd": get(p, "kfac", "kfac_over_fwdbwd"),
                "eigh, all layers (s)": get(p, "eigh", "all_layers_eigh_s"),
                "plain FT step (s)": get(p, "step", "plain_ft_s"),
                "best CrispEdit step / FT": get(p, "step", "best_ratio_to_plain_ft"),
                "best variant": get(p, "step", "best_crispedit_variant"),
            })
    return pd.DataFrame(rows)
