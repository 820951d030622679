"""Grids of runs (compare, stack) split over machines that share the output directory: ``--shard I/N``.

Shard I of N runs the jobs whose position in the grid's fixed order is I-1 modulo N. Round-robin rather
than blocks: every shard gets a mix of strategies and seeds (of cheap and costly runs), the same grid always
splits the same way, and the N shards cover the grid exactly once. Each shard has its own lock file and its
own state file, so shards never wait for each other; every run directory still has its own lock, so two
processes never train the same run. ``--collect`` trains nothing: once every run is finished it writes what
one unsharded command would have written.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from headstart.errors import ConfigError, RunDirError
from headstart.experiments.rundir import RunLock, lock_holder

__all__ = ["Shard", "collect_error", "describe_holder", "lock_grid", "owners", "parse_shard", "read_state",
           "running_shards", "shard_files", "shard_positions"]

_TAG = re.compile(r"shard-(\d+)-of-(\d+)")


@dataclass(frozen=True, order=True)
class Shard:
    """Shard ``index`` (1-based) of ``count``."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 1 <= self.index <= self.count:
            raise ConfigError(f"--shard {self.index}/{self.count} does not exist: shards are numbered 1 to N, so I "
                              f"must be between 1 and {max(self.count, 1)} (e.g. --shard 1/{max(self.count, 2)}).")

    @property
    def label(self) -> str:
        """As typed: ``1/2``."""
        return f"{self.index}/{self.count}"

    @property
    def tag(self) -> str:
        """As written into file names: ``shard-1-of-2``."""
        return f"shard-{self.index}-of-{self.count}"

    @property
    def lock_name(self) -> str:
        """This shard's lock file in the grid directory (the unsharded command's is ``.headstart.lock``)."""
        return f".headstart.{self.tag}.lock"

    def file(self, name: str) -> str:
        """``compare.json`` -> ``compare.shard-1-of-2.json``: this shard's copy of a grid-level file."""
        stem, dot, suffix = name.partition(".")
        return f"{stem}.{self.tag}{dot}{suffix}"

    def owns(self, position: int) -> bool:
        """Whether the job at 0-based ``position`` of the grid's order is this shard's."""
        return position % self.count == self.index - 1


def parse_shard(text: str | Shard) -> Shard:
    """``"1/2"`` -> ``Shard(1, 2)``; anything else is a ConfigError that shows the form."""
    if isinstance(text, Shard):
        return text
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not m:
        raise ConfigError(f"--shard '{text}' is not of the form I/N: give this machine's shard number and the "
                          f"number of shards, counted from 1, e.g. --shard 1/2 on one machine and --shard 2/2 on "
                          f"the other.")
    index, count = int(m[1]), int(m[2])
    if count < 1:
        raise ConfigError(f"--shard '{text}': the number of shards N is {count}; it must be at least 1 "
                          f"(e.g. --shard 1/2).")
    if not 1 <= index <= count:
        raise ConfigError(f"--shard '{text}': shard {index} does not exist among {count} shards; shards are "
                          f"numbered from 1, so I must be between 1 and {count} (--shard 1/{count} ... "
                          f"--shard {count}/{count}).")
    return Shard(index, count)


def shard_positions(n_jobs: int, shard: Shard) -> list[int]:
    """The 0-based positions of the grid's ``n_jobs`` jobs that ``shard`` runs."""
    return [p for p in range(n_jobs) if shard.owns(p)]


def shard_files(directory: Path, name: str) -> dict[Shard, Path]:
    """Every shard's copy of ``name`` (``compare.json``) present in ``directory``, by shard."""
    stem, dot, suffix = name.partition(".")
    found: dict[Shard, Path] = {}
    pattern = re.compile(re.escape(stem) + r"\." + _TAG.pattern + re.escape(dot + suffix))
    if directory.is_dir():
        for path in directory.iterdir():
            m = pattern.fullmatch(path.name)
            if m and 1 <= int(m[1]) <= int(m[2]):
                found[Shard(int(m[1]), int(m[2]))] = path
    return dict(sorted(found.items()))


def owners(position: int, counts: list[int]) -> str:
    """Which shard runs the job at ``position``, for each shard count in use: ``shard 2/2`` (or several)."""
    return " or ".join(f"shard {position % n + 1}/{n}" for n in counts)


def describe_holder(holder: dict[str, Any]) -> str:
    """A lock holder's record as words: ``PID 12 on host a, since 2025-01-01 10:00:00``."""
    if not holder:
        return "another process"
    return f"PID {holder.get('pid')} on host {holder.get('host')}, since {holder.get('started')}"


def running_shards(directory: Path) -> dict[Shard, dict[str, Any]]:
    """Shards whose process holds its lock in ``directory`` now, with the holder's record."""
    found: dict[Shard, dict[str, Any]] = {}
    if directory.is_dir():
        for path in directory.glob(".headstart.shard-*-of-*.lock"):
            m = _TAG.search(path.name)
            if m and 1 <= int(m[1]) <= int(m[2]):
                holder = lock_holder(directory, path.name)
                if holder is not None:
                    found[Shard(int(m[1]), int(m[2]))] = holder
    return dict(sorted(found.items()))


def read_state(path: Path) -> dict[str, Any]:
    """A grid's state file (``compare.json``, ``stack.shard-1-of-2.json``), empty when it does not exist."""
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def collect_error(command: str, out: Path, state_file: str, n_runs: int, unfinished: list[tuple[int, str, str]],
                  grid: dict[str, Any]) -> str:
    """``--collect`` with runs not finished: which, why, the shard that owns each, and what to run.

    ``unfinished``: (position in the grid, run name, why); ``grid``: what defines the grid (strategies, seeds...),
    compared with what each shard's state file recorded, to catch a --collect given other options."""
    shards = shard_files(out, state_file)
    counts = sorted({s.count for s in shards})
    lines = [f"{command} --collect: {len(unfinished)} of the {n_runs} runs in '{out}' are not finished, so there "
             f"is nothing to collect yet:"]
    for position, name, why in unfinished:
        lines.append(f"  - {name}" + (f" ({owners(position, counts)})" if counts else "") + f": {why}")
    for s, holder in running_shards(out).items():
        lines.append(f"Shard {s.label} is still running ({describe_holder(holder)}): wait for it to finish.")
    if not counts:
        lines.append(f"No shard has run in '{out}' (there is no {Shard(1, 2).file(state_file)} or the like): start "
                     f"the shards with --shard 1/N ... --shard N/N (or run without --shard), then --collect.")
        return "\n".join(lines)
    owning = sorted({(position % n + 1, n) for position, _, _ in unfinished for n in counts})
    lines.append(f"Fix: run {', '.join(f'--shard {i}/{n}' for i, n in owning)} again (the same command with --shard "
                 f"instead of --collect: finished runs are skipped, stopped ones resume from checkpoints/last.ckpt), "
                 f"then run --collect again.")
    for s, path in shards.items():
        seen = read_state(path)
        differs = [key for key, value in grid.items() if key in seen and seen[key] != value]
        if differs:
            lines.append(f"Note: shard {s.label} ran another grid ({'; '.join(f'{k} {seen[k]}' for k in differs)} in "
                         f"{path.name}; here {'; '.join(f'{k} {grid[k]}' for k in differs)}): give --collect the "
                         f"same config, options and --set values as the shards.")
    return "\n".join(lines)


def lock_grid(out: Path, command: str, shard: Shard | None, collect: bool) -> RunLock:
    """Lock a compare / stack directory: one unsharded process (or ``--collect``) per directory, or one
    process per shard; shards run side by side, but never beside an unsharded run of the same grid."""
    what = f"{command} directory"
    if shard is not None:
        holder = lock_holder(out)
        if holder is not None:
            raise RunDirError(f"The {what} '{out}' is in use by an unsharded `headstart {command}` or its --collect "
                              f"({describe_holder(holder)}), which trains or reads the same runs as shard "
                              f"{shard.label}. Wait for it to finish, then start the shard (or choose another "
                              f"--output-dir).")
        return RunLock(out, f"{what} (shard {shard.label})", name=shard.lock_name).acquire()
    running = running_shards(out)
    if running and not collect:
        busy = "; ".join(f"shard {s.label}: {describe_holder(h)}" for s, h in running.items())
        raise RunDirError(f"Shards of a `headstart {command}` are running in '{out}' ({busy}); an unsharded run "
                          f"would train the same runs. Wait for them to finish and run the same command with "
                          f"--collect, or start this machine as one of the shards (--shard I/N).")
    return RunLock(out, what).acquire()  # one unsharded run per directory (its runs lock their own)
