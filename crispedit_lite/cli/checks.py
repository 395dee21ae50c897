r"""Checks of command-line arguments that run before any model is loaded.

Each check returns the parsed value or raises :class:`UsageError` naming the argument and what was
expected; :func:`crispedit_lite.cli.main` prints it as one line and exits with status 2.

Derived in notebook ``06_crispedit_on_a_small_lm``.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["UsageError", "device", "device_map", "evals", "gamma", "layers", "method", "model",
           "positive", "seed", "settings", "tokenizer"]

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")


class UsageError(ValueError):
    """A mistake in the command line: printed as ``error: <message>``, exit status 2.

    Listed on the book page ``api``.
    """


def gamma(value: float | None, arg: str = "--gamma") -> float | None:
    r"""An energy threshold :math:`\gamma \in (0, 1]` (CrispEdit eq. 8), or ``None``.

    Described on the book page ``running``.
    """
    if value is not None and not 0 < value <= 1:
        raise UsageError(f"argument {arg}: the energy threshold must lie in (0, 1], got {value}")
    return value


def positive(value: float | None, arg: str) -> Any:
    """A finite positive number, or ``None``.

    Described on the book page ``running``.
    """
    if value is not None and not (value > 0 and math.isfinite(value)):
        raise UsageError(f"argument {arg}: expected a finite positive number, got {value}")
    return value


def seed(value: int) -> int:
    """A seed in :math:`[0, 2^{32})` (``torch``, ``random`` and NumPy all accept it).

    Described on the book page ``running``.
    """
    from crispedit_lite.reproduction.preflight import MAX_SEED

    if not 0 <= value <= MAX_SEED:
        raise UsageError(f"argument --seed: expected an integer in [0, 2**32 - 1], got {value}")
    return value


def layers(text: str | None) -> tuple[int, ...] | None:
    """``"19,20,21"`` as ``(19, 20, 21)``; ``None`` or ``""``: the model's preset layers.

    Described on the book page ``running``.
    """
    if not text:
        return None
    parts = [p.strip() for p in text.split(",")]
    if not all(re.fullmatch(r"\d+", p) for p in parts):
        bad = next(p for p in parts if not re.fullmatch(r"\d+", p))
        raise UsageError(f"argument --layers: expected comma-separated layer indices such as 19,20,21; "
                         f"{bad!r} in {text!r} is not a non-negative integer")
    out = tuple(int(p) for p in parts)
    twice = [i for n, i in enumerate(out) if i in out[:n]]
    if twice:
        raise UsageError(f"argument --layers: layer {twice[0]} is given twice in {text!r}; name each edited "
                         "layer once (a repeated layer would be stepped twice per step)")
    return out


def method(name: str) -> str:
    """A registered editor (:func:`crispedit_lite.editing.editor_names`).

    Described on the book page ``running``.
    """
    from crispedit_lite.editing import get_editor

    try:
        get_editor(name)
    except ValueError as err:
        raise UsageError(f"argument --method: {err}") from None
    return name


def settings(method_name: str, assignments: Sequence[str], flags: Mapping[str, str] | None = None
             ) -> dict[str, Any]:
    """``--set KEY=VALUE`` assignments as typed values of ``method_name``'s settings or shared fields.

    Each key must be a field of the method's own settings (``Editor.settings``) or a shared
    :class:`~crispedit_lite.editing.EditConfig` field; the value is read by the field's type
    (``int``, ``float``, ``bool``, ``str``, ``Literal`` choices, comma lists for tuples, ``none`` for
    an optional field), then checked by the settings' own validation. ``flags`` maps keys that an
    explicit flag set on this command line to that flag (``{"gamma": "--gamma"}``): setting them
    twice is an error, as are ``method`` and ``seed``, which have flags of their own.

    Described on the book page ``running``.
    """
    from crispedit_lite.editing import EditConfig, get_editor
    from crispedit_lite.editing.config import SHARED_FIELDS, setting_error
    from crispedit_lite.editing.settings import field_types, parse_value

    editor = get_editor(method_name)
    types = {k: v for k, v in field_types(EditConfig).items() if k in SHARED_FIELDS}
    types.update(field_types(editor.settings) if editor.settings else {})
    values: dict[str, Any] = {}
    for item in assignments:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"argument --set: expected KEY=VALUE such as lora_rank=4, got {item!r}")
        if key in ("method", "seed"):
            raise UsageError(f"argument --set: {key} has its own flag; pass --{key} instead")
        if key not in types:
            raise UsageError(f"argument --set: {setting_error(method_name, key, item)}")
        if key in values or key in (flags or {}):
            again = "--set" if key in values else (flags or {})[key]
            raise UsageError(f"argument --set: {key} is also given by {again}; give it once")
        try:
            values[key] = parse_value(key, text, types[key])
        except ValueError as err:
            raise UsageError(f"argument --set: {err}") from None
    try:
        EditConfig(method_name, **values)  # each settings class's own checks (ranges, choices)
    except ValueError as err:
        raise UsageError(f"argument --set: {err}") from None
    return values


def evals(text: str) -> list[str]:
    """``"wild,teacher_forced"`` as a list of evaluations; ``"none"``: no evaluation.

    Listed on the book page ``api``.
    """
    from crispedit_lite.evaluation.runner import EVALS

    names = [e.strip() for e in text.split(",") if e.strip()]
    if names == ["none"]:
        return []
    bad = [e for e in names if e not in EVALS]
    if bad or not names:
        raise UsageError(f"argument --eval: unknown evaluation(s) {bad or [text]}; expected a comma list "
                         f"of {', '.join(EVALS)}, or 'none'")
    return names


def device(name: str) -> str:
    """A torch device that exists on this machine.

    Described on the book page ``running``.
    """
    import torch

    try:
        dev = torch.device(name)
    except RuntimeError:
        raise UsageError(f"argument --device: {name!r} is not a device; expected cpu, cuda or cuda:N") \
            from None
    if dev.type == "meta":
        raise UsageError(f"argument --device: {name!r} holds no weights and cannot train; expected cpu, "
                         "cuda or cuda:N")
    if dev.type not in ("cpu", "cuda", "mps", "xpu"):
        raise UsageError(f"argument --device: {name!r} is not a device this package runs on; expected "
                         "cpu, cuda or cuda:N")
    backend = getattr(torch.backends, "mps", None) if dev.type == "mps" else getattr(torch, "xpu", None)
    if dev.type in ("mps", "xpu") and not (backend is not None and backend.is_available()):
        raise UsageError(f"argument --device: {name!r} asked for, but it is not available here")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"argument --device: {name!r} asked for, but CUDA is not available here")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UsageError(f"argument --device: {name!r}, but only {torch.cuda.device_count()} GPU(s)")
    return name


def device_map(value: str | None) -> str | dict[str, Any] | None:
    """``auto`` (or another accelerate strategy), a JSON object, or a JSON file holding one.

    Described on the book page ``running``.
    """
    if value is None or value in _DEVICE_MAPS:
        return value
    if value.lstrip().startswith("{"):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError as err:
            raise UsageError(f"argument --device-map: not valid JSON ({err.msg} at char {err.pos})") from None
        except RecursionError:
            raise UsageError("argument --device-map: JSON nested too deeply to be a device map") from None
    elif Path(value).is_file():
        try:
            parsed = json.loads(Path(value).read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError, OSError):
            raise UsageError(f"argument --device-map: file {value!r} is not a JSON object") from None
    else:
        raise UsageError(f"argument --device-map: expected one of {', '.join(_DEVICE_MAPS)}, a JSON object "
                         f"or a JSON file; {value!r} is none of these")
    if not isinstance(parsed, dict):
        raise UsageError(f"argument --device-map: expected a JSON object (module -> device), got "
                         f"{type(parsed).__name__}")
    from crispedit_lite.reproduction.preflight import SettingError, check_device

    try:
        check_device("cpu", "float32", parsed)  # each value is a device this machine has
    except SettingError as err:
        raise UsageError(f"argument --device-map: {err.message}") from None
    return parsed


def _hub_cached(repo: str, filename: str = "config.json") -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover
        return False
    return isinstance(try_to_load_from_cache(repo, filename), str)


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() not in ("0", "", "false")


def model(name: str, tokenizer_arg: str | None) -> str:
    """An embedded model, a saved model folder, a hub id, or ``random:<shape preset>``.

    Described on the book page ``running``.
    """
    from crispedit_lite.models import EMBEDDED_MODELS, SHAPE_PRESETS

    if name.startswith("random:"):
        shape = name.split(":", 1)[1]
        if shape not in SHAPE_PRESETS:
            raise UsageError(f"argument --model: unknown shape preset {shape!r}; expected random:<one of "
                             f"{', '.join(sorted(SHAPE_PRESETS))}>")
        if not tokenizer_arg:
            raise UsageError(f"argument --tokenizer: model {name} has no tokenizer of its own; pass "
                             "--tokenizer DIR_OR_HUB_ID")
        return name
    if name in EMBEDDED_MODELS:
        return name
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UsageError(f"argument --model: folder {name!r} has no config.json; expected a folder "
                             "written by save_pretrained")
        return name
    known = sorted(EMBEDDED_MODELS) + [f"random:{s}" for s in sorted(SHAPE_PRESETS)]
    if path.exists() or name.startswith((".", "/", "~")) or not _HUB_ID.match(name) or \
            (_offline() and not _hub_cached(name)):
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        where = " and not in the local Hugging Face cache (HF_HUB_OFFLINE is set)" if _offline() else ""
        raise UsageError(f"argument --model: unknown model {name!r}{hint}: not a saved model folder, "
                         f"a hub id{where}, or one of {', '.join(known)}")
    return name


def tokenizer(name: str | None) -> str | None:
    """A tokenizer folder or hub id (``None``: the model's own).

    Described on the book page ``running``.
    """
    if name is None:
        return None
    path = Path(name).expanduser()
    if path.is_dir():
        return name
    if path.exists() or name.startswith((".", "/", "~")) or not _HUB_ID.match(name) or \
            (_offline() and not _hub_cached(name, "tokenizer_config.json")):
        raise UsageError(f"argument --tokenizer: {name!r} is not a tokenizer folder or a hub id"
                         + (" in the local Hugging Face cache" if _offline() else ""))
    return name
