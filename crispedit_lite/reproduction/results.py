r"""The results store: one JSON file per run, validated against a schema, written atomically.

A run records everything needed to audit and re-run it: the command, every setting, the metrics,
per-edit generations, timings per phase, peak memory, hardware, package versions and the git commit.
Re-running the same settings and seed on a CPU reproduces the metrics exactly (tested).

Every file is strict JSON. A run whose record holds a NaN or an infinity (a loss or a metric of a
diverged edit) is written with ``null`` in those places and a ``diverged`` entry listing them
(:func:`write_result`); :func:`validate_result` refuses non-finite numbers, :func:`result_problem`
says why a record does not count as a finished result (diverged, or nothing measured after the edit),
and :func:`read_results` leaves diverged runs out unless asked.

Derived in notebook ``09_reproduce_llama3_8b``; read back by ``11_results``.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from crispedit_lite.atomic import write_json_atomic

__all__ = ["SCHEMA", "SCHEMA_VERSION", "environment_info", "nonfinite_paths", "peak_memory", "read_results",
           "result_problem", "validate_result", "write_result"]

SCHEMA_VERSION = 1

SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "crispedit-lite run result",
    "type": "object",
    "required": ["schema_version", "run_id", "created", "command", "settings", "metrics",
                 "timings", "environment"],
    "properties": {
        "schema_version": {"const": SCHEMA_VERSION},
        "run_id": {"type": "string", "minLength": 1},
        "created": {"type": "string"},
        "command": {"type": "string"},
        "settings": {
            "type": "object",
            "required": ["model", "dataset", "n_edits", "method", "seed"],
            "properties": {
                "model": {"type": "string"}, "dataset": {"type": "string"},
                "n_edits": {"type": "integer", "minimum": 1}, "method": {"type": "string"},
                "seed": {"type": "integer"}, "config": {"type": "object"},
            },
        },
        # {"before": {...}, "after": {...}}: nested groups of scores (wild.scores.qa.rel, ...)
        "metrics": {"type": "object", "required": ["after"],
                    "additionalProperties": {"type": "object"}},
        "generations": {"type": "array", "items": {"type": "object"}},
        "timings": {"type": "object", "additionalProperties": {"type": "number"}},
        "memory": {"type": "object"},
        "environment": {
            "type": "object",
            "required": ["python", "torch", "device", "packages"],
            "properties": {"git_commit": {"type": ["string", "null"]}},
        },
        "notes": {"type": "array", "items": {"type": "string"}},
        # present only for a diverged run: where its non-finite numbers were (now null)
        "diverged": {"type": "object", "required": ["nonfinite"],
                     "properties": {"nonfinite": {"type": "array", "items": {"type": "string"}}}},
    },
}

_PACKAGES = ("crispedit-lite", "torch", "transformers", "datasets", "peft", "lm-eval", "gguf",
             "accelerate", "safetensors")


def _git_commit() -> str | None:
    root = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("-dirty" if dirty else "")


def environment_info(device: str | torch.device = "cpu") -> dict[str, Any]:
    """Python, torch, hardware, package versions and git commit of this run.

    Listed on the book page ``api``.
    """
    device = torch.device(device)
    packages = {}
    for name in _PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    hw = platform.processor() or platform.machine()
    if device.type == "cuda" and torch.cuda.is_available():
        hw = torch.cuda.get_device_name(device)
    return {"python": sys.version.split()[0], "torch": torch.__version__, "device": str(device),
            "hardware": hw, "cpu_count": os.cpu_count(), "packages": packages,
            "git_commit": _git_commit()}


def peak_memory(device: str | torch.device = "cpu") -> dict[str, float | None]:
    """Peak GPU memory (GiB) since the last reset, or the process's peak RSS on a CPU.

    Listed on the book page ``api``.
    """
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        return {"gpu_peak_gib": torch.cuda.max_memory_allocated(device) / 2**30}
    try:
        import resource

        return {"cpu_peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}
    except ImportError:  # pragma: no cover (Windows)
        return {"cpu_peak_rss_gib": None}


def nonfinite_paths(obj: Any, where: str = "") -> list[str]:
    """Key paths (``metrics.after.proxies.perplexity``, ``edit.train[0].epoch_losses[3]``) of NaN or inf.

    Listed on the book page ``api``.
    """
    if isinstance(obj, float):
        return [] if math.isfinite(obj) else [where or "(the value)"]
    if isinstance(obj, dict):
        return [p for k, v in obj.items() for p in nonfinite_paths(v, f"{where}.{k}" if where else str(k))]
    if isinstance(obj, (list, tuple)):
        return [p for i, v in enumerate(obj) for p in nonfinite_paths(v, f"{where}[{i}]")]
    return []


def validate_result(result: dict[str, Any]) -> None:
    """Raise ``ValueError`` naming the first field that breaks :data:`SCHEMA` or holds NaN / infinity.

    Derived in notebook ``09_reproduce_llama3_8b``.
    """
    import jsonschema

    bad = nonfinite_paths(result)
    if bad:
        raise ValueError(f"result field {bad[0]}: not a finite number (NaN or infinity)"
                         + (f", and {len(bad) - 1} more" if len(bad) > 1 else ""))
    try:
        jsonschema.validate(result, SCHEMA)
    except jsonschema.ValidationError as err:
        where = "/".join(str(p) for p in err.absolute_path) or "(top level)"
        raise ValueError(f"result field {where}: {err.message}") from None
    except RecursionError:
        raise ValueError("result: nested too deeply to be a results record") from None


def result_problem(result: dict[str, Any]) -> str | None:
    """Why ``result`` does not count as a finished run (``None``: it does).

    It must pass :func:`validate_result`, must not be a diverged run, and must hold metrics measured
    after the edit.

    Listed on the book page ``api``.
    """
    try:
        validate_result(result)
    except ValueError as err:
        return str(err)
    if result.get("diverged"):
        where = result["diverged"].get("nonfinite") or ["?"]
        return f"the run diverged ({where[0]} was not finite)"
    if not result["metrics"].get("after"):
        return "it holds no metrics after the edit"
    return None


def _null_nonfinite(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _null_nonfinite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_null_nonfinite(v) for v in obj]
    return obj


def write_result(result: dict[str, Any], results_dir: str | os.PathLike) -> Path:
    """Validate and write ``result`` to ``results_dir/<run_id>.json`` atomically; never overwrite.

    A record with NaN or infinite numbers is a diverged run: it is written with ``null`` in their
    places and ``diverged = {"nonfinite": [key paths]}`` (strict JSON), and never counts as a finished
    result (:func:`result_problem`).

    Listed on the book page ``api``.
    """
    result = dict(result)
    bad = nonfinite_paths(result)
    if bad:
        result = _null_nonfinite(result)
        result["diverged"] = {"nonfinite": bad}
        note = f"diverged: {len(bad)} non-finite number(s), first {bad[0]}; written as null"
        result["notes"] = [*(result.get("notes") or []), note]
    result.setdefault("schema_version", SCHEMA_VERSION)
    result.setdefault("created", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    validate_result(result)
    out_dir = Path(results_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{result['run_id']}.json"
    if path.exists():
        raise ValueError(f"{path} exists; results are never overwritten (choose another run_id)")
    write_json_atomic(path, result, sort_keys=True, overwrite=False)
    return path


def read_results(results_dir: str | os.PathLike, include_diverged: bool = False) -> list[dict[str, Any]]:
    """Every valid result JSON under ``results_dir`` (recursively), sorted by creation time.

    An invalid file is an error naming the file and field, not a silent skip. Diverged runs
    (:func:`write_result`) are left out unless ``include_diverged``.

    Listed on the book page ``api``.
    """
    out = []
    for path in sorted(Path(results_dir).rglob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            validate_result(data)
        except (ValueError, RecursionError) as err:
            raise ValueError(f"{path}: {err}") from None
        if data.get("diverged") and not include_diverged:
            continue
        data["_path"] = str(path)
        out.append(data)
    return sorted(out, key=lambda r: r["created"])

