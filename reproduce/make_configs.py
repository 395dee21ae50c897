r"""Write ``reproduce/*.yaml``: papermill parameters for every paper table cell group this project runs.

One file per (table, dataset, method[, setting]) group. Each sets every parameter of the reproduction
notebooks (``09_reproduce_llama3_8b`` / ``10_reproduce_qwen2_5_1_5b``), so a change of a notebook's
CPU defaults never changes a paper run, and its header says which cells it regenerates, how to run it,
which data file it needs, and the GPU memory and time it should take (estimates, see
:func:`estimate`). What a cell says about a method comes from the editor registry
(``crispedit_lite.editing.registry``): its paper row, whether it runs in chunks and how (``paper_run``:
chunk size, epochs, extra settings, precision), whether it picks its own layers (``presets``) and
reads capability text. The cell index of ``reproduce/README.md`` (between the ``cells`` markers) is
written here too, and so is ``crispedit_lite/resources/paper_cells.json``: every cell's parameters as
package data, which the chapters read through ``crispedit_lite.reproduction.cells.paper_cell`` when no
checkout is around them (Colab, a ``pip install``). ``tests/reproduction/test_paper_tables.py`` checks
that the committed files equal the output.

Usage (from the repository root)::

    python reproduce/make_configs.py          # (re)write the yaml files and the README index
    python reproduce/make_configs.py --check  # exit 1 if a committed file differs
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
INDEX = ROOT / "crispedit_lite" / "resources" / "paper_cells.json"
sys.path.insert(0, str(ROOT))

from crispedit_lite.editing.registry import (  # noqa: E402
    get_editor,
    needs_capability,
    paper_dtype,
    registry,
    sequential_form,
)
from crispedit_lite.models.presets import (  # noqa: E402
    LAYER_PRESETS,
    LLAMA3_8B,
    QWEN2_5_1_5B,
    down_proj_shape,
)
from crispedit_lite.reproduction.paper_tables import paper_tables_data, paper_value  # noqa: E402

LLAMA, QWEN = LLAMA3_8B, QWEN2_5_1_5B
NB = {LLAMA: "notebooks/09_reproduce_llama3_8b.ipynb", QWEN: "notebooks/10_reproduce_qwen2_5_1_5b.ipynb"}
LAYERS = {m: list(LAYER_PRESETS[m]["layers"]) for m in (LLAMA, QWEN)}
DATA = {"zsre": "data/zsre_mend_eval_3k.json", "counterfact": "data/counterfact-edit_3k.json",
        "wikibigedit": "data/wiki_big_edit_3k.json"}
ZSRE_10K = "data/zsre_mend_10k.json"
DATASETS = ("zsre", "counterfact", "wikibigedit")
LABEL = {"zsre": "ZsRE", "counterfact": "CounterFact", "wikibigedit": "WikiBigEdit"}
# the editors that read capability text; each cell's precision is its official run's (paper_dtype)
CAPABILITY = tuple(n for n in registry() if needs_capability(n))


def row_label(method: str, table: str = "table1") -> str:
    """The paper's row text of ``method``: its ``paper_row`` in Table 1, the transcription's elsewhere."""
    rows = [r["label"] for r in paper_tables_data()["rows"] if r["table"] == table and r["method"] == method]
    return get_editor(method).paper_row if table == "table1" or not rows else rows[0]


def chunked(method: str) -> dict[str, Any] | None:
    """The cell parameters of a paper row that ran in chunks (the editor's ``paper_run``), else ``None``.

    As the official runs did: MEMIT (MEMIT-Chunked: the batch edit on one chunk after another, no cache
    of earlier chunks) and UltraEdit in sequential batches of 32 edits, AlphaEdit of 100, FT Sequential
    and LoRA Sequential in chunks of 100 (LoRA Sequential: 70 epochs per chunk, lr 5e-3, fresh adapters
    for every chunk), MEND (MEND-Seq) one edit at a time in float32 with its editor network trained on
    ZsRE.
    """
    run = get_editor(method).paper_run
    if "chunk_size" not in run:
        return None
    keys = {"chunk_size": "CHUNK_SIZE", "epochs": "EPOCHS", "config": "CONFIG"}
    return {param: run[key] for key, param in keys.items() if key in run}
BEGIN, END = "<!-- cells:begin (written by reproduce/make_configs.py) -->", "<!-- cells:end -->"

# Throughputs behind the estimates (one H100/H200-class GPU, bf16; not measured here; an A100 takes
# about twice as long).
KFAC_TOKENS_PER_S = {LLAMA: 6_000, QWEN: 30_000}  # forward + backward with K-FAC hooks
EVAL_MIN_PER_1K_EDITS = {LLAMA: 10, QWEN: 3}  # WILD greedy generation, 3 contexts, + teacher-forced
LM_EVAL_MIN = {LLAMA: 45, QWEN: 15}  # five tasks, limit 200 (MMLU: 200 per sub-task)
EDIT_SCALE = {LLAMA: 1.0, QWEN: 0.3}  # vs the paper's LLaMA-3-8B Table 1 times


def _minutes(m: float) -> str:
    return f"{m / 60:.1f} h" if m >= 90 else f"{max(1, round(m))} min"


def estimate(model: str, method: str, dataset: str, n_edits: int, n_capability: int) -> tuple[str, str]:
    """``(memory, time)`` lines for a header: rough estimates, not measurements.

    Time = K-FAC over ``n_capability`` x 512 tokens (methods that read capability text) + the paper's
    Table 1 editing time of the method on the dataset (scaled by ``n_edits / 3000``, and by 0.3 for
    Qwen-2.5-1.5B) + WILD/teacher-forced evaluation + lm-eval. Memory: weights (bf16 2 bytes per
    parameter, fp32 4), plus fp32 K-FAC factors and eigenbases of the edited ``down_proj`` layers.
    """
    big = model == LLAMA
    shape = down_proj_shape(model)
    n_layers, d_in, d_out = len(LAYERS[model]), shape.d_in, shape.d_out
    dtype = paper_dtype(method)
    weights = (16 if big else 3.1) * (2 if dtype == "float32" else 1)
    caches = 2 * 4 * n_layers * (d_in**2 + d_out**2) / 1e9 if method in CAPABILITY else 0.0
    peak = weights + caches + (6 if big else 2)
    gpu = "one 80 GB GPU" if peak > 36 else ("one 40-48 GB GPU" if big else "one 16-24 GB GPU")
    short = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}[dtype]
    memory = (f"~{peak:.0f} GB peak (weights {weights:.0f} GB {short}"
              + (f" + K-FAC factors/eigenbases {caches:.0f} GB" if caches else "")
              + f" + training); {gpu}; lm-eval batch 'auto' may use more")
    kfac = n_capability * 512 / KFAC_TOKENS_PER_S[model] / 60 if method in CAPABILITY else 0.0
    edit = paper_value(1, dataset, method, "time") / 60 * n_edits / 3000 * EDIT_SCALE[model]
    evaluation = EVAL_MIN_PER_1K_EDITS[model] * n_edits / 1000 + LM_EVAL_MIN[model]
    time = (f"K-FAC ~{_minutes(kfac)} + edit ~{_minutes(edit)} + evaluation ~{_minutes(evaluation)}"
            f" = ~{_minutes(kfac + edit + evaluation)}" if kfac else
            f"edit ~{_minutes(edit)} + evaluation ~{_minutes(evaluation)} = ~{_minutes(edit + evaluation)}")
    return memory, time


def cell(name: str, regenerates: str, *, model: str, dataset: str, method: str, gamma: float,
         n_capability: int, n_edits: int = 3000, data_path: str | None = None,
         same_as: str | None = None, sequential: bool | None = None,
         extra: dict[str, Any] | None = None) -> tuple[str, str]:
    """``(file name, yaml text)`` of one cell group."""
    seq = get_editor(method).sequential if sequential is None else sequential
    params: dict[str, Any] = {
        "MODEL": model, "DATASET": dataset, "DATA_PATH": data_path or DATA[dataset], "N_EDITS": n_edits,
        "METHOD": method, "GAMMA": gamma, "N_CAPABILITY": n_capability,
        "LAYERS": None if get_editor(method).presets else LAYERS[model],  # presets: its own layers
        "SEQUENTIAL": seq, "CHUNK_SIZE": 100, "JUDGE": True, "RUN_LM_EVAL": True,
        "RESULTS_DIR": f"results/{name}", "SEED": 0, "DEVICE": "cuda",
        "DTYPE": paper_dtype(method), "EPOCHS": 25, "BATCH_SIZE": 32,
        "CONFIG": {},
    }
    params.update(extra or {})
    memory, time = estimate(model, method, dataset, n_edits, n_capability)
    differs = get_editor(method).paper_run.get("differs")
    nb = NB[model]
    header = [
        f"# {name}: papermill parameters for {nb}",
        f"# Regenerates: {regenerates}",
        *([f"# Same settings as {same_as}: one run (either file) fills both cells."] if same_as else []),
        f"# Run:  papermill {nb} results/{name}.ipynb -f reproduce/{name}.yaml",
        f"#  or:  python -m crispedit_lite reproduce {name}",
        f"# Data: {params['DATA_PATH']} (official CrispEdit repo, data/; see reproduce/README.md)",
        f"# Precision: {params['DTYPE']}, the precision of the official run of this row (registry: "
        "paper_run['dtype'])",
        *([f"# Differs from the paper's run: {differs}"] if differs else []),
        "# Judge: JUDGE true scores WILD with gpt-4o-mini and needs OPENAI_API_KEY (paper setting).",
        f"# GPU memory (estimate): {memory}",
        f"# Time (estimate, one H100/H200-class GPU; an A100 about 2x): {time}",
        "# Written by reproduce/make_configs.py; edit that script, not this file.",
    ]
    body = "\n".join(f"{k}: {_yaml(v)}" for k, v in params.items())
    return f"{name}.yaml", "\n".join(header) + "\n" + body + "\n"


def _yaml(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, dict):  # flow style; {} for an empty mapping
        return "{" + ", ".join(f"{k}: {_yaml(x)}" for k, x in v.items()) + "}"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list):
        return "[" + ", ".join(str(x) for x in v) + "]"
    if isinstance(v, str):
        return f'"{v}"'
    return str(v)


def _paper_nd(model: str, method: str, dataset: str) -> tuple[int, float]:
    """CrispEdit's (n, gamma) of Tables 1/5; baselines reuse the dataset's CrispEdit values."""
    if model == QWEN:
        if method == "crispedit_seq":
            return 30, 0.995
        n, g = 1000, (0.7 if dataset == "zsre" else 0.9)
    elif method == "crispedit_seq":
        return (200, 0.995) if dataset == "wikibigedit" else (30, 0.999)
    else:
        n, g = 10_000, (0.7 if dataset == "zsre" else 0.9)
    return (10_000 if method == "adam_nscl" else n), g  # the paper's Adam-NSCL run: 10,000 texts


def cells() -> list[tuple[str, str]]:
    """Every cell group: Tables 1 (and 3), 4, 5, 7, 8."""
    out = []
    table1 = [n for n, e in registry().items() if e.paper_row]  # the rows of Table 1
    for ds in DATASETS:
        for method in table1:
            n, g = _paper_nd(LLAMA, method, ds)
            extra = chunked(method)
            if extra:
                form, size = get_editor(sequential_form(method)).label, extra["CHUNK_SIZE"]
                steps = "one edit at a time" if size == 1 else f"in chunks of {size} edits"
                chunks = f"{form}, {steps}, as the paper's run"
                what = f"Table 1, {LABEL[ds]}, {row_label(method)} row ({chunks}); Table 3, same row"
                out.append(cell(f"table1_{ds}_{method}", what, model=LLAMA, dataset=ds, method=method,
                                gamma=g, n_capability=n, sequential=True, extra=extra))
                continue
            what = f"Table 1, {LABEL[ds]}, {row_label(method)} row; Table 3 (teacher-forced), same row"
            if method == "crispedit":
                what += f"; Table 8, {LABEL[ds]}, gamma = {g}"
            if method == "ft" and ds == "zsre":
                what += "; Table 7, n = 0 (no projection)"
            out.append(cell(f"table1_{ds}_{method}", what, model=LLAMA, dataset=ds, method=method,
                            gamma=g, n_capability=n))
    for method in ("crispedit", "locbf_ft", "adam_nscl", "alphaedit", "ultraedit"):
        n, g = (1000, 0.7) if method != "adam_nscl" else (10_000, 0.7)
        extra = chunked(method)
        out.append(cell(f"table4_zsre10k_{method}",
                        f"Table 4 (10,000 ZsRE edits), {row_label(method, 'table4')} row",
                        model=LLAMA, dataset="zsre", method=method, gamma=g, n_capability=n,
                        n_edits=10_000, data_path=ZSRE_10K, sequential=True if extra else None, extra=extra))
    for ds in DATASETS:
        for method in ("crispedit", "crispedit_seq", "ft", "locbf_ft", "adam_nscl", "alphaedit",
                       "ultraedit"):
            n, g = _paper_nd(QWEN, method, ds)
            what = f"Table 5 (Qwen-2.5-1.5B), {LABEL[ds]}, {row_label(method, 'table5')} row"
            extra = chunked(method)
            out.append(cell(f"table5_qwen_{ds}_{method}", what, model=QWEN, dataset=ds, method=method,
                            gamma=g, n_capability=n, sequential=True if extra else None, extra=extra))
    for n in (10, 50, 100, 500, 1000, 10_000, 50_000, 100_000):
        same = "table8_zsre_gamma0.9" if n == 10_000 else None
        out.append(cell(f"table7_n{n}", f"Table 7 (capability-set size, ZsRE, gamma = 0.9), n = {n:,} row",
                        model=LLAMA, dataset="zsre", method="crispedit", gamma=0.9, n_capability=n,
                        same_as=same))
    for ds in DATASETS:
        best = 0.7 if ds == "zsre" else 0.9
        for g in (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99):
            same = f"table1_{ds}_crispedit" if g == best else ("table7_n10000" if ds == "zsre" and g == 0.9
                                                                else None)
            what = f"Table 8 (energy threshold), {LABEL[ds]}, gamma = {g} row"
            out.append(cell(f"table8_{ds}_gamma{g}", what, model=LLAMA, dataset=ds, method="crispedit",
                            gamma=g, n_capability=10_000, same_as=same))
    return out


def readme_index() -> str:
    """The README's cell index: one line per yaml file with what it regenerates."""
    lines = [BEGIN, "", "| cell (`reproduce/<cell>.yaml`) | regenerates | time (estimate) |", "|---|---|---|"]
    for name, text in cells():
        head = dict(ln[2:].split(": ", 1) for ln in text.splitlines() if ln.startswith("# ") and ": " in ln)
        total = head["Time (estimate, one H100/H200-class GPU; an A100 about 2x)"].rsplit("= ", 1)[-1]
        lines.append(f"| `{name[:-5]}` | {head['Regenerates']} | {total} |")
    return "\n".join([*lines, "", END])


def paper_cells_json() -> str:
    """``crispedit_lite/resources/paper_cells.json``: each cell's parameters, one cell per line."""
    import yaml

    rows = [f"  {json.dumps(name[:-5])}: {json.dumps(yaml.safe_load(text))}" for name, text in cells()]
    head = '{"written_by": "reproduce/make_configs.py (the same parameters as reproduce/<cell>.yaml)",\n'
    return head + ' "cells": {\n' + ",\n".join(rows) + "\n }\n}\n"


def _with_index(readme: str) -> str:
    if BEGIN not in readme or END not in readme:
        raise ValueError(f"reproduce/README.md lacks the markers {BEGIN!r} ... {END!r}")
    return readme[: readme.index(BEGIN)] + readme_index() + readme[readme.index(END) + len(END):]


def main(argv: list[str] | None = None) -> int:
    """Write (or with ``--check`` compare) the yaml files, the README index and the package's index."""
    args = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    args.add_argument("--check", action="store_true", help="compare only; exit 1 on a difference")
    check = args.parse_args(argv).check
    wanted = dict(cells())
    readme = HERE / "README.md"
    wanted_readme = _with_index(readme.read_text())
    stale = sorted(p.name for p in HERE.glob("*.yaml") if p.name not in wanted)
    differ = [n for n, t in wanted.items() if not (HERE / n).exists() or (HERE / n).read_text() != t]
    differ += ["README.md"] if readme.read_text() != wanted_readme else []
    wanted_index = paper_cells_json()
    if not INDEX.exists() or INDEX.read_text() != wanted_index:
        differ.append(str(INDEX.relative_to(ROOT)))
    if check:
        for name in differ + stale:
            print(f"out of date: {name if '/' in name else 'reproduce/' + name}")
        return 1 if differ or stale else 0
    for name in stale:
        (HERE / name).unlink()
    for name, text in wanted.items():
        (HERE / name).write_text(text)
    readme.write_text(wanted_readme)
    INDEX.write_text(wanted_index)
    print(f"wrote {len(wanted)} yaml files, the README index and {INDEX.relative_to(ROOT)}; "
          f"removed {len(stale)} stale files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
