r"""Shared code of the reproduction notebooks: papermill parameters -> config -> one run -> paper cells.

Notebooks ``09_reproduce_llama3_8b`` and ``10_reproduce_qwen2_5_1_5b`` take the parameters of
``reproduce/<cell>.yaml`` (:data:`PARAMETERS`); :func:`config_from_parameters` turns them into an
:class:`~crispedit_lite.editing.EditConfig` (the paper's preset, CrispEdit Table 2 / App. E, when
``MODEL`` is one of the paper's models, else the CPU preset), :func:`run_cell` runs
:func:`crispedit_lite.reproduction.experiment.run_experiment` with them, and the paper's
cells beside any runs. The paper-beside-run functions (``compare_runs``, ``load_runs``, ...) live in
:mod:`crispedit_lite.reproduction.comparison`; paths of a checkout in
:mod:`crispedit_lite.reproduction.paths`.

Derived in notebook ``09_reproduce_llama3_8b``.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from collections.abc import Mapping
from importlib import resources
from typing import TYPE_CHECKING, Any

from crispedit_lite.editing import EditConfig, cpu_config, paper_config
from crispedit_lite.models.presets import LAYER_PRESETS, LLAMA3_8B, QWEN2_5_1_5B
from crispedit_lite.reproduction.paths import resolve_path

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["PARAMETERS", "PAPER_MODELS", "config_from_parameters", "run_cell", "run_metrics",
           "editable_fractions", "paper_cell", "paper_cell_names"]

#: The parameters of the reproduction notebooks, as ``reproduce/*.yaml`` sets them.
PARAMETERS = ("MODEL", "DATASET", "DATA_PATH", "N_EDITS", "METHOD", "GAMMA", "N_CAPABILITY", "LAYERS",
              "SEQUENTIAL", "CHUNK_SIZE", "JUDGE", "RUN_LM_EVAL", "RESULTS_DIR", "SEED", "DEVICE",
              "DTYPE", "EPOCHS", "BATCH_SIZE", "CONFIG")

#: The paper's models and the tables they fill (CrispEdit Table 2: edited ``down_proj`` layers).
PAPER_MODELS: dict[str, dict[str, Any]] = {
    model: {"tables": tables, "layers": tuple(LAYER_PRESETS[model]["layers"])}
    for model, tables in ((LLAMA3_8B, ("table1", "table3", "table4", "table7", "table8")),
                          (QWEN2_5_1_5B, ("table5",)))
}

_PAPER_DATASETS = ("zsre", "counterfact", "wikibigedit")
#: Columns of the per-run metrics frame, in the paper's order.
_RUN_COLUMNS = ("QA Rel", "QA Gen", "NoCtx Rel", "NoCtx Gen", "TF Rel", "TF Gen", "TF Spec")


@functools.lru_cache(maxsize=1)
def _paper_cells() -> dict[str, dict[str, Any]]:
    text = resources.files("crispedit_lite").joinpath("resources/paper_cells.json").read_text("utf-8")
    return json.loads(text)["cells"]


def paper_cell(name: str) -> dict[str, Any] | None:
    """The parameters of the paper cell ``reproduce/<name>.yaml``, or ``None`` if there is no such cell.

    Read from the package's copy (``resources/paper_cells.json``, written with the yaml files by
    ``reproduce/make_configs.py``), so it works without a checkout.

    Derived in notebook ``09_reproduce_llama3_8b``.
    """
    cell = _paper_cells().get(name)
    return copy.deepcopy(cell) if cell is not None else None


def paper_cell_names(prefix: str = "") -> list[str]:
    """The names of the paper cells (``reproduce/<name>.yaml``) that start with ``prefix``, sorted.

    Derived in notebook ``11_results``.
    """
    return sorted(n for n in _paper_cells() if n.startswith(prefix))


def _method(params: Mapping[str, Any]) -> str:
    """The registered method of ``METHOD`` + ``SEQUENTIAL`` (``ft`` + True is its ``sequential_form``)."""
    from crispedit_lite.editing.registry import get_editor, sequential_form

    method, seq = str(params["METHOD"]), bool(params["SEQUENTIAL"])
    editor = get_editor(method)
    if editor.sequential == seq:
        return method
    if seq:
        try:
            return sequential_form(method)
        except ValueError as err:
            raise ValueError(f"parameter SEQUENTIAL=True: {err}") from None
    raise ValueError(f"parameters METHOD={method!r} and SEQUENTIAL=False contradict each other")


def config_from_parameters(params: Mapping[str, Any]) -> tuple[EditConfig, str]:
    r"""``(config, preset)`` for notebook parameters; ``preset`` is ``"paper"`` or ``"cpu"``.

    The paper's preset (:func:`~crispedit_lite.editing.paper_config`: fp32 eigendecompositions,
    Wikipedia capability text, 512-token texts) applies when ``MODEL`` is one of :data:`PAPER_MODELS`,
    the CPU preset (:func:`~crispedit_lite.editing.cpu_config`: offline capability text, 128 tokens)
    otherwise. Either way ``GAMMA`` (:math:`\gamma`), ``N_CAPABILITY`` (:math:`n`), ``LAYERS``,
    ``CHUNK_SIZE``, ``EPOCHS``, ``BATCH_SIZE``, ``SEED`` and the optional ``CONFIG`` (a mapping of
    other shared :class:`~crispedit_lite.editing.EditConfig` fields or settings of the method, such as
    ``{seq_mask_prompt: true}``) override the preset, and ``METHOD`` with
    ``SEQUENTIAL`` gives the method. Derived in notebook ``09_reproduce_llama3_8b``.
    """
    missing = [k for k in PARAMETERS if k not in params and k != "CONFIG"]  # CONFIG is optional
    if missing:
        raise ValueError(f"reproduction parameters lack {missing}")
    method = _method(params)
    changes = dict(gamma=float(params["GAMMA"]), n_capability=int(params["N_CAPABILITY"]),
                   chunk_size=int(params["CHUNK_SIZE"]), epochs=int(params["EPOCHS"]),
                   batch_size=int(params["BATCH_SIZE"]), seed=int(params["SEED"]),
                   layers=None if params["LAYERS"] is None else tuple(int(i) for i in params["LAYERS"]))
    extra = params.get("CONFIG") or {}  # optional: other shared fields or the method's own settings
    if not isinstance(extra, Mapping):
        raise ValueError(f"parameter CONFIG must be a mapping of EditConfig settings, got {extra!r}")
    changes.update(extra)
    if str(params["MODEL"]) in PAPER_MODELS:
        dataset = str(params["DATASET"])
        if dataset not in _PAPER_DATASETS:
            raise ValueError(f"parameter DATASET must be one of {_PAPER_DATASETS} for the paper's model "
                             f"{params['MODEL']}, got {dataset!r}")
        return paper_config(method, dataset, model=str(params["MODEL"]), **changes), "paper"
    return cpu_config(method, **changes), "cpu"


def run_cell(params: Mapping[str, Any], *, notebook: str, progress: bool = False) -> dict[str, Any]:
    """Run one reproduction cell (:func:`~crispedit_lite.reproduction.experiment.run_experiment`).

    Returns the result record.

    Evaluations: WILD, teacher-forced and the capability proxies always, lm-eval with ``RUN_LM_EVAL``.
    ``DATA_PATH`` (when it names a file) and ``RESULTS_DIR`` are resolved with :func:`resolve_path`.
    The record's ``command`` is the papermill call that repeats the run. Derived in notebook
    ``09_reproduce_llama3_8b``.

    Listed on the book page ``api``.
    """
    from crispedit_lite.reproduction.experiment import run_experiment

    config, preset = config_from_parameters(params)
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
        # a paper cell is scored with the paper's WILD decoding first (the robust one beside it)
        wild_decoding=["official", "robust"] if preset == "paper" else None,
        command=command, progress=progress)


def run_metrics(result: Mapping[str, Any]) -> pd.DataFrame:
    """A run's paper columns (WILD and teacher-forced) before and after the edit, in percent.

    Columns ``metric, before, after``; metrics the run did not measure are left out.

    Listed on the book page ``api``.
    """
    import pandas as pd

    from crispedit_lite.reproduction.paper_tables import run_metric

    rows = [{"metric": m, "before": run_metric(result, m, phase="before"),
             "after": run_metric(result, m, phase="after")} for m in _RUN_COLUMNS]
    return pd.DataFrame([r for r in rows if r["after"] is not None], columns=["metric", "before", "after"])


def editable_fractions(result: Mapping[str, Any]) -> pd.DataFrame:
    """Editable share of each edited layer's weight space under the run's projectors.

    One row (``"batch"``) for CrispEdit / Adam-NSCL, one per chunk for CrispEdit-Seq (the projector
    each chunk was trained under: chunk :math:`k` protects the capability factors merged with the
    K-FAC of chunks :math:`1..k-1`); columns ``layer <i>``. Empty for methods without a projector.

    Listed on the book page ``api``.
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
