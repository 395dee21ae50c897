r"""Checks of a run that need only its settings, its edit records, the tokenizer and the model's config.

:func:`preflight` runs before :func:`~crispedit_lite.reproduction.experiment.run_experiment` loads any
weights, so that a mistake costs a second and a refused run writes nothing (no results, no cache
entry, no lock). It refuses

* settings that cannot train: a non-finite or non-positive learning rate, repeated layers, a seed
  outside :math:`[0, 2^{32})`, capability texts shorter than two tokens (no next-token target), a
  dtype the device cannot train in (float16 on a CPU), the meta device;
* a device map naming a device this machine does not have, or a module the model does not have;
* edited layers out of range and module patterns that match nothing, found on the model's skeleton
  (its modules on the meta device), exactly as :func:`~crispedit_lite.editing.edit` resolves them
  after loading, and edit records the method cannot use: none at all, a subject missing from its
  prompt (MEMIT-style editors locate the subject's last token), or a prompt with its answer longer
  than the model's context; a MEND editor file that is missing, differs from its pinned digest or was
  trained for other matrices (:mod:`crispedit_lite.reproduction.preflight_model`);
* sources that need a network while Hugging Face's offline mode is set (Wikipedia capability text,
  lm-eval's task data), and output folders that cannot be written (probed with a temporary file,
  which also catches read-only and pseudo file systems).

Each refusal is a :class:`SettingError` naming the setting and what was expected.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from crispedit_lite.reproduction.setting_error import SettingError

__all__ = ["MAX_SEED", "SettingError", "check_cache_dir", "check_data_source", "check_device",
           "check_map_modules", "check_outputs", "check_settings", "check_sources", "hf_offline", "preflight"]

#: Seeds are used by ``torch.manual_seed``, ``random.Random`` and NumPy: ``0 <= seed < 2**32``.
MAX_SEED = 2**32 - 1
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+=-]{0,199}$")
# Hugging Face dataset repositories of lm-eval's paper tasks (evaluation.harness.PAPER_TASKS).
_LM_EVAL_DATASETS = ("cais/mmlu", "openai/gsm8k", "google/IFEval", "allenai/ai2_arc",
                     "truthfulqa/truthful_qa")


def hf_offline() -> bool:
    """Whether Hugging Face's offline mode is set (``HF_HUB_OFFLINE`` or ``HF_DATASETS_OFFLINE``).

    Listed on the book page ``api``.
    """
    return any(os.environ.get(v, "0").strip().lower() not in ("0", "", "false", "no", "off")
               for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def _dataset_cached(repo: str) -> bool:
    """Whether dataset ``owner/name`` is in the local Hugging Face caches (hub or datasets)."""
    try:
        from huggingface_hub.constants import HF_HUB_CACHE
    except ImportError:  # pragma: no cover
        return False
    roots = [Path(HF_HUB_CACHE) / f"datasets--{repo.replace('/', '--')}"]
    try:
        import datasets

        roots.append(Path(datasets.config.HF_DATASETS_CACHE) / repo.replace("/", "___"))
    except (ImportError, AttributeError):  # pragma: no cover
        pass
    return any(r.is_dir() for r in roots)


def check_settings(config: Any) -> None:
    """Learning rate, layers, seed and capability text length of an ``EditConfig``.

    Listed on the book page ``api``.
    """
    if not (isinstance(config.lr, (int, float)) and math.isfinite(config.lr) and config.lr > 0):
        raise SettingError("lr", f"the learning rate must be a finite positive number, got {config.lr}")
    if config.layers is not None:
        seen = [i for n, i in enumerate(config.layers) if i in config.layers[:n]]
        if seen:
            raise SettingError("layers", f"layer {seen[0]} is given twice in {list(config.layers)}; each "
                               "edited layer once (a repeated layer would be stepped twice per step)")
        if any(i < 0 for i in config.layers):
            raise SettingError("layers", f"layer indices are >= 0, got {list(config.layers)}")
    if not 0 <= int(config.seed) <= MAX_SEED:
        raise SettingError("seed", f"expected an integer in [0, 2**32 - 1], got {config.seed}")
    if config.capability_max_length < 2:
        raise SettingError("capability_max_length", "a capability text needs at least 2 tokens (one "
                           f"input, one next-token target), got {config.capability_max_length}")


def check_device(device: str, dtype: str, device_map: str | Mapping[str, Any] | None = None) -> None:
    """The device exists and can train in ``dtype``; the device map names devices this machine has.

    Listed on the book page ``api``.
    """
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise SettingError("device", f"{device!r} is not a device; expected cpu, cuda or cuda:N") from None
    if dev.type == "meta":
        raise SettingError("device", "the meta device holds no weights and cannot train; expected cpu, "
                           "cuda or cuda:N")
    _available(dev, "device")
    if dtype == "float16" and dev.type == "cpu" and device_map is None:
        raise SettingError("dtype", "float16 cannot train on a CPU (its gradients underflow and the "
                           "model turns to NaN); use float32 or bfloat16 on a CPU, float16 on a GPU")
    for key, value in (device_map.items() if isinstance(device_map, Mapping) else ()):
        where = f"entry {key!r}: {value!r}"
        mapped = None
        if isinstance(value, int) and not isinstance(value, bool):
            mapped = f"cuda:{value}"
        elif isinstance(value, str) and value != "disk":
            mapped = value
        elif value != "disk":
            raise SettingError("device_map", f"{where} is not a device (a GPU index, 'cpu', 'disk' or "
                               "'cuda:N')")
        if mapped is not None:
            try:
                _available(torch.device(mapped), "device_map", where)
            except (RuntimeError, TypeError):
                raise SettingError("device_map", f"{where} is not a device (a GPU index, 'cpu', 'disk' "
                                   "or 'cuda:N')") from None


def check_map_modules(device_map: str | Mapping[str, Any] | None, names: Sequence[str]) -> None:
    """Every key of a device map is a module of the model (``""``: the whole model).

    Listed on the book page ``api``.
    """
    if not isinstance(device_map, Mapping) or not names:
        return
    for key in device_map:
        if key and not any(n == key or n.startswith(key + ".") for n in names):
            top = sorted({n.split(".")[0] for n in names if n})
            raise SettingError("device_map", f"entry {key!r} names no module of the model (its top-level "
                               f"modules: {', '.join(top)})")


def _available(dev: Any, setting: str, where: str | None = None) -> None:
    import torch

    what = where or repr(str(dev))
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise SettingError(setting, f"{what} asks for a GPU, but CUDA is not available here")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise SettingError(setting, f"{what}, but this machine has {torch.cuda.device_count()} GPU(s)")
    elif dev.type not in ("cpu", "cuda", "mps", "xpu", "meta"):
        raise SettingError(setting, f"{what} is not a device this package runs on (cpu, cuda:N)")


def _probe(folder: str | os.PathLike, setting: str) -> None:
    """The nearest existing folder of ``folder`` takes a new file (created and removed at once)."""
    p = Path(folder).expanduser()
    if p.exists() and not p.is_dir():
        raise SettingError(setting, f"{str(folder)!r} is a file; expected a folder (existing or new)")
    parent = p
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise SettingError(setting, f"{str(parent)!r} is a file, so folder {str(folder)!r} cannot be made")
    try:
        fd, name = tempfile.mkstemp(dir=parent, prefix=".crispedit-probe-")
        os.close(fd)
        os.unlink(name)
    except OSError as err:
        raise SettingError(setting, f"{str(parent)!r} cannot be written ({err.strerror}), so nothing can "
                           f"be written to {str(folder)!r}") from None


def check_outputs(results_dir: str | os.PathLike, run_id: str | None = None, save_model: str | None = None,
                  cache_dir: str | os.PathLike | None = None) -> None:
    """Where the run writes: a writable results folder, a plain new run id, a new model folder.

    A cache folder may be read-only when it already holds the entry the run needs (checked when the
    entry is looked up); here it must only be a folder, or a path where one can be made.

    Listed on the book page ``api``.
    """
    _probe(results_dir, "results_dir")
    if run_id is not None:
        if not _RUN_ID.match(run_id):
            raise SettingError("run_id", f"{run_id[:60]!r}{'...' if len(run_id) > 60 else ''} must be a "
                               "plain file name of 1 to 200 letters, digits and . _ + = - (not starting "
                               "with . or -)")
        if (Path(results_dir).expanduser() / f"{run_id}.json").exists():
            raise SettingError("run_id", f"{Path(results_dir) / f'{run_id}.json'} exists; results are never "
                               "overwritten (choose another run_id)")
    if save_model and Path(save_model).expanduser().exists():
        raise SettingError("save_model", f"{save_model!r} exists; the edited model goes to a new folder")
    if cache_dir is not None:
        check_cache_dir(cache_dir)


def check_cache_dir(cache_dir: str | os.PathLike) -> None:
    """A cache folder: an existing folder (read-only is fine when it holds the entries), or makeable.

    Listed on the book page ``api``.
    """
    c = Path(cache_dir).expanduser()
    if c.exists() and not c.is_dir():
        raise SettingError("cache_dir", f"{str(cache_dir)!r} is a file; expected a folder")
    if not c.exists():
        _probe(c, "cache_dir")


def check_sources(capability_source: str | None, evals: Sequence[str] = ()) -> None:
    """Sources that need a network are refused in Hugging Face's offline mode, unless cached.

    Listed on the book page ``api``.
    """
    if not hf_offline():
        return
    if capability_source == "wikipedia":
        raise SettingError("capability_source", "Wikipedia is streamed from the Hugging Face hub, but "
                           "offline mode is set (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE); use the offline "
                           "stand-in (capability_source 'offline') or go online")
    if "lm_eval" in evals:
        missing = [d for d in _LM_EVAL_DATASETS if not _dataset_cached(d)]
        if missing:
            raise SettingError("evals", f"lm_eval downloads its task data ({', '.join(missing)}) from the "
                               "Hugging Face hub, but offline mode is set and they are not cached; drop "
                               "lm_eval or go online once to cache them")


def check_data_source(data: str) -> None:
    """An ``hf:owner/name`` edit set needs the network unless it is cached.

    Listed on the book page ``api``.
    """
    if str(data).startswith("hf:") and hf_offline() and not _dataset_cached(str(data)[3:]):
        raise SettingError("data", f"{data!r} is a Hugging Face dataset that is not in the local cache, "
                           "and offline mode is set; download it once online, or pass a local JSON file")


def preflight(config: Any, *, model: str, tokenizer: str | None, requests: Sequence[Any], device: str,
              dtype: str, device_map: str | Mapping[str, Any] | None, evals: Sequence[str],
              results_dir: str | os.PathLike, run_id: str | None = None, save_model: str | None = None,
              cache_dir: str | os.PathLike | None = None, capability: bool = True) -> dict[str, Any]:
    """Every check of this module and :mod:`~crispedit_lite.reproduction.preflight_model`, cheapest first.

    Returns :func:`~crispedit_lite.reproduction.preflight_model.check_structure`'s answer.

    ``capability``: the method reads capability text (its source must then be reachable).

    Listed on the book page ``api``.
    """
    check_settings(config)
    if not requests:
        raise SettingError("data", "no edit records: the data holds none (expected at least one)")
    check_device(device, dtype, device_map)
    check_outputs(results_dir, run_id, save_model, cache_dir)
    check_sources(config.capability_source if capability else None, evals)
    from crispedit_lite.reproduction.preflight_model import check_structure

    info = check_structure(config, model, tokenizer, requests)
    check_map_modules(device_map, info.get("names", ()))
    return info
