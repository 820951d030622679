"""On-disk store of cached features: one directory per key, memory-mapped ``.npy`` arrays.

Layout of an entry ``<root>/<key>/``:

* ``values.npy``: ``[rows, dim]`` pooled features, or ``[total_tokens, dim]`` hidden states of the
  real tokens of every row, back to back (padding is never stored);
* ``offsets.npy`` (token entries): ``[rows + 1]`` start of each row in ``values``;
* ``manifest.json``: the key's components, shapes, dtype, and the size and BLAKE2 checksum of each
  array file. Its modification time is the entry's "last used" time.

An entry is written to a temporary directory and renamed into place, so a crash never leaves a
half-written entry under a valid key, and two processes building the same entry both end up with a
complete one. Opening an entry checks sizes and checksums: a corrupted entry is reported, deleted
and rebuilt, never read.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from headstart.errors import ConfigError
from headstart.fileio import file_digest

__all__ = ["CacheEntry", "CacheWriter", "FeatureCache", "default_cache_dir", "format_bytes"]

ENV_VAR = "HEADSTART_CACHE_DIR"
_MANIFEST = "manifest.json"
_ARRAYS = ("values.npy", "offsets.npy")


def default_cache_dir() -> Path:
    """``$HEADSTART_CACHE_DIR``, else ``$XDG_CACHE_HOME/headstart/features`` (``~/.cache/...``)."""
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "headstart" / "features"


def format_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


@dataclass
class CacheEntry:
    """An opened, verified entry: ``values`` is memory-mapped read-only."""

    key: str
    path: Path
    manifest: dict[str, Any]
    values: np.ndarray
    offsets: np.ndarray | None

    @property
    def kind(self) -> str:
        return str(self.manifest["components"]["kind"])

    @property
    def n_rows(self) -> int:
        return int(self.manifest["rows"])

    @property
    def nbytes(self) -> int:
        return int(sum(f["bytes"] for f in self.manifest["files"].values()))

    def row(self, i: int) -> np.ndarray:
        """Features of row ``i``: ``[dim]`` (pooled) or ``[tokens, dim]``."""
        if self.offsets is None:
            return self.values[i]
        return self.values[self.offsets[i] : self.offsets[i + 1]]


class CacheWriter:
    """Arrays being filled for a new entry (in its temporary directory)."""

    def __init__(self, tmp: Path, rows: int, dim: int, dtype: str, lengths: np.ndarray | None) -> None:
        self.rows, self.dim, self.dtype = int(rows), int(dim), np.dtype(dtype)
        self.offsets: np.ndarray | None = None
        total = self.rows
        if lengths is not None:
            self.offsets = np.zeros(self.rows + 1, dtype=np.int64)
            np.cumsum(np.asarray(lengths, dtype=np.int64), out=self.offsets[1:])
            total = int(self.offsets[-1])
            np.save(tmp / "offsets.npy", self.offsets)
        self.values = np.lib.format.open_memmap(tmp / "values.npy", mode="w+", dtype=self.dtype,
                                                shape=(total, self.dim))

    def write_rows(self, rows: np.ndarray, values: np.ndarray) -> None:
        """Pooled entries: ``values[j]`` is row ``rows[j]``."""
        self.values[rows] = values.astype(self.dtype, copy=False)

    def write_tokens(self, row: int, values: np.ndarray) -> None:
        """Token entries: the hidden states of the real tokens of ``row``."""
        assert self.offsets is not None
        start, stop = self.offsets[row], self.offsets[row + 1]
        if values.shape[0] != stop - start:
            raise ValueError(f"row {row} has {stop - start} tokens, got states for {values.shape[0]}")
        self.values[start:stop] = values.astype(self.dtype, copy=False)


class FeatureCache:
    """A directory of entries; see the module docstring for the layout and the guarantees."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root).expanduser() if root else default_cache_dir()

    # ----- reading ------------------------------------------------------------------------------
    def open(self, key: str, verify: bool = True) -> CacheEntry | None:
        """The entry for ``key``; None when absent or corrupted (a corrupted one is removed)."""
        path = self.root / key
        if not (path / _MANIFEST).exists():
            return None
        try:
            manifest = json.loads((path / _MANIFEST).read_text())
            problem = self._check(path, manifest, verify)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            problem = f"unreadable manifest ({exc})"
        if problem is None:
            try:
                values = np.load(path / "values.npy", mmap_mode="r")
                offsets = np.load(path / "offsets.npy") if (path / "offsets.npy").exists() else None
            except (OSError, ValueError) as exc:
                problem = f"unreadable array ({exc})"
        if problem is not None:
            warnings.warn(
                f"Feature cache entry {path} is corrupted: {problem}. It was deleted and will be rebuilt.",
                UserWarning, stacklevel=2,
            )
            self._remove(path)
            return None
        os.utime(path / _MANIFEST)  # last used
        return CacheEntry(key, path, manifest, values, offsets)

    @staticmethod
    def _check(path: Path, manifest: dict[str, Any], verify: bool) -> str | None:
        for name, info in manifest["files"].items():
            file = path / name
            if not file.exists():
                return f"{name} is missing"
            size = file.stat().st_size
            if size != info["bytes"]:
                return f"{name} has {size} bytes, the manifest says {info['bytes']}"
            if verify and file_digest(file) != info["blake2b"]:
                return f"the checksum of {name} does not match its manifest"
        return None

    # ----- writing ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def building(self, key: str) -> Iterator[None]:
        """Hold the build lock of ``key`` (an advisory ``flock``, released even if the process dies): a second
        process asking for the same missing entry waits here and then finds it, instead of computing it too."""
        import fcntl

        locks = self.root / ".locks"
        try:
            locks.mkdir(parents=True, exist_ok=True)
            fd = os.open(locks / f"{key}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise ConfigError(
                f"Cannot write the feature cache at {self.root}: {exc}. Point cache.dir (or the {ENV_VAR} "
                f"environment variable) at a writable directory, or run with --no-cache."
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def build(
        self,
        key: str,
        components: dict[str, Any],
        *,
        rows: int,
        dim: int,
        dtype: str,
        lengths: np.ndarray | None,
        fill: Callable[[CacheWriter], None],
    ) -> CacheEntry:
        """Create the entry: ``fill`` writes every row; then checksums, manifest, atomic rename."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            tmp = self.root / f".tmp-{key}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            tmp.mkdir()
        except OSError as exc:
            raise ConfigError(
                f"Cannot write the feature cache at {self.root}: {exc}. Point cache.dir (or the "
                f"{ENV_VAR} environment variable) at a writable directory, or run with --no-cache."
            ) from exc
        try:
            started = time.perf_counter()
            writer = CacheWriter(tmp, rows, dim, dtype, lengths)
            fill(writer)
            writer.values.flush()
            del writer
            files = {
                name: {"bytes": (tmp / name).stat().st_size, "blake2b": file_digest(tmp / name)}
                for name in _ARRAYS if (tmp / name).exists()
            }
            manifest = {
                "key": key, "components": components, "rows": int(rows), "dim": int(dim), "dtype": dtype,
                "files": files, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "build_seconds": round(time.perf_counter() - started, 2),
            }
            (tmp / _MANIFEST).write_text(json.dumps(manifest, indent=1, default=str))
            try:
                os.rename(tmp, self.root / key)
            except OSError:  # another process finished the same entry first: keep theirs
                if not (self.root / key / _MANIFEST).exists():
                    raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        entry = self.open(key, verify=False)
        if entry is None:
            raise RuntimeError(f"feature cache entry {key} vanished right after it was written in {self.root}")
        return entry

    # ----- housekeeping (headstart cache ls|clear) ------------------------------------------------
    def entries(self) -> Iterator[dict[str, Any]]:
        """One summary per complete entry (no checksum pass: listing stays fast)."""
        if not self.root.is_dir():
            return
        for path in sorted(self.root.iterdir()):
            manifest_path = path / _MANIFEST
            if path.name.startswith(".") or not manifest_path.exists():
                continue
            try:
                manifest = json.loads(manifest_path.read_text())
            except (OSError, ValueError):
                manifest = {"components": {}, "files": {}}
            yield {
                "key": path.name,
                "kind": manifest["components"].get("kind", "?"),
                "cut": manifest["components"].get("cut"),
                "n_blocks": manifest["components"].get("n_blocks"),
                "rows": manifest.get("rows"),
                "dtype": manifest.get("dtype"),
                "bytes": sum(f.stat().st_size for f in path.iterdir() if f.is_file()),
                "created": manifest.get("created", "?"),
                "last_used": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(manifest_path.stat().st_mtime)),
                "backbone": manifest["components"].get("backbone_type", "?"),
            }

    def clear(self, keys: list[str] | None = None, older_than_days: float | None = None) -> tuple[int, int]:
        """Delete the given entries (all when None), or those unused for ``older_than_days``.

        Returns (entries removed, bytes freed). Leftover temporary directories are removed too.
        """
        if not self.root.is_dir():
            return 0, 0
        known = {e["key"]: e for e in self.entries()}
        if keys:
            unknown = [k for k in keys if k not in known]
            if unknown:
                raise ConfigError(
                    f"No feature cache entry {', '.join(unknown)} in {self.root}. `headstart cache ls` lists "
                    f"the {len(known)} entries there."
                )
        chosen = list(keys) if keys else list(known)
        if older_than_days is not None:
            limit = time.time() - older_than_days * 86400
            chosen = [k for k in chosen if (self.root / k / _MANIFEST).stat().st_mtime < limit]
        freed = sum(known[k]["bytes"] for k in chosen)
        for key in chosen:
            self._remove(self.root / key)
        if not keys:
            for tmp in self.root.glob(".tmp-*"):
                shutil.rmtree(tmp, ignore_errors=True)
        return len(chosen), freed

    def _remove(self, path: Path) -> None:
        trash = path.with_name(f".tmp-trash-{path.name}-{uuid.uuid4().hex[:8]}")
        try:
            os.rename(path, trash)  # readers see the entry gone at once
        except OSError:
            return
        shutil.rmtree(trash, ignore_errors=True)
