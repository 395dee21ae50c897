r"""Save and load K-FAC factors: one safetensors file whose header carries JSON metadata and a checksum.

Writes are atomic (:mod:`crispedit_lite.atomic`: a temporary file in the same directory, then
``os.replace``), so an interrupted run (even ``kill -9``) never leaves a half-written cache, and an
existing cache is only replaced by a complete one. Files are created with the permissions of a
plain ``open`` (``0o666`` less the umask), so a cache shared by a group stays readable. The header
states the normalisation: ``A`` and ``S`` are second moments *divided by the number of terms*
``n_tokens``,

.. math::

    \mathbf A = \frac1T\sum_t \mathbf a_t\mathbf a_t^\top, \qquad
    \mathbf S = \frac1T\sum_t \mathbf g_t\mathbf g_t^\top,

so MEMIT and AlphaEdit can read ``A`` as their key covariance :math:`\mathbf C = \mathbb E[\mathbf k
\mathbf k^\top]` (Meng et al. 2023, eq. 15; Fang et al. 2025) and rescale by ``n_tokens`` if they
want the sum. The checksum covers the tensors *and* the header (every module's ``n_tokens`` and
metadata, the plain-string summary), so a changed byte anywhere is detected. Loading checks it and,
when asked, that the cache was made for the requested settings. Collection holds a lock file
(:func:`file_lock`) that names its holder; a waiting process says whom it waits for and gives up after
:func:`lock_timeout` seconds. Reused across runs by
``crispedit_lite.editing``.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import warnings
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from crispedit_lite.atomic import atomic_path
from crispedit_lite.kfac.factors import KFACFactors
from crispedit_lite.kfac.lock import file_lock, lock_timeout

__all__ = ["save_kfac", "load_kfac", "atomic_save_tensors", "read_tensors", "file_lock", "lock_timeout",
           "move_aside", "FORMAT_VERSION", "NORMALISATION"]

#: Version 2: the checksum covers the header too (version 1 covered only the tensors).
FORMAT_VERSION = 2
_SUMMARY = ("normalisation", "approx", "n_tokens", "dtype", "model_dtype")

#: How ``A`` and ``S`` are normalised, by ``approx`` (written into every cache header).
NORMALISATION = {
    "expand": "per-token second moment, divided by the token count n_tokens",
    "reduce": "per-sequence second moment (token-averaged inputs, token-summed output gradients), "
              "divided by the sequence count n_tokens",
}


def _checksum(tensors: Mapping[str, torch.Tensor], header: Mapping[str, Any] | None = None) -> str:
    """SHA-256 of the tensors (name, dtype, shape, bytes) and of the header without its ``sha256``."""
    h = hashlib.sha256()
    if header is not None:
        body = {k: v for k, v in header.items() if k != "sha256"}
        h.update(json.dumps(body, sort_keys=True).encode())
    for key in sorted(tensors):
        t = tensors[key].contiguous()
        h.update(key.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def atomic_save_tensors(tensors: Mapping[str, torch.Tensor], path: str | os.PathLike,
                        metadata: Mapping[str, str]) -> Path:
    """Write a safetensors file atomically (:func:`crispedit_lite.atomic.atomic_path`).

    Listed on the book page ``api``.
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(dict(tensors), tmp, metadata=dict(metadata))
    return path


def read_tensors(path: str | os.PathLike, field: str) -> tuple[dict[str, torch.Tensor], dict]:
    """Read every tensor of a safetensors file and the JSON header stored under ``field``.

    Raises ``FileNotFoundError`` when absent and ``ValueError`` (naming the file and the reason)
    when unreadable or lacking the header.

    Listed on the book page ``api``.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no K-FAC file at {path}")
    if not os.access(path, os.R_OK):
        mode = stat.S_IMODE(path.stat().st_mode)
        raise ValueError(f"{path} cannot be read: permission denied (file mode {mode:#o}); it is not "
                         "corrupt, but this process may not read it")
    try:
        with safe_open(str(path), framework="pt") as fh:
            raw = (fh.metadata() or {}).get(field)
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except Exception as err:  # safetensors raises its own error types
        raise ValueError(f"{path} is not a readable safetensors file: {err}") from err
    if raw is None:
        raise ValueError(f"{path} has no {field} header: not a K-FAC file of this package")
    try:
        header = json.loads(raw)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: the {field} header is not valid JSON ({err})") from err
    if not isinstance(header, dict):
        raise ValueError(f"{path}: the {field} header is a {type(header).__name__}, expected an object")
    return tensors, header


def move_aside(path: str | os.PathLike, reason: str) -> Path:
    """Rename an unusable file to ``<name>.corrupt-<UTC timestamp>`` and warn, naming both and why.

    Returns the new path.

    Listed on the book page ``api``.
    """
    path = Path(path)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    os.replace(path, aside)
    warnings.warn(f"{path} is unusable ({reason}); moved it to {aside.name} and recollecting",
                  stacklevel=3)
    return aside


def _plain_metadata(path: Path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as fh:
        return dict(fh.metadata() or {})


def save_kfac(factors: Mapping[str, KFACFactors], path: str | os.PathLike) -> Path:
    """Write ``{module: KFACFactors}`` to ``path`` (a ``.safetensors`` file), atomically.

    Besides the JSON header, the file's safetensors metadata states ``normalisation``, ``approx``,
    ``n_tokens``, ``dtype`` (of the stored factors) and ``model_dtype`` as plain strings.
    Returns the path written. Derived in notebook ``04_kfac_step_by_step``.
    """
    if not factors:
        raise ValueError("save_kfac: nothing to save (empty factors)")
    tensors: dict[str, torch.Tensor] = {}
    modules: dict[str, Any] = {}
    for name, f in factors.items():
        tensors[f"{name}::A"] = f.A.detach().to("cpu", torch.float32).contiguous()
        tensors[f"{name}::S"] = f.S.detach().to("cpu", torch.float32).contiguous()
        modules[name] = {"n_tokens": int(f.n_tokens), "meta": f.meta}
    first = next(iter(factors.values()))
    approx = str(first.meta.get("approx", "expand"))
    summary = {"normalisation": NORMALISATION.get(approx, NORMALISATION["expand"]),
               "approx": approx, "n_tokens": str(int(first.n_tokens)), "dtype": "float32",
               "model_dtype": str(first.meta.get("model_dtype", "unknown"))}
    header: dict[str, Any] = {"format_version": FORMAT_VERSION, "modules": modules, **summary}
    header["sha256"] = _checksum(tensors, json.loads(json.dumps(header)))  # as it reads back
    meta = {"crispedit_lite": json.dumps(header, sort_keys=True), **summary}
    return atomic_save_tensors(tensors, path, meta)


def load_kfac(
    path: str | os.PathLike, expect: Mapping[str, Any] | None = None
) -> dict[str, KFACFactors]:
    """Load factors written by :func:`save_kfac`, verifying the checksum.

    Args:
        path: the ``.safetensors`` cache file.
        expect: metadata that every module's factors must carry (e.g. ``{"model_id": ...,
            "labels": "true"}``), and optionally ``"modules"``: the list of module names required.

    Raises:
        FileNotFoundError: no cache at ``path``.
        ValueError: not a crispedit-lite cache, unreadable or truncated, corrupt (checksum), or
            metadata that does not match ``expect``; the message names the file, module and field.

    Derived in notebook ``04_kfac_step_by_step``.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no K-FAC cache at {path}")
    tensors, header = read_tensors(path, "crispedit_lite")
    if not isinstance(header.get("modules"), dict) or "sha256" not in header:
        raise ValueError(f"{path}: the header lacks 'modules' or 'sha256'; the cache is corrupt")
    if header.get("format_version") == 1:
        raise ValueError(f"{path}: format_version 1, written by an older version whose checksum did not "
                         "cover the metadata; such entries are not used (delete it; it is collected again)")
    if header.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: format_version {header.get('format_version')} != {FORMAT_VERSION}")
    if _checksum(tensors, header) != header["sha256"]:
        raise ValueError(f"{path}: checksum mismatch (tensors or metadata changed), the cache is corrupt; "
                         "delete it and recollect")
    plain = _plain_metadata(path)
    changed = [k for k in _SUMMARY if k in plain and str(plain[k]) != str(header.get(k))]
    if changed:
        raise ValueError(f"{path}: the plain metadata {changed[0]}={plain[changed[0]]!r} disagrees with the "
                         f"checksummed header ({header.get(changed[0])!r}); the cache is corrupt")
    expect = dict(expect or {})
    wanted = expect.pop("modules", None)
    if wanted is not None:
        missing = [m for m in wanted if m not in header["modules"]]
        if missing:
            raise ValueError(f"{path}: cache lacks modules {missing}; it has {list(header['modules'])}")
    out = {}
    for name, info in header["modules"].items():
        if not isinstance(info, dict) or not isinstance(info.get("meta"), dict) or \
                f"{name}::A" not in tensors or f"{name}::S" not in tensors:
            raise ValueError(f"{path}: module {name!r} has no factors or no metadata; corrupt cache")
        for key, value in expect.items():
            have = info["meta"].get(key)
            if have != value:
                raise ValueError(
                    f"{path}: module {name!r} was collected with {key}={have!r}, requested {value!r}"
                )
        if wanted is None or name in wanted:
            try:
                out[name] = KFACFactors(A=tensors[f"{name}::A"], S=tensors[f"{name}::S"],
                                        n_tokens=int(info.get("n_tokens", 0)), meta=info["meta"])
            except (TypeError, ValueError) as err:
                raise ValueError(f"{path}: module {name!r}: {err}") from err
    return out
