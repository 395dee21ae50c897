r"""The results store: one JSON file per run, validated against a schema, written atomically.

A run records everything needed to audit and re-run it: the command, every setting, the metrics,
per-edit generations, timings per phase, peak memory, hardware, package versions and the git commit.
Re-running the same settings and seed on a CPU reproduces the metrics exactly (tested).

Derived in notebook ``09_reproduce_llama3_8b``; read back by ``11_results``.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

__all__ = ["SCHEMA", "SCHEMA_VERSION", "environment_info", "validate_result", "write_json_atomic",
           "write_result", "read_results", "peak_memory"]

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

    Derived in notebook ``09_reproduce_llama3_8b``.
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

    Derived in notebook ``09_reproduce_llama3_8b``.
    """
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        return {"gpu_peak_gib": torch.cuda.max_memory_allocated(device) / 2**30}
    try:
        import resource

        return {"cpu_peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}
    except ImportError:  # pragma: no cover (Windows)
        return {"cpu_peak_rss_gib": None}


def validate_result(result: dict[str, Any]) -> None:
    """Raise ``ValueError`` naming the first field that breaks :data:`SCHEMA`.

    Derived in notebook ``09_reproduce_llama3_8b``.
    """
    import jsonschema

    try:
        jsonschema.validate(result, SCHEMA)
    except jsonschema.ValidationError as err:
        where = "/".join(str(p) for p in err.absolute_path) or "(top level)"
        raise ValueError(f"result field {where}: {err.message}") from None


def write_result(result: dict[str, Any], results_dir: str | os.PathLike) -> Path:
    """Validate and write ``result`` to ``results_dir/<run_id>.json`` atomically; never overwrite.

    Derived in notebook ``09_reproduce_llama3_8b``.
    """
    result = dict(result)
    result.setdefault("schema_version", SCHEMA_VERSION)
    result.setdefault("created", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    validate_result(result)
    out_dir = Path(results_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{result['run_id']}.json"
    if path.exists():
        raise ValueError(f"{path} exists; results are never overwritten (choose another run_id)")
    fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(result, fh, indent=1, sort_keys=True)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def read_results(results_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """Every valid result JSON under ``results_dir`` (recursively), sorted by creation time.

    An invalid file is an error naming the file and field, not a silent skip.

    Derived in notebook ``09_reproduce_llama3_8b``.
    """
    out = []
    for path in sorted(Path(results_dir).rglob("*.json")):
        data = json.loads(path.read_text())
        try:
            validate_result(data)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None
        data["_path"] = str(path)
        out.append(data)
    return sorted(out, key=lambda r: r["created"])


def write_json_atomic(path: str | os.PathLike, record: Any) -> Path:
    """Write ``record`` as indented JSON to ``path`` atomically (temporary file, then ``os.replace``).

    For benchmark records, which a rerun may rewrite row by row; a reader never sees half a file.
    Derived in notebook ``09_reproduce_llama3_8b``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps(record, indent=1) + "\n")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
