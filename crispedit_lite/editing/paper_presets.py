r"""The paper's capability-set sizes and energy thresholds, by model, method and dataset.

Each editor declares its :math:`(n, \gamma)` in the registry (``Editor.paper_n_gamma``: CrispEdit's in
:mod:`crispedit_lite.editing.editors.crispedit`, CrispEdit-Seq's in
:mod:`crispedit_lite.editing.editors.crispedit_seq`); a method without values of its own is run with
CrispEdit's. :func:`~crispedit_lite.editing.config.paper_config` reads them through
:func:`paper_values`, and the command line's ``--preset paper`` also records which entry it used.
Sources: CrispEdit Table 2 / App. E (LLaMA-3-8B-Instruct, Table 1), Table 4 (10,000 ZsRE edits) and
Table 5 (Qwen-2.5-1.5B-Instruct).
"""

from __future__ import annotations

from typing import Any

__all__ = ["DEFAULT_VALUES_FROM", "PAPER_DATASET_NAMES", "paper_dataset", "paper_model", "paper_values"]

#: The editor whose :math:`(n, \gamma)` a method without values of its own is run with: the paper runs
#: its baselines on CrispEdit's capability set (App. E).
DEFAULT_VALUES_FROM = "crispedit"

#: Dataset names accepted by the presets: this project's and the official code's ``--data_type``
#: names (``zsre``, ``zsre10k``, ``counterfact``, ``wiki``), compared without case and punctuation.
PAPER_DATASET_NAMES: dict[str, str] = {
    "zsre": "zsre", "zsre10k": "zsre10k", "counterfact": "counterfact", "cf": "counterfact",
    "mcf": "counterfact", "multicounterfact": "counterfact", "wiki": "wikibigedit",
    "wikibigedit": "wikibigedit",
}


def _squash(text: str) -> str:
    return "".join(ch for ch in text.lower() if ch.isalnum())


def paper_dataset(name: str | None) -> str | None:
    """The preset dataset a name stands for (:data:`PAPER_DATASET_NAMES`), or ``None`` if none.

    Listed on the book page ``api``.
    """
    return PAPER_DATASET_NAMES.get(_squash(name)) if name else None


def paper_model(model: str | None) -> str | None:
    """``"llama3-8b"`` or ``"qwen2.5-1.5b"`` when ``model`` names (or has the shape of) a paper model.

    Hub ids, local folder names and ``random:<shape>`` names are matched without case and
    punctuation (``Qwen/Qwen2.5-1.5B-Instruct``, ``random:qwen2.5-1.5b-shape``); else ``None``.
    Derived in notebook ``09_reproduce_llama3_8b``.
    """
    key = _squash(model or "")
    if "qwen2515b" in key:
        return "qwen2.5-1.5b"
    if "llama38b" in key:
        return "llama3-8b"
    return None


def paper_values(method: str, dataset: str, model: str | None = None) -> dict[str, Any]:
    r"""The paper's :math:`(n, \gamma)` for ``method`` on ``dataset`` with ``model``, and where from.

    The values are the editor's ``paper_n_gamma`` (else :data:`DEFAULT_VALUES_FROM`'s). Returns
    ``{"n_capability", "gamma", "dataset", "model_family", "model_basis"}``; a model that is not one
    of the paper's gets LLaMA-3-8B's values (the main tables), and ``model_basis`` says so.

    Listed on the book page ``api``.
    """
    ds = paper_dataset(dataset)
    if ds is None:
        raise ValueError(f"dataset must be one of {sorted(PAPER_DATASET_NAMES)} (the official code's "
                         f"names included), got {dataset!r}")
    family = paper_model(model)
    basis = (f"model {model!r} is {family}" if family else
             f"model {model!r} is not one of the paper's; LLaMA-3-8B's values (Table 1)")
    from crispedit_lite.editing.registry import get_editor

    editor = get_editor(method)
    owner = editor if editor.paper_n_gamma else get_editor(DEFAULT_VALUES_FROM)
    entry = owner.paper_n_gamma.get(family or "llama3-8b", {}).get(ds)
    if entry is None:
        raise ValueError(f"method {method!r}: editor {owner.name!r} declares no paper (n, gamma) for "
                         f"{family or 'llama3-8b'} on {ds}")
    n, gamma = entry
    return {"n_capability": n, "gamma": gamma, "dataset": ds, "model_family": family or "llama3-8b",
            "model_basis": basis}
