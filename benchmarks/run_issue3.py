"""Issue 3 performance suite in one command: GFLOP/s, feature cache, HF Trainer comparison.

    python benchmarks/run_issue3.py            # full run, about an hour on 2 cores
    python benchmarks/run_issue3.py --quick    # smoke settings, a few minutes

Runs ``bench_flops``, ``bench_cache`` and ``bench_trainer`` (each alternates its sides in fresh worker
subprocesses and reports medians and ratios) and writes ``benchmarks/results/issue3_perf.json`` plus
``issue3_perf.md`` (``issue3_perf_quick.*`` with --quick): every figure, the command that made it, and one
table of the issue's targets with how far each is from its bound. ``--only`` reruns some parts and keeps
the others from the existing JSON. Needs ``../shared/data/sst2``; skips cleanly without it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

import bench_cache
import bench_flops
import bench_trainer
from _common import RESULTS, data_available, fmt, skip_message, write_json

PARTS = ("flops", "cache", "trainer")


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's acceptance figures, each with value, bound, met and the gap to the bound."""
    rows: list[dict[str, Any]] = []
    tasks = result.get("trainer", {}).get("tasks", {})
    for name, tv in tasks.get("throughput", {}).get("targets", {}).items():
        rows.append({"target": name, **tv})
    for other in ("hf_best", "hf_default"):  # both sides train and evaluate alike until the target
        value = tasks.get("time_to_target", {}).get("ratios", {}).get(f"peak_rss_at_target_hs_over_{other}")
        if value is not None:
            rows.append({"target": f"peak RSS at 0.85 dev accuracy hs <= {other}", "value": value, "bound": 1.0,
                         "met": value <= 1.0})
    for task in ("linear_probe", "partial"):
        for name, tv in result.get("cache", {}).get("tasks", {}).get(task, {}).get("targets", {}).items():
            rows.append({"target": f"{task}: {name}", **tv})
    for row in rows:
        v, b = row["value"], row["bound"]
        row["gap"] = None if v is None else (v / b - 1.0)
    return rows


def to_markdown(result: dict[str, Any]) -> str:
    lines = [f"## Issue 3 performance{' (quick smoke settings)' if result['quick'] else ''}", "",
             f"Made with `{result['command']}` ({result['started']} to {result['finished']}); each part's worker "
             f"commands are in the JSON next to this file.", "", "| target | value | bound | met | off by |",
             "|---|---|---|---|---|"]
    for row in targets(result):
        gap = "-" if row["gap"] is None else f"{100 * row['gap']:+.1f} %"
        lines.append(f"| {row['target']} | {fmt(row['value'], 4)} | {row['bound']} | {row['met']} | {gap} |")
    lines.append("")
    for part, module in (("flops", bench_flops), ("cache", bench_cache), ("trainer", bench_trainer)):
        if part in result:
            lines += [module.to_markdown(result[part]), ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke settings (tiny subsets, one round)")
    p.add_argument("--only", nargs="+", choices=PARTS, default=list(PARTS))
    p.add_argument("--report-only", action="store_true", help="rewrite the markdown from the JSON")
    args = p.parse_args(argv)
    stem = f"issue3_perf{'_quick' if args.quick else ''}"
    json_path, md_path = RESULTS / f"{stem}.json", RESULTS / f"{stem}.md"
    if args.report_only:
        md_path.write_text(to_markdown(json.loads(json_path.read_text())), encoding="utf-8")
        return 0
    if not data_available():
        print(skip_message())
        return 0
    old = json.loads(json_path.read_text()) if json_path.exists() and args.only != list(PARTS) else {}
    command = "python benchmarks/run_issue3.py" + (" --quick" if args.quick else "")
    result: dict[str, Any] = {**old, "quick": args.quick, "command": command,
                              "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    repeats = 1 if args.quick else None
    for part in args.only:
        print(f"== {part} ==", flush=True)
        if part == "flops":
            result[part] = bench_flops.run(quick=args.quick)
        elif part == "cache":
            result[part] = bench_cache.run(quick=args.quick, repeats=repeats or 2)
        else:
            result[part] = bench_trainer.run(quick=args.quick, repeats=repeats or 3, ttt_repeats=1)
        result["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
        result["targets"] = targets(result)
        write_json(json_path, result)  # after every part: a crash later keeps what was measured
        md_path.write_text(to_markdown(result), encoding="utf-8")
    print(md_path.read_text(encoding="utf-8"))
    print(f"wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
