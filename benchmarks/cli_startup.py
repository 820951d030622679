"""Wall time of ``headstart --help`` and ``headstart fit --help`` against ``python -c "import torch"``.

Every measurement is a fresh subprocess (nothing stays imported between runs); the commands take turns
round by round, so a busy moment on the machine hits them all alike, and the table gives the median, min
and max of ``--rounds`` rounds. Targets: ``headstart --help`` under 1 s and below the torch import (the
CLI must not import torch, Lightning, transformers, pandas or pydantic before a command runs).

Writes ``benchmarks/results/cli_startup.md`` and ``cli_startup.json``. ``--baseline-src DIR`` adds the
``--help`` of another source tree for comparison, e.g. the code before a change::

    mkdir -p /tmp/before && git archive 525febc src | tar -x -C /tmp/before
    python benchmarks/cli_startup.py --baseline-src /tmp/before/src
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

__all__ = ["main", "measure"]

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
TARGET_S = 1.0


def _headstart() -> list[str]:
    """The console script when it is on PATH (what users run), else the module it calls."""
    exe = shutil.which("headstart")
    return [exe] if exe else [sys.executable, "-m", "headstart.cli.main"]


def commands(baseline_src: Path | None, baseline_label: str = "baseline") -> dict[str, tuple[list[str], dict[str, str]]]:
    """Label -> (argv, extra environment) of every measured command."""
    cli = _headstart()
    out: dict[str, tuple[list[str], dict[str, str]]] = {
        "headstart --help": ([*cli, "--help"], {}),
        "headstart fit --help": ([*cli, "fit", "--help"], {}),
        'python -c "import torch"': ([sys.executable, "-c", "import torch"], {}),
        'python -c "pass"': ([sys.executable, "-c", "pass"], {}),
    }
    if baseline_src is not None:
        env = {"PYTHONPATH": str(baseline_src)}
        out[f"headstart --help ({baseline_label})"] = ([sys.executable, "-m", "headstart.cli.main", "--help"], env)
    return out


def measure(argv: list[str], extra_env: dict[str, str], timeout: float) -> float:
    """Seconds from spawning ``argv`` to its exit (it must exit 0)."""
    env = {**os.environ, **extra_env, "HF_HUB_OFFLINE": "1"}
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout, check=False)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"`{shlex.join(argv)}` exited with {proc.returncode}:\n{proc.stderr[-2000:]}")
    return seconds


def machine_info() -> dict[str, Any]:
    torch_version = subprocess.run([sys.executable, "-c", "import torch; print(torch.__version__)"],
                                   capture_output=True, text=True, check=False).stdout.strip() or "not installed"
    load = [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None
    return {"nproc": os.cpu_count(), "python": platform.python_version(), "torch": torch_version,
            "platform": platform.platform(), "load_average_at_start": load}


def _row(label: str, times: list[float], torch_median: float) -> dict[str, Any]:
    med = statistics.median(times)
    return {"command": label, "median_s": round(med, 3), "min_s": round(min(times), 3),
            "max_s": round(max(times), 3), "ratio_to_torch_import": round(med / torch_median, 3),
            "runs_s": [round(t, 3) for t in times]}


def write_results(rows: list[dict[str, Any]], info: dict[str, Any], rerun: str, rounds: int,
                  baseline: str | None = None) -> tuple[Path, Path]:
    by_label = {r["command"]: r for r in rows}
    help_s = by_label["headstart --help"]["median_s"]
    torch_s = by_label['python -c "import torch"']["median_s"]
    fit_help_s = by_label["headstart fit --help"]["median_s"]
    targets = [
        ("`headstart --help` median under 1 s", help_s, help_s < TARGET_S),
        ("`headstart fit --help` median under 1 s", fit_help_s, fit_help_s < TARGET_S),
        ("`headstart --help` below the torch import", help_s / torch_s, help_s < torch_s),
    ]
    lines = [
        "# CLI startup time",
        "",
        f"Made with `{rerun}` on {datetime.now().strftime('%Y-%m-%d %H:%M:%S')}: every command a fresh "
        f"subprocess, the commands taking turns over {rounds} rounds; seconds of wall time.",
        "",
        f"Machine: {info['nproc']} logical CPUs, Python {info['python']}, torch {info['torch']}, "
        f"{info['platform']}; load average at start {info['load_average_at_start']} (the machine is shared, "
        f"so the max column carries other processes' noise).",
        "",
        "| command | median s | min s | max s | ratio to torch import |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| `{r['command']}` | {r['median_s']:.3f} | {r['min_s']:.3f} | {r['max_s']:.3f} | "
              f"{r['ratio_to_torch_import']:.3f} |" for r in rows]
    if baseline:
        lines += ["", baseline]
    lines += ["", "| target | value | met |", "|---|---|---|"]
    lines += [f"| {name} | {value:.3f} | {'yes' if met else 'NO'} |" for name, value, met in targets]
    lines += [
        "",
        "`python -c \"pass\"` is the interpreter's own start (the floor). `headstart --help` imports typer and "
        "the stdlib-only `headstart.errors` / `headstart.logsetup`; `headstart fit --help` also imports pydantic, "
        "which typer (0.29) uses to convert every option value of the command it parses. torch, Lightning, "
        "transformers and pandas load only when a command runs.",
        "",
    ]
    md, js = RESULTS / "cli_startup.md", RESULTS / "cli_startup.json"
    RESULTS.mkdir(parents=True, exist_ok=True)
    md.write_text("\n".join(lines), encoding="utf-8")
    payload = {"rerun": rerun, "rounds": rounds, "machine": info, "rows": rows,
               "targets": [{"target": n, "value": round(v, 3), "met": m} for n, v, m in targets]}
    js.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return md, js


def main(argv: list[str] | None = None) -> int:
    """Measure, print the table, write the results; exit 1 when a target is missed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="Runs of each command (medians of these).")
    parser.add_argument("--timeout", type=float, default=300.0, help="Seconds one run may take.")
    parser.add_argument("--baseline-src", type=Path, default=None,
                        help="Another source tree's src/ to time `headstart --help` from (PYTHONPATH).")
    parser.add_argument("--baseline-label", default="baseline",
                        help="Name of that tree in the table, e.g. 'before, 525febc'.")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}.")
    cmds = commands(args.baseline_src, args.baseline_label)
    info = machine_info()
    for cmd, env in cmds.values():  # warm the page cache and the .pyc files: not timed
        measure(cmd, env, args.timeout)
    times: dict[str, list[float]] = {label: [] for label in cmds}
    for k in range(args.rounds):
        order = list(cmds) if k % 2 == 0 else list(reversed(cmds))  # alternate who goes first
        for label in order:
            times[label].append(measure(*cmds[label], args.timeout))
        print(f"round {k + 1}/{args.rounds}: " + ", ".join(f"{label} {times[label][-1]:.2f}s" for label in cmds),
              flush=True)
    torch_median = statistics.median(times['python -c "import torch"'])
    rows = [_row(label, ts, torch_median) for label, ts in times.items()]
    rerun = shlex.join(["python", "benchmarks/cli_startup.py", *(argv if argv is not None else sys.argv[1:])])
    baseline = None
    if args.baseline_src is not None:
        baseline = (f"`headstart --help ({args.baseline_label})` runs `python -m headstart.cli.main --help` with "
                    f"`PYTHONPATH={args.baseline_src}`: that source tree against the same installed packages "
                    f"(made with `git archive REV src | tar -x -C DIR`, see the docstring).")
    md, js = write_results(rows, info, rerun, args.rounds, baseline)
    print(md.read_text(encoding="utf-8"))
    print(f"Written: {md}, {js}")
    met = json.loads(js.read_text(encoding="utf-8"))["targets"]
    return 0 if all(t["met"] for t in met) else 1


if __name__ == "__main__":
    sys.exit(main())
