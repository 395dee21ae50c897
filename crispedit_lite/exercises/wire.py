r"""The data that crosses between a student's process and the judge: plain values, no code.

Everything a student's kernel or runner sends to the judge is reduced by :func:`to_data` to tensors,
numbers, strings, ``None`` and lists, tuples and dicts of them (pandas frames and series become
tagged dicts, NumPy arrays tensors), serialised with ``torch.save`` and read back by the judge with
``torch.load(weights_only=True)``, which builds those types and nothing else: a submission can send
wrong values, never code. Frames on a pipe are a length and a payload (:func:`write_frame`,
:func:`read_frame`). :func:`export` is what the grading command runs in the student's kernel to
fetch the values a grader cell needs.
"""

from __future__ import annotations

import base64
import io
import os
import select
import struct
import time
from typing import Any

import torch

__all__ = [
    "MIME",
    "FunctionRef",
    "to_data",
    "from_data",
    "dumps",
    "loads",
    "write_frame",
    "read_frame",
    "export",
    "ExportError",
]

MIME = "application/vnd.crispedit-lite.export"
_FN, _PD, _MISSING, _ERROR = "__function__", "__pandas__", "__missing__", "__unsendable__"
MAX_BYTES = 1 << 30


class ExportError(Exception):
    """A value that cannot be sent to the grader (its message says which and why).

    Listed on the book page ``api``.
    """


class FunctionRef(dict):
    """A reference to a student function by name (the runner holds the function itself).

    Listed on the book page ``api``.
    """

    def __init__(self, name: str) -> None:
        super().__init__({_FN: str(name)})

    @property
    def name(self) -> str:
        """The function's name in the notebook."""
        return self[_FN]


def to_data(obj: Any, depth: int = 0) -> Any:
    """``obj`` as plain data, or ``ExportError`` naming the type that cannot be sent.

    Listed on the book page ``api``.
    """
    if depth > 20:
        raise ExportError("the value is nested more than 20 levels deep")
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, torch.Tensor):
        t = obj.detach()
        t = t.to_dense() if t.layout != torch.strided else t
        return t.cpu().clone().contiguous()
    mod = type(obj).__module__.split(".")[0]
    if mod == "numpy":
        import numpy as np

        if isinstance(obj, np.ndarray):
            return (
                torch.from_numpy(np.ascontiguousarray(obj)).clone()
                if obj.dtype != object
                else to_data(obj.tolist(), depth + 1)
            )
        if isinstance(obj, np.generic):
            return obj.item()
    if mod == "pandas":
        import pandas as pd

        if isinstance(obj, pd.DataFrame):
            return {
                _PD: "DataFrame",
                "columns": to_data(list(obj.columns), depth + 1),
                "index": to_data(list(obj.index), depth + 1),
                "index_names": to_data(list(obj.index.names), depth + 1),
                "data": to_data(obj.to_numpy().tolist(), depth + 1),
            }
        if isinstance(obj, pd.Series):
            return {
                _PD: "Series",
                "index": to_data(list(obj.index), depth + 1),
                "data": to_data(obj.to_numpy().tolist(), depth + 1),
                "name": to_data(obj.name, depth + 1),
            }
    if isinstance(obj, (list, tuple)):
        items = [to_data(x, depth + 1) for x in obj]
        return tuple(items) if isinstance(obj, tuple) else items
    if isinstance(obj, dict):
        return {to_data(k, depth + 1): to_data(v, depth + 1) for k, v in obj.items()}
    raise ExportError(
        f"a {type(obj).__module__}.{type(obj).__qualname__} cannot be sent to the grader "
        "(send tensors, numbers, strings, lists, dicts or pandas tables)"
    )


def from_data(obj: Any) -> Any:
    """Rebuild pandas objects and references from :func:`to_data`'s output (trusted side).

    Listed on the book page ``api``.
    """
    if isinstance(obj, dict):
        if set(obj) == {_FN}:
            return FunctionRef(obj[_FN])
        if obj.get(_PD) == "DataFrame":
            import pandas as pd

            idx = (
                pd.MultiIndex.from_tuples(obj["index"], names=obj["index_names"])
                if (len(obj["index_names"]) > 1)
                else pd.Index(obj["index"], name=obj["index_names"][0])
            )
            return pd.DataFrame(obj["data"], columns=obj["columns"], index=idx)
        if obj.get(_PD) == "Series":
            import pandas as pd

            return pd.Series(obj["data"], index=obj["index"], name=obj["name"], dtype=object).infer_objects()
        return {from_data(k): from_data(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [from_data(x) for x in obj]
    if isinstance(obj, tuple):
        return tuple(from_data(x) for x in obj)
    return obj


def dumps(obj: Any) -> bytes:
    """Serialise plain data (the output of :func:`to_data`).

    Listed on the book page ``api``.
    """
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def loads(data: bytes) -> Any:
    """Read plain data back; anything but tensors, numbers, strings and containers is refused.

    Listed on the book page ``api``.
    """
    if len(data) > MAX_BYTES:
        raise ValueError(f"a message of {len(data)} bytes is over the {MAX_BYTES} byte limit")
    return torch.load(io.BytesIO(data), weights_only=True)


def write_frame(fd: int, payload: bytes) -> None:
    """Write one frame (8-byte length, then the payload) to a file descriptor.

    Listed on the book page ``api``.
    """
    data = struct.pack(">Q", len(payload)) + payload
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def read_frame(fd: int, deadline: float | None = None, limit: int = MAX_BYTES) -> bytes:
    """Read one frame; ``TimeoutError`` past ``deadline`` (``time.monotonic``), ``EOFError`` at the end.

    Listed on the book page ``api``.
    """
    header = _read_exact(fd, 8, deadline)
    (n,) = struct.unpack(">Q", header)
    if n > limit:
        raise ValueError(f"a frame of {n} bytes is over the {limit} byte limit")
    return _read_exact(fd, n, deadline)


def _read_exact(fd: int, n: int, deadline: float | None) -> bytes:
    chunks, got = [], 0
    while got < n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError("no answer before the time limit")
        chunk = os.read(fd, min(n - got, 1 << 20))
        if not chunk:
            raise EOFError("the other process closed the pipe")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def export(namespace: dict[str, Any], names: list[str]) -> None:
    """Publish the values of ``names`` from ``namespace`` as one display message (run in the kernel).

    A name that is not defined, or whose value cannot be sent, is published as a marker that the
    judge turns into a clear error when the grader uses it.

    Described on the book page ``instructors``.
    """
    from IPython.display import publish_display_data

    out = {}
    for name in names:
        if name not in namespace:
            out[name] = {_MISSING: f"`{name}` is not defined in the notebook"}
            continue
        try:
            out[name] = to_data(namespace[name])
        except ExportError as err:
            out[name] = {_ERROR: f"`{name}`: {err}"}
    publish_display_data({MIME: base64.b64encode(dumps(out)).decode("ascii")})


def unavailable(value: Any) -> str | None:
    """The reason a value received from :func:`export` is a marker (missing or unsendable), else ``None``."""
    if isinstance(value, dict) and len(value) == 1:
        for key in (_MISSING, _ERROR):
            if key in value:
                return str(value[key])
    return None
