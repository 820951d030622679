"""Many fits from one command (compare, stack): each in its own worker process, or in this one.

A worker process per run gives every run a clean heap, its own peak-RSS figure and its own thread
budget, and one run's crash cannot take the others down. ``workers=0`` runs them here instead (tests,
debuggers). A job never raises: a failed run comes back as ``status: "failed: ..."`` so the rest go on,
and its output (and traceback, when it is a bug rather than bad input) is in its log file.

SIGINT / SIGTERM stop the whole batch the way they stop one fit: the runs in progress stop at their next
batch boundary keeping their last finished epoch (``status: "interrupted"``), no new run starts, and
``run_jobs`` raises ``RunInterrupted`` once they have returned, so the caller's rerun resumes them. Worker
processes get the stop from the parent (SIGTERM) and, on Linux, also when the parent dies (SIGKILL).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import multiprocessing
import os
import traceback
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from headstart.logsetup import setup_logging  # re-exported: worker processes and older imports use it here

__all__ = ["FitJob", "JobsInterrupted", "config_digest", "run_dir_digest", "run_job", "run_jobs", "setup_logging",
           "threads_per_worker"]


@dataclass
class FitJob:
    """One ``run_fit`` call: a validated config as plain data, how to treat its run directory, a log."""

    name: str
    config: dict[str, Any]
    log: Path
    overwrite: bool = False
    resume: bool = False
    extra: dict[str, Any] = field(default_factory=dict)  # the caller's bookkeeping, returned untouched
    splits: Any = None  # run_fit(splits=...): rows given in memory (a stack fold) instead of cfg.data
    predict: dict[str, Any] | None = None  # run_fit(predict=...): more row sets to predict
    # Entered around the run in the process that trains it; gives extra Lightning callbacks (a tune trial's
    # reporter, with its heartbeat beating while the run lasts). Must pickle (a bound method of plain data).
    attach: Callable[[], AbstractContextManager[list[Any]]] | None = None


def config_digest(config: dict[str, Any], extra: str = "") -> str:
    """What makes two runs the same run: the config without where it is written and how many threads or bars
    it uses (plus ``extra``, e.g. a stack's fold assignment). A finished run with the same digest is reused."""
    keep = {k: v for k, v in config.items() if k != "output_dir"}
    keep["trainer"] = {k: v for k, v in keep["trainer"].items() if k not in ("threads", "progress_bar")}
    return hashlib.sha256((json.dumps(keep, sort_keys=True) + extra).encode()).hexdigest()[:16]


def run_dir_digest(run_dir: Path) -> str | None:
    """The ``config_digest`` of the run a directory holds (its config.yaml), None when it holds none: whether a
    run directory was made from a given config, whatever state file says so."""
    import yaml

    try:
        return config_digest(yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8")))
    except (OSError, yaml.YAMLError, AttributeError, KeyError, TypeError):
        return None


def threads_per_worker(workers: int, threads: int | None = None) -> int | None:
    """Torch threads for each of ``workers`` parallel runs: the cores shared out, at least one each."""
    if threads is not None:
        return threads
    if workers <= 1:
        return None  # one run at a time: the run's own default (all cores)
    return max(1, (os.cpu_count() or 1) // workers)


_PARENT_STOP: Any = None  # in a worker process: the parent's stop event (set once it got SIGINT / SIGTERM)


def run_job(job: FitJob) -> dict[str, Any]:
    """Run one fit with its output going to ``job.log``; return ``{"status", "summary", "run_dir"}``."""
    from headstart.config import load_config
    from headstart.errors import HeadstartError, RunInterrupted
    from headstart.experiments.fit import run_fit
    from headstart.train.interrupt import stop_requested

    job.log.parent.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {"name": job.name, "status": "done", "summary": None,
                           "run_dir": job.config.get("output_dir"), "extra": job.extra}
    with open(job.log, "a", encoding="utf-8") as fh, contextlib.redirect_stdout(fh), \
            contextlib.redirect_stderr(fh):
        root = logging.getLogger()
        saved = root.handlers[:]  # the run's log lines go to its log file only, not the console
        root.handlers = [logging.StreamHandler(fh)]
        try:
            if stop_requested() is not None or (_PARENT_STOP is not None and _PARENT_STOP.is_set()):
                print("interrupted: the batch of runs was stopped before this run began")
                out["status"] = "not started"
                return out
            cfg = load_config(None, raw=job.config)
            with job.attach() if job.attach else contextlib.nullcontext([]) as callbacks:
                result = run_fit(cfg, overwrite=job.overwrite, resume=job.resume, verbose=True, splits=job.splits,
                                 predict=job.predict, callbacks=callbacks or None, one_process=True,
                                 resume_how="run the same command again (it skips finished runs and resumes "
                                            "this one)")
            out["summary"], out["run_dir"] = result.summary, str(result.run_dir)
        except RunInterrupted as exc:
            print(f"interrupted: {exc}")
            out["status"], out["exit_code"] = "interrupted", exc.exit_code
        except HeadstartError as exc:
            print(f"error: {exc}")
            out["status"] = f"failed: {exc}"
        except Exception as exc:  # a bug: keep the trace in the log, let the other runs go on
            traceback.print_exc(file=fh)
            out["status"] = f"failed: {type(exc).__name__}: {exc} (traceback in {job.log})"
        finally:
            root.handlers = saved
    return out


class JobsInterrupted(Exception):
    """Raised by ``run_jobs`` after a SIGINT / SIGTERM once the runs in progress have stopped."""

    def __init__(self, exit_code: int, finished: int, interrupted: int, not_started: int) -> None:
        super().__init__(f"{finished} runs finished, {interrupted} stopped mid-run, {not_started} not started")
        self.exit_code, self.finished, self.interrupted, self.not_started = (exit_code, finished, interrupted,
                                                                           not_started)

    def tally(self, what: str, finished_before: int, total: int) -> str:
        """The counts a stopped compare / stack reports: ``what`` names its runs ("runs", "fold runs")."""
        return (f"{finished_before + self.finished} of {total} {what} are finished, {self.interrupted} stopped "
                f"mid-run (kept up to their last finished epoch), {self.not_started} not started")

    @classmethod
    def count(cls, exit_code: int, statuses: list[str], n_jobs: int) -> JobsInterrupted:
        """From the statuses of the runs that returned (the others never started)."""
        return cls(exit_code, statuses.count("done"), statuses.count("interrupted"),
                   n_jobs - len(statuses) + statuses.count("not started"))


def _die_with_parent() -> None:
    """Linux: have the kernel send this worker SIGTERM when the parent dies (even by SIGKILL), so an orphan
    never trains on holding its run's lock; it stops at its next batch boundary like any interrupted run."""
    import ctypes
    import signal
    import sys

    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if os.getppid() == 1:  # the parent died before prctl: stop now
            os.kill(os.getpid(), signal.SIGTERM)


def _worker_init(stop: Any = None) -> None:
    from headstart.train.interrupt import StopRequest

    global _PARENT_STOP
    _PARENT_STOP = stop  # a queued run that starts after the stop must not start at all
    setup_logging()
    StopRequest().install()  # a stop that arrives while the run loads data or evaluates is kept, not lost
    _die_with_parent()


def run_jobs(jobs: Iterable[FitJob], workers: int, on_done: Callable[[FitJob, dict[str, Any]], None]) -> None:
    """Run ``jobs``, ``workers`` at a time in fresh processes (0: one by one in this process), calling
    ``on_done(job, result)`` here, in the parent, as each finishes (so results are saved as they come).
    ``jobs`` is read lazily, a job when a worker is free and after the ``on_done`` of the runs before it: a
    generator can decide the next run from the results so far (tune's sampler does).
    Raises ``JobsInterrupted`` after a SIGINT / SIGTERM, once the runs in progress have stopped."""
    from headstart.train.interrupt import StopRequest

    statuses: list[str] = []
    total = len(jobs) if hasattr(jobs, "__len__") else None  # type: ignore[arg-type]
    pulled = 0

    def next_jobs() -> Iterator[FitJob]:
        nonlocal pulled
        for job in jobs:
            pulled += 1
            yield job

    def finish(job: FitJob, result: dict[str, Any]) -> None:
        statuses.append(result["status"])
        on_done(job, result)

    if workers > 0:
        try:
            _run_in_workers(next_jobs(), workers, finish)
        except _Stopped as stop:
            raise JobsInterrupted.count(stop.exit_code, statuses, total if total is not None else pulled) from None
        return
    stop = StopRequest().install()
    code = None
    try:
        for job in next_jobs():
            result = run_job(job)  # during training the fit's own handler takes the signal: "interrupted"
            finish(job, result)
            if result["status"] == "interrupted" or stop.signum is not None:
                code = result.get("exit_code") or stop.exit_code
                break
    finally:
        stop.uninstall()
    if code is not None:
        raise JobsInterrupted.count(code, statuses, total if total is not None else pulled)


class _Stopped(Exception):
    def __init__(self, exit_code: int) -> None:
        super().__init__(exit_code)
        self.exit_code = exit_code


def _run_in_workers(jobs: Iterator[FitJob], workers: int, finish: Callable[[FitJob, dict[str, Any]], None]) -> None:
    import signal

    from headstart.train.interrupt import StopRequest

    # spawn, not fork: a forked child inherits torch's thread pools and locks mid-state; one task per child
    # gives each run a fresh process (clean heap, its own peak RSS).
    ctx = multiprocessing.get_context("spawn")
    stop_event = ctx.Event()
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init,
                               initargs=(stop_event,), max_tasks_per_child=1)
    pending: dict[Any, FitJob] = {}

    def forward(signum: int) -> None:
        stop_event.set()  # runs already queued to the pool return "not started"
        for future in list(pending):
            future.cancel()  # not started yet: never starts
        for proc in list(getattr(pool, "_processes", {}).values()):  # running: stop at the next batch
            with contextlib.suppress(OSError):
                os.kill(proc.pid, signal.SIGTERM)

    def fill() -> None:  # keep every worker busy, pulling the next job only when one is free
        while len(pending) < workers and not stop_event.is_set():
            job = next(jobs, None)
            if job is None:
                return
            pending[pool.submit(run_job, job)] = job

    stop = StopRequest(forward).install()
    try:
        with pool:
            fill()
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    job = pending.pop(future)
                    if future.cancelled():  # never started: counted as such by JobsInterrupted
                        continue
                    try:
                        result = future.result()
                    except Exception as exc:  # the worker process died (killed, out of memory)
                        result = {"name": job.name, "status": f"failed: worker process ended: {exc!r}",
                                  "summary": None, "run_dir": job.config.get("output_dir"), "extra": job.extra}
                    finish(job, result)
                fill()
        signum, code = stop.signum, stop.exit_code
    finally:
        stop.uninstall()
    if signum is not None:
        raise _Stopped(code)
