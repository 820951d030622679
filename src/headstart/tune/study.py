"""The Optuna study behind ``headstart tune``: its storage, sampler and pruner, and trials left running.

Storage is any database URL Optuna accepts; the default is SQLite in the tune directory (``study.db``), so a
rerun of the same command continues the same study. Several machines share one study by giving every
command the same ``--storage`` (PostgreSQL, MySQL): Optuna's storage is the only coordination there is.

A trial whose process died stays ``RUNNING`` in the storage. Two ways find it: trials of this machine and
this tune directory are known dead as soon as the directory's lock is ours (no other command of ours can be
running them); trials of other machines are found by Optuna's heartbeat (no beat for ``GRACE_S``). Either
way the trial is marked failed and Optuna's ``RetryHeartbeatStaleTrialCallback`` queues it again with the
same params and the epochs it had reported, where ``headstart tune`` resumes it from its ``last.ckpt``.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from headstart.errors import ConfigError

__all__ = [
    "GRACE_S",
    "HEARTBEAT_S",
    "SURPLUS",
    "PrunerSpec",
    "count_toward_budget",
    "heartbeat",
    "import_optuna",
    "is_surplus",
    "make_pruner",
    "make_sampler",
    "open_storage",
    "previous_attempt",
    "recover_stale_trials",
    "storage_url",
    "this_machine",
]

HEARTBEAT_S = 30  # a running trial writes a heartbeat this often
GRACE_S = 120  # ... and another machine declares it dead after this long without one
MAX_RETRY = 3  # a trial that keeps dying is queued again at most this often
PRUNERS = ("median", "halving", "hyperband", "none")
SAMPLERS = ("tpe", "random")


def import_optuna() -> Any:
    """Optuna, quiet (its INFO lines would drown the trial lines), or a clear error on how to install it."""
    try:
        import optuna
    except ImportError:
        raise ConfigError("headstart tune needs Optuna: pip install -c constraints.txt -e \".[experiments]\" "
                          "(or pip install optuna).") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    # heartbeats are beaten by headstart's own thread around each run (trials are asked and told, not optimize())
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
    return optuna


def storage_url(storage: str | None, out: Path) -> str:
    """``--storage`` as given, else SQLite in the tune directory."""
    if storage:
        return storage
    return f"sqlite:///{(out / 'study.db').resolve()}"


def open_storage(url: str) -> Any:
    """An Optuna RDB storage with heartbeats and the retry of dead trials; a bad URL is a ConfigError."""
    optuna = import_optuna()
    if "://" not in url:
        raise ConfigError(f"--storage '{url}' is not a database URL; write e.g. sqlite:///path/study.db or "
                          f"postgresql://user:password@host/db (omit it for SQLite in the tune directory).")
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}  # workers wait for the lock
    try:
        return optuna.storages.RDBStorage(
            url, engine_kwargs=engine, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                max_retry=MAX_RETRY, inherit_intermediate_values=True))
    except Exception as exc:  # SQLAlchemy: unknown dialect, missing driver, unreachable server, bad file path
        raise ConfigError(f"--storage '{url}' could not be opened: {type(exc).__name__}: {exc}. Check the URL, "
                          f"that its database driver is installed (psycopg2 for postgresql, pymysql for mysql) and "
                          f"that the server is reachable.") from None


@dataclass(frozen=True)
class PrunerSpec:
    """Which pruner, plain data (worker processes rebuild it: ``should_prune`` asks the study's pruner)."""

    name: str = "median"
    startup_trials: int = 3  # median: trials that are never pruned, so there is a median to compare with
    warmup_epochs: int = 1  # epochs every trial runs before it can be pruned
    max_epochs: int = 3  # successive halving / Hyperband: the full budget of a trial

    def __post_init__(self) -> None:
        if self.name not in PRUNERS:
            from headstart.errors import did_you_mean

            raise ConfigError(f"--pruner '{self.name}' is unknown.{did_you_mean(self.name, PRUNERS)} "
                              f"Use one of {', '.join(PRUNERS)}.")


def make_pruner(spec: PrunerSpec) -> Any:
    optuna = import_optuna()
    min_resource = max(1, spec.warmup_epochs)
    if spec.name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=spec.startup_trials, n_warmup_steps=spec.warmup_epochs)
    if spec.name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=min_resource, reduction_factor=3)
    if spec.name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=min_resource,
                                              max_resource=max(spec.max_epochs, min_resource), reduction_factor=3)
    return optuna.pruners.NopPruner()


def make_sampler(name: str, seed: int) -> Any:
    """TPE (multivariate, grouped: it models a conditional space per strategy) or random search."""
    optuna = import_optuna()
    if name not in SAMPLERS:
        from headstart.errors import did_you_mean

        raise ConfigError(f"--sampler '{name}' is unknown.{did_you_mean(name, SAMPLERS)} Use one of "
                          f"{', '.join(SAMPLERS)}.")
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True)


def this_machine() -> str:
    return socket.gethostname()


def _history(frozen: Any) -> list[int]:
    import optuna

    return list(optuna.storages.RetryHeartbeatStaleTrialCallback.retry_history(frozen))


def _retried(trials: list[Any]) -> set[int]:
    """Numbers of failed trials that were queued again (their retry lists them in its retry history)."""
    return {n for t in trials for n in _history(t)}


SURPLUS = "surplus"  # user attr of a trial asked after the study was full (a race between machines)


def _counted(trials: list[Any]) -> list[int]:
    from optuna.trial import TrialState

    retried = _retried(trials)
    return sorted(t.number for t in trials if t.state != TrialState.WAITING and t.number not in retried
                  and not t.user_attrs.get(SURPLUS))


def count_toward_budget(trials: list[Any]) -> int:
    """Trials that use up ``--n-trials``: finished, pruned, failed or running, not those retried (their retry
    counts instead), those waiting in the queue, nor surplus ones."""
    return len(_counted(trials))


def is_surplus(study: Any, number: int, n_trials: int) -> bool:
    """True when trial ``number``, just asked, is beyond the study's ``n_trials``: two machines asked for the last
    place at once. The lower numbers keep their places, so every machine reaches the same verdict."""
    counted = _counted(study.get_trials(deepcopy=False))
    return number in counted and counted.index(number) >= n_trials


def recover_stale_trials(study: Any, out: Path) -> list[int]:
    """Fail and queue again the trials left running by a dead command of this tune directory (the caller holds
    its lock), then those other machines stopped beating for; returns the numbers failed here."""
    optuna = import_optuna()
    from optuna.trial import TrialState

    ours = str(out.resolve())
    failed = []
    retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY, inherit_intermediate_values=True)
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if t.user_attrs.get("machine") == this_machine() and t.user_attrs.get("tune_dir") == ours:
            study.tell(t.number, state=TrialState.FAIL)
            retry(study, next(x for x in study.get_trials(deepcopy=False) if x.number == t.number))
            failed.append(t.number)
    optuna.storages.fail_stale_trials(study)
    return failed


def previous_attempt(study: Any, number: int) -> int | None:
    """The number of the failed trial that trial ``number`` retries (its run directory is resumed), or None."""
    frozen = next(t for t in study.get_trials(deepcopy=False) if t.number == number)
    history = _history(frozen)
    return history[-1] if history else None


@contextmanager
def heartbeat(storage: Any, trial_id: int, interval: float = HEARTBEAT_S) -> Iterator[None]:
    """Beat for a running trial until the block ends (a killed process stops beating: other machines then see it
    stale after ``GRACE_S``)."""
    done = threading.Event()

    def beat() -> None:
        while True:
            with contextlib.suppress(Exception):  # a missed beat is retried; the run must not die of it
                storage.record_heartbeat(trial_id)
            if done.wait(interval):
                return

    thread = threading.Thread(target=beat, name=f"headstart-heartbeat-{trial_id}-{os.getpid()}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(timeout=5)
