r"""The paper's capability-set sizes and energy thresholds, by model, method and dataset.

:func:`~crispedit_lite.editing.config.paper_config` reads them; the command line's ``--preset paper``
also records which entry it used (:func:`paper_values`). Sources: CrispEdit Table 2 / App. E
(LLaMA-3-8B-Instruct, Table 1), Table 4 (10,000 ZsRE edits) and Table 5 (Qwen-2.5-1.5B-Instruct).

Derived in notebook ``06_crispedit_on_a_small_lm``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["PAPER_DATASET_NAMES", "PAPER_PRESETS", "paper_dataset", "paper_model", "paper_values"]

#: The paper's capability-set sizes and energy thresholds :math:`(n, \gamma)`, by model, kind of method
#: (``"batch"``: every method but CrispEdit-Seq, ``"seq"``: CrispEdit-Seq) and dataset. LLaMA-3-8B:
#: Table 2 / App. E (Table 1) and Table 4 (``zsre10k``: 10,000 ZsRE edits, n = 1,000); Qwen-2.5-1.5B:
#: Table 5 (n = 1,000; CrispEdit-Seq (30, 0.995) on every dataset).
PAPER_PRESETS: dict[str, dict[str, dict[str, tuple[int, float]]]] = {
    "llama3-8b": {
        "batch": {"zsre": (10_000, 0.7), "zsre10k": (1_000, 0.7), "counterfact": (10_000, 0.9),
                  "wikibigedit": (10_000, 0.9)},
        "seq": {"zsre": (30, 0.999), "zsre10k": (30, 0.999), "counterfact": (30, 0.999),
                "wikibigedit": (200, 0.995)},
    },
    "qwen2.5-1.5b": {
        "batch": {"zsre": (1_000, 0.7), "zsre10k": (1_000, 0.7), "counterfact": (1_000, 0.9),
                  "wikibigedit": (1_000, 0.9)},
        "seq": {d: (30, 0.995) for d in ("zsre", "zsre10k", "counterfact", "wikibigedit")},
    },
}

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

    Derived in notebook ``06_crispedit_on_a_small_lm``.
    """
    return PAPER_DATASET_NAMES.get(_squash(name)) if name else None


def paper_model(model: str | None) -> str | None:
    """``"llama3-8b"`` or ``"qwen2.5-1.5b"`` when ``model`` names (or has the shape of) a paper model.

    Hub ids, local folder names and ``random:<shape>`` names are matched without case and
    punctuation (``Qwen/Qwen2.5-1.5B-Instruct``, ``random:qwen2.5-1.5b-shape``); else ``None``.
    Derived in notebook ``06_crispedit_on_a_small_lm``.
    """
    key = _squash(model or "")
    if "qwen2515b" in key:
        return "qwen2.5-1.5b"
    if "llama38b" in key:
        return "llama3-8b"
    return None


def paper_values(method: str, dataset: str, model: str | None = None) -> dict[str, Any]:
    r"""The paper's :math:`(n, \gamma)` for ``method`` on ``dataset`` with ``model``, and where from.

    Returns ``{"n_capability", "gamma", "dataset", "model_family", "model_basis"}``; a model that is
    not one of the paper's gets LLaMA-3-8B's values (the main tables), and ``model_basis`` says so.
    Derived in notebook ``06_crispedit_on_a_small_lm``.
    """
    ds = paper_dataset(dataset)
    if ds is None:
        raise ValueError(f"dataset must be one of {sorted(PAPER_DATASET_NAMES)} (the official code's "
                         f"names included), got {dataset!r}")
    family = paper_model(model)
    basis = (f"model {model!r} is {family}" if family else
             f"model {model!r} is not one of the paper's; LLaMA-3-8B's values (Table 1)")
    kind = "seq" if method == "crispedit_seq" else "batch"
    n, gamma = PAPER_PRESETS[family or "llama3-8b"][kind][ds]
    return {"n_capability": n, "gamma": gamma, "dataset": ds, "model_family": family or "llama3-8b",
            "model_basis": basis}
