"""Atomic file writes (a temp file beside the target, then ``os.replace``) and content digests.

A crash or a full disk never leaves half a checkpoint, label map or metrics file where a good one was;
a digest recorded at write time lets a reader tell a damaged file from a good one.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["atomic_path", "atomic_write_text", "content_digest", "file_digest", "write_json"]

_CHUNK = 8 << 20


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


@contextmanager
def atomic_path(path: str | Path) -> Iterator[str]:
    """Yield a temp path beside ``path`` for a writer to fill; on success it replaces ``path``.

    The temp file gets the permissions a plain ``open`` would give (mkstemp alone uses 0600); on any
    failure it is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_UMASK)  # after the writer: some (safetensors) recreate the file as 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def write_json(path: str | Path, payload: Any) -> None:
    atomic_write_text(path, json.dumps(payload, indent=2, default=str, ensure_ascii=False))


def file_digest(path: str | Path) -> str:
    """BLAKE2b (128-bit) of a file's bytes, read in chunks: fast enough to check every load."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def content_digest(path: str | Path) -> dict[str, Any]:
    """What a sidecar records of a file: its size and digest."""
    return {"blake2b": file_digest(path), "bytes": os.path.getsize(path)}
