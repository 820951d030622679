"""The run directory: created once, never overwritten without ``--overwrite``, resumable, one writer.

One writer per directory: ``RunLock`` holds an advisory ``flock`` on ``<dir>/.headstart.lock`` for the
run's life. The kernel releases it when the process dies (even on SIGKILL), so a lock file whose lock is
free was left by a dead process and is taken over; the file names the PID, host and command of its
holder, so a refused second writer can say who holds the directory.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import resource
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Any

from headstart.errors import RunDirError

__all__ = ["FAILED_FILE", "LOCK_FILE", "RUN_FILES", "RunLock", "epochs_done", "lock_holder", "peak_rss_mb",
           "prepare_run_dir", "record_failure", "require_run_dir", "resume_hint", "trim_heap"]

RUN_FILES = ("config.yaml", "labels.json", "metrics.csv", "summary.json", "checkpoints", "plots", "tb")
LOCK_FILE = ".headstart.lock"
FAILED_FILE = "failed.json"  # why the last attempt in this directory stopped on an error (removed by the next start)


def _unwritable(path: Path, exc: OSError, what: str = "run directory") -> RunDirError:
    reason = "read-only file system" if exc.errno == errno.EROFS else (exc.strerror or str(exc)).lower()
    return RunDirError(
        f"Cannot write the {what} '{path}' (resolved to {path.resolve()}): {reason}. Choose a writable location: "
        f"--output-dir on the command line (relative to the working directory) or output_dir in the config "
        f"(relative to the config file's folder)."
    )


class RunLock:
    """Advisory lock on a run (or compare / stack) directory, held until ``release`` or process death."""

    def __init__(self, directory: str | Path, what: str = "run directory", name: str = LOCK_FILE) -> None:
        self.dir = Path(directory)
        self.path = self.dir / name  # a shard of a grid locks its own file: shards do not exclude each other
        self.what = what
        self.taken_over: dict[str, Any] | None = None  # the dead holder's record, when its lock was stale
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        import fcntl

        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise _unwritable(self.dir, exc, self.what) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_holder(fd)
            os.close(fd)
            if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise _unwritable(self.dir, exc, self.what) from None
            who = (f"PID {holder.get('pid')} on host {holder.get('host')}, since {holder.get('started')}"
                   f" (`{holder.get('command', '?')}`)") if holder else "another process"
            raise RunDirError(
                f"The {self.what} '{self.dir}' is in use by {who}: only one headstart process may write a run "
                f"directory at a time. Wait for it to finish (or stop it), or choose another --output-dir. The "
                f"lock is released automatically when that process ends, even if it crashes."
            ) from None
        previous = _read_holder(fd)
        if previous:
            self.taken_over = previous
        record = {"pid": os.getpid(), "host": socket.gethostname(),
                  "started": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join(sys.argv)[:300]}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Empty the record and unlock; the file stays (unlinking it would let two writers lock two inodes)."""
        if self._fd is None:
            return
        import fcntl

        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def note(self) -> str | None:
        """A line for the console when a dead process's lock was taken over."""
        if not self.taken_over:
            return None
        t = self.taken_over
        return (f"Took over the lock of '{self.dir}' left by PID {t.get('pid')} on host {t.get('host')} (started "
                f"{t.get('started')}), which is no longer running.")

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def lock_holder(directory: str | Path, name: str = LOCK_FILE) -> dict[str, Any] | None:
    """The record of the live process that holds ``directory``'s lock (``{}`` if it wrote none), else None.

    Only looks: no file is created or written, and the probe's shared lock is dropped at once."""
    import fcntl

    try:
        fd = os.open(Path(directory) / name, os.O_RDONLY)
    except OSError:
        return None  # no lock file: nobody ever locked it
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            return _read_holder(fd) if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK) else None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _read_holder(fd: int) -> dict[str, Any]:
    try:
        data = os.pread(fd, 4096, 0)
        record = json.loads(data.decode()) if data.strip() else {}
    except (OSError, ValueError, UnicodeDecodeError):
        return {}
    return record if isinstance(record, dict) else {}


def prepare_run_dir(path: str | Path, overwrite: bool = False, resume: bool = False) -> tuple[Path, RunLock]:
    """Lock ``path`` and make it ready: a new run, ``--overwrite`` (emptied), or ``--resume`` (kept).

    The lock comes first, so a second writer is refused before anything is deleted or read. The caller
    releases the returned lock when the run ends.
    """
    run = Path(path)
    if overwrite and resume:
        raise RunDirError("--overwrite and --resume contradict each other: --resume continues the run in "
                          f"'{run}', --overwrite deletes it and starts again. Pass one of them.")
    if run.exists() and not run.is_dir():
        raise RunDirError(
            f"The run directory '{run}' is a file, not a directory. Choose another --output-dir (output_dir)."
        )
    if resume and not run.is_dir():
        raise RunDirError(f"Cannot resume: the run directory '{run}' does not exist (resolved to {run.resolve()}). "
                          f"Run without --resume to start it.")
    lock = RunLock(run).acquire()
    try:
        _prepare_locked(run, overwrite, resume)
    except BaseException:
        lock.release()
        raise
    return run, lock


def _prepare_locked(run: Path, overwrite: bool, resume: bool) -> None:
    last = run / "checkpoints" / "last.ckpt"
    done = epochs_done(run)
    finished = (run / "summary.json").exists()
    if resume:
        if not last.exists():
            why = ("the run finished (summary.json) and its training state was dropped after success (pass "
                   "--keep-last to keep it); its best weights are in checkpoints/best.safetensors"
                   if finished else
                   "no epoch of the earlier run finished, so there is nothing to continue from")
            raise RunDirError(f"Cannot resume '{run}': '{last}' does not exist: {why}. Pass --overwrite instead "
                              f"of --resume to train again from the start, or choose another --output-dir.")
        (run / FAILED_FILE).unlink(missing_ok=True)
        return
    if not run.exists() or _is_empty_skeleton(run):
        if run.exists():
            (run / FAILED_FILE).unlink(missing_ok=True)
        _make_dirs(run)
        return
    if not overwrite:
        failed = _failure_line(run)
        if last.exists() and not finished:
            raise RunDirError(
                f"The run directory '{run}' holds an interrupted run: {done} epoch(s) done, saved in "
                f"checkpoints/last.ckpt. Add --resume to the same command to continue it from epoch {done + 1}, "
                f"or pass --overwrite to start again (the finished epochs are lost), or choose another --output-dir."
            )
        raise RunDirError(
            f"The run directory '{run}' already exists and is not empty"
            + (f" (an earlier attempt failed: {failed})" if failed else "")
            + "; headstart never overwrites a run. Pass --overwrite to replace it"
            + (", --resume to continue it" if last.exists() else "")
            + ", or choose another --output-dir."
        )
    if not (run / "config.yaml").exists() and not (run / "summary.json").exists():
        raise RunDirError(
            f"--overwrite refused: '{run}' does not look like a headstart run directory (no config.yaml or "
            f"summary.json), so deleting it could destroy unrelated files. Choose another --output-dir."
        )
    try:
        for child in run.iterdir():  # everything but the lock this process holds
            if child.name == LOCK_FILE:
                continue
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        _make_dirs(run)
    except OSError as exc:
        raise _unwritable(run, exc) from None


def _make_dirs(run: Path) -> None:
    try:
        (run / "checkpoints").mkdir(parents=True, exist_ok=True)
        (run / "plots").mkdir(exist_ok=True)
    except OSError as exc:
        raise _unwritable(run, exc) from None


def epochs_done(run: str | Path) -> int:
    """Epochs saved in ``checkpoints/last.ckpt`` (its sidecar records them; 0 when there is none)."""
    side = Path(run) / "checkpoints" / "last.json"
    try:
        return int(json.loads(side.read_text(encoding="utf-8")).get("epoch", 0))
    except (OSError, ValueError, TypeError, AttributeError):
        return 0


def _is_empty_skeleton(run: Path) -> bool:
    """True for an empty directory, or one holding only what a failed start left behind (``failed.json``,
    empty ``checkpoints/`` and ``plots/`` folders).

    ``prepare_run_dir`` creates ``checkpoints/`` and ``plots/`` before the data is read; when the run then
    stops on a data or config error, running it again (after the fix) must not call it an existing run.
    """
    for child in run.iterdir():
        if child.name in (LOCK_FILE, FAILED_FILE):
            continue
        if not (child.is_dir() and child.name in ("checkpoints", "plots") and not any(child.iterdir())):
            return False
    return True


def record_failure(run: Path, exc: BaseException, resume_how: str = "run the same command with --resume") -> None:
    """After a run stopped on an error: remove the empty folders ``prepare_run_dir`` made and, for an error
    (not Ctrl-C), write ``failed.json`` saying what failed and what to run next. Never raises: the original
    error is what the user must see."""
    from headstart.errors import RunInterrupted

    with contextlib.suppress(OSError):
        for name in ("checkpoints", "plots"):
            folder = run / name
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
    if not isinstance(exc, Exception) or isinstance(exc, RunInterrupted):
        return  # an interruption is not a failure: last.ckpt and the resume message say what to do
    done = epochs_done(run)
    if done:
        then = f"fix the cause, then {resume_how} to continue from epoch {done + 1} (checkpoints/last.ckpt)"
    elif _is_empty_skeleton(run):
        then = "fix the cause, then run the same command again: this directory is reused as it is"
    else:
        then = "fix the cause, then run the same command with --overwrite (no epoch was saved)"
    record = {"error": type(exc).__name__, "message": str(exc)[:4000], "epochs_done": done,
              "failed_at": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join(sys.argv)[:300], "next": then}
    with contextlib.suppress(OSError):
        from headstart.fileio import write_json

        write_json(run / FAILED_FILE, record)


def _failure_line(run: Path) -> str | None:
    """The error recorded in ``failed.json`` (its first line), if an earlier attempt left one."""
    try:
        record = json.loads((run / FAILED_FILE).read_text(encoding="utf-8"))
        return f"{record.get('error')}: {str(record.get('message', '')).splitlines()[0][:200]}"
    except (OSError, ValueError, AttributeError, IndexError):
        return None


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


def resume_hint(run: Path, done: int, how: str = "run the same command with --resume") -> str:
    """What an interrupted run tells the user: which epochs are saved and how to resume (``how``)."""
    if done == 0:
        return (f"No epoch had finished, so nothing was saved; run the same command again with --overwrite to "
                f"start over (run directory {run}).")
    epochs = "Epoch 1 is" if done == 1 else f"Epochs 1-{done} are"
    return (f"{epochs} saved in {run / 'checkpoints' / 'last.ckpt'} (the unfinished epoch is dropped "
            f"and will be repeated). Resume: {how}.")
