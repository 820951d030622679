"""Atomic file writes: a temp file beside the target, then ``os.replace``.

A crash or a full disk never leaves half a checkpoint, label map or metrics file where a good one was.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["atomic_target", "atomic_write_text"]


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def atomic_target(path: str | Path) -> tuple[int, str]:
    """A temp file beside ``path`` with the permissions a plain ``open`` would give (mkstemp uses 0600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.chmod(tmp, 0o666 & ~_UMASK)
    return fd, tmp


def atomic_write_text(path: str | Path, text: str) -> None:
    path = Path(path)
    fd, tmp = atomic_target(path)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
