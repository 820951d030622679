"""`headstart compare` on SST-2 and `headstart stack` on AG News, through the CLI.

compare: ``benchmarks/configs/compare_sst2.yaml`` with linear_probe, partial:2 and full (each with its
own learning rates, in brackets) over seeds 42, 43, 44 on one seeded 2,000-row training subset and the
872-row test file; the target is under 45 minutes of wall time on 2 cores. Its summary.md, report.html and
results.csv are copied to ``benchmarks/results/compare_sst2/``.

stack: ``benchmarks/configs/stack_agnews_{probe,probe_cls,partial2,full}.yaml`` (MiniLM bases on the same
rows; ``--bases`` picks some), 5 stratified folds, LightGBM meta-learner (logistic regression alongside); ``stack.md`` is copied to
``benchmarks/results/stack_agnews.md``.

Each step writes ``benchmarks/results/compare_stack.json`` (command, wall time, exit code, machine) as it
ends; logs go to ``benchmarks/results/compare_stack_logs/``.
Run from the repo root:  python benchmarks/run_compare_stack.py [--only compare stack] [--workers N]
Needs ../shared/data/sst2 and ../shared/data/ag_news; skips a step whose data is absent.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
RUNS = ROOT / "benchmarks" / "runs" / "compare_stack"  # gitignored
DATA = ROOT.parent / "shared" / "data"
STRATEGIES = ("linear_probe[optim.lr=1e-2,optim.weight_decay=0,trainer.epochs=8],"
              "partial:2[optim.encoder_lr=1e-4],full")
STACK_BASES = ("probe", "probe_cls", "partial2", "full")  # benchmarks/configs/stack_agnews_<base>.yaml
COMPARE_LIMIT_S = 45 * 60


def _run(cmd: list[str], log: Path) -> tuple[int, float]:
    """Run ``cmd`` with an empty feature cache of its own: the wall time is what a first-time user waits."""
    log.parent.mkdir(parents=True, exist_ok=True)
    cache = RUNS / "feature_cache"
    shutil.rmtree(cache, ignore_errors=True)
    env = {**os.environ, "HEADSTART_CACHE_DIR": str(cache)}
    t0 = time.perf_counter()
    with open(log, "w", encoding="utf-8") as fh:
        code = subprocess.run(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, check=False, env=env).returncode
    return code, round(time.perf_counter() - t0, 1)


def compare(workers: int) -> dict[str, Any]:
    out = RUNS / "sst2_compare"
    cmd = ["headstart", "compare", "benchmarks/configs/compare_sst2.yaml", "--strategies", STRATEGIES,
           "--seeds", "42,43,44", "--baseline", "full", "--workers", str(workers),
           "--output-dir", str(out.relative_to(ROOT))]
    code, wall = _run(cmd, RESULTS / "compare_stack_logs" / "sst2_compare.log")
    dest = RESULTS / "compare_sst2"
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("summary.md", "report.html", "results.csv"):
        if (out / name).exists():
            shutil.copyfile(out / name, dest / name)
    return {"command": " ".join(f"'{c}'" if "[" in c else c for c in cmd), "exit_code": code, "wall_s": wall,
            "under_45_min": wall < COMPARE_LIMIT_S, "copied_to": str(dest.relative_to(ROOT))}


def stack(workers: int, bases: list[str]) -> dict[str, Any]:
    out = RUNS / "agnews_stack"
    configs = [f"benchmarks/configs/stack_agnews_{b}.yaml" for b in bases]
    cmd = ["headstart", "stack", *configs, "--folds", "5", "--meta", "lightgbm", "--workers", str(workers),
           "--output-dir", str(out.relative_to(ROOT))]
    code, wall = _run(cmd, RESULTS / "compare_stack_logs" / "agnews_stack.log")
    if (out / "stack.md").exists():
        shutil.copyfile(out / "stack.md", RESULTS / "stack_agnews.md")
    record: dict[str, Any] = {"command": " ".join(cmd), "exit_code": code, "wall_s": wall}
    if (out / "stack.json").exists():
        record["results"] = json.loads((out / "stack.json").read_text())["results"]
    return record


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", nargs="+", choices=("compare", "stack"), default=["compare", "stack"])
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--bases", nargs="+", choices=STACK_BASES, default=list(STACK_BASES), help="stack bases")
    args = p.parse_args(argv)
    path = RESULTS / "compare_stack.json"
    record: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    record["machine"] = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}
    steps = {"compare": ("sst2", compare), "stack": ("ag_news", lambda w: stack(w, args.bases))}
    for name in args.only:
        data, fn = steps[name]
        if not (DATA / data).is_dir():
            print(f"{DATA / data} is absent: skipping {name}.")
            continue
        started = time.strftime("%Y-%m-%d %H:%M:%S")
        record[name] = {"started": started, **fn(args.workers)}
        path.write_text(json.dumps(record, indent=2) + "\n")
        print(f"{name}: exit {record[name]['exit_code']}, {record[name]['wall_s']} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
