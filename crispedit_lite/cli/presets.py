r"""Which of the paper's presets a run gets: the dataset from its name, its file name or its records.

``--preset paper`` needs the paper's dataset (CrispEdit Table 2 / App. E: :math:`\gamma` = 0.7 on ZsRE,
0.9 on CounterFact and WikiBigEdit; CrispEdit-Seq's n and :math:`\gamma` differ between CounterFact
and WikiBigEdit). :func:`paper_dataset_for` decides it, in this order:

1. ``--dataset-name``, when it is one of :data:`~crispedit_lite.editing.paper_presets.PAPER_DATASET_NAMES`
   (the official code's ``--data_type`` names ``zsre``, ``zsre10k``, ``counterfact``, ``wiki``
   included);
2. the name of the data source (``counterfact-edit_3k.json``, ``wiki_big_edit_3k.json``,
   ``zsre_mend_eval_3k.json``, ``smollm2-counterfacts``);
3. the record format (:func:`crispedit_lite.data.parse_records`' detection): MEND ZsRE is ZsRE, ROME's
   CounterFact is CounterFact, upstream WikiBigEdit is WikiBigEdit. The official 3k CounterFact and
   WikiBigEdit files share their fields, so that format decides only when both datasets give the
   method the same :math:`(n, \gamma)`.

A name or file that contradicts the records' format, and a case nothing decides, are errors.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from crispedit_lite.cli.checks import UsageError
from crispedit_lite.editing.paper_presets import PAPER_DATASET_NAMES, paper_dataset, paper_values

__all__ = ["paper_dataset_for", "record_format"]

# record format -> the preset datasets it can be
_FORMAT_DATASETS = {"zsre": ("zsre",), "rome": ("counterfact",),
                    "wikibigedit-upstream": ("wikibigedit",),
                    "counterfact": ("counterfact", "wikibigedit")}


def record_format(records: Sequence[Any]) -> str | None:
    """The format of the records (all must agree), or ``None`` when it cannot be told.

    Listed on the book page ``api``.
    """
    from crispedit_lite.data.edits import _detect

    found = set()
    for i, rec in enumerate(records):
        try:
            found.add(_detect(rec, i))
        except ValueError:
            return None
    return found.pop() if len(found) == 1 else None


def _from_source(data: str) -> str | None:
    """The preset dataset a data source's name points to (``wiki_big_edit_3k.json`` -> wikibigedit)."""
    stem = re.sub(r"[^a-z0-9]", "", Path(str(data)).name.lower().split(".json")[0])
    hits = {d for key, d in PAPER_DATASET_NAMES.items() if len(key) > 3 and key in stem}
    if "zsre" in hits and "10k" in stem:
        hits = {"zsre10k"}
    return hits.pop() if len(hits) == 1 else None


def paper_dataset_for(method: str, model: str, dataset_name: str | None, data: str,
                      records: Sequence[Any], data_format: str = "auto") -> dict[str, Any]:
    """The preset's dataset and how it was decided; ``{"dataset", "decided_by", ...paper_values}``.

    ``data_format`` (``--format``) other than ``"auto"`` stands for the detected record format.
    Raises :class:`~crispedit_lite.cli.checks.UsageError` when the name, the file and the records
    disagree or nothing decides.

    Listed on the book page ``api``.
    """
    fmt = record_format(records) if data_format == "auto" else \
        {"wikibigedit": "wikibigedit-upstream"}.get(data_format, data_format)
    allowed = _FORMAT_DATASETS.get(fmt or "", ())
    by_name, by_source = paper_dataset(dataset_name), _from_source(data)
    for found, how in ((by_name, f"--dataset-name {dataset_name!r}"), (by_source, f"data source {data!r}")):
        if found is None:
            continue
        base = "zsre" if found == "zsre10k" else found
        if fmt is not None and base not in allowed:
            raise UsageError(f"argument --dataset-name: {how} means the {found} preset, but the records of "
                             f"{data!r} are in the {fmt} format; pass the right --dataset-name or file")
        return {**paper_values(method, found, model), "decided_by": how}
    if allowed:
        values = [paper_values(method, d, model) for d in allowed]
        if len({(v["n_capability"], v["gamma"]) for v in values}) == 1:
            note = "" if len(allowed) == 1 else \
                f" (shared by {' and '.join(allowed)}, whose presets agree for {method})"
            return {**values[0], "decided_by": f"record format {fmt!r}{note}"}
        raise UsageError(f"argument --dataset-name: the records of {data!r} have the fields of both "
                         f"{' and '.join(allowed)}, whose paper presets differ for {method}; pass "
                         "--dataset-name counterfact or --dataset-name wiki")
    named = f"--dataset-name {dataset_name!r} is none of {sorted(PAPER_DATASET_NAMES)} and " \
        if dataset_name else "no --dataset-name was given and "
    raise UsageError(f"argument --preset paper: {named}the format of {data!r} cannot be told from its "
                     "records, so the paper's gamma and n are unknown; pass --dataset-name "
                     "zsre, counterfact or wiki (or --preset none with --gamma and --n-capability)")
