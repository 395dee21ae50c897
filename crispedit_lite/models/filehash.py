"""The SHA-256 of a file: the one file digest of the package.

Model files and their assembled GGUF (:mod:`crispedit_lite.models.embedded`), weight folders
(:mod:`crispedit_lite.models.digest`), MEND editor networks and the results of a reproduction with their
finish markers are all pinned or checked by it.
"""

from __future__ import annotations

import hashlib
import os

__all__ = ["file_sha256"]


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes, read in blocks of 1 MiB (hexadecimal).

    Listed on the book page ``api``.
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
