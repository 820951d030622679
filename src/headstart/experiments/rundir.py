"""The run directory: created once, never overwritten without ``--overwrite``, resumable."""

from __future__ import annotations

import contextlib
import ctypes
import resource
import shutil
import sys
from pathlib import Path

from headstart.errors import RunDirError

__all__ = ["RUN_FILES", "peak_rss_mb", "prepare_run_dir", "require_run_dir", "trim_heap"]

RUN_FILES = ("config.yaml", "labels.json", "metrics.csv", "summary.json", "checkpoints", "plots", "tb")


def prepare_run_dir(path: str | Path, overwrite: bool = False, resume: bool = False) -> Path:
    """Create ``path`` for a new run; refuse to touch an existing non-empty one unless asked."""
    run = Path(path)
    if resume:
        last = run / "checkpoints" / "last.ckpt"
        if not last.exists():
            raise RunDirError(
                f"Cannot resume: '{last}' does not exist, so no earlier run of this config got through an "
                f"epoch in '{run}'. Run without --resume to start it."
            )
        return run
    if run.exists() and not run.is_dir():
        raise RunDirError(
            f"The run directory '{run}' is a file, not a directory. Choose another --output-dir (output_dir)."
        )
    if run.exists() and not _is_empty_skeleton(run):
        if not overwrite:
            raise RunDirError(
                f"The run directory '{run}' already exists and is not empty; headstart never overwrites a run. "
                f"Pass --overwrite to replace it, --resume to continue it, or choose another --output-dir."
            )
        if not (run / "config.yaml").exists() and not (run / "summary.json").exists():
            raise RunDirError(
                f"--overwrite refused: '{run}' does not look like a headstart run directory (no config.yaml or "
                f"summary.json), so deleting it could destroy unrelated files. Choose another --output-dir."
            )
        shutil.rmtree(run)
    run.mkdir(parents=True, exist_ok=True)
    (run / "checkpoints").mkdir(exist_ok=True)
    (run / "plots").mkdir(exist_ok=True)
    return run


def _is_empty_skeleton(run: Path) -> bool:
    """True for an empty directory, or one holding only the empty folders a failed start left behind.

    ``prepare_run_dir`` creates ``checkpoints/`` and ``plots/`` before the data is read; when the run then
    stops on a data or config error, running it again (after the fix) must not call it an existing run.
    """
    for child in run.iterdir():
        if not (child.is_dir() and child.name in ("checkpoints", "plots") and not any(child.iterdir())):
            return False
    return True


def require_run_dir(path: str | Path) -> Path:
    run = Path(path)
    if not run.is_dir():
        what = "is a file, not a directory" if run.exists() else f"does not exist (resolved to {run.resolve()})"
        raise RunDirError(
            f"The run directory '{run}' {what}. Give the output_dir of a completed `headstart fit` (the folder "
            f"holding config.yaml, labels.json and checkpoints/)."
        )
    missing = [n for n in ("config.yaml", "labels.json", "checkpoints/best.safetensors") if not (run / n).exists()]
    if missing:
        raise RunDirError(
            f"'{run}' is not a finished headstart run directory: missing {', '.join(missing)}. Give the "
            f"output_dir of a completed `headstart fit`."
        )
    return run


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB.

    Linux: ``VmHWM`` of /proc/self/status, the high-water mark of this process's own memory map.
    ``ru_maxrss`` is not used there: the kernel carries the parent's RSS into it across fork + exec, so a
    run launched from a big Python process (a sweep, a notebook, a benchmark driver) would report at least
    the parent's size.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def trim_heap() -> None:
    """Return freed malloc memory to the OS (glibc keeps freed heap pages mapped); a no-op elsewhere."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):  # musl or another libc: nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)
