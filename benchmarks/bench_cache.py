"""Feature cache: training on the cache vs recomputing the frozen prefix, per epoch, same losses.

Two tasks on the packaged MiniLM (``benchmarks/configs/feature_cache_sst2.yaml``, seeded SST-2 subset):

* ``linear_probe``: every block frozen. Cached, the pooled 384-d features of train and val are computed
  once (before the first epoch, reported as the build) and every epoch trains the head on them. Reported:
  the cost of each epoch after the first as a fraction of an uncached epoch (target <= 2 %).
* ``partial``: the last 2 of 6 transformer layers trained (``strategy.train_last=2``). Cached, the token
  states after layer 3 (+ attention mask) are stored and each step runs layers 4-5 only. Reported: the
  per-epoch speed-up (target >= 1.8x) and both runs' losses side by side (per step and per epoch).

Sides run in fresh subprocesses (``cached`` with a new, empty cache directory each round, so the build is
paid and measured; ``uncached`` with ``cache.enabled=false``), alternating which goes first, ``repeats``
rounds; medians are reported. An epoch's time is the wall time from its first training batch to the end of
its validation (``MetricsCSV``'s ``epoch_time_s`` measures the same span); training and validation parts
are also given separately.

Run from the repo root:
    python benchmarks/bench_cache.py [--quick] [--repeats 2] [--tasks linear_probe partial]
Writes benchmarks/results/feature_cache.json (``--quick``: feature_cache_quick.json) and prints a markdown table.
Worker mode (the commands are in the results):
    python benchmarks/bench_cache.py --worker cached --task partial --cache-dir DIR --set KEY=VALUE ...
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # as a script or as benchmarks.bench_cache
from _common import (
    DEFAULT_THREADS,
    RESULTS,
    ROOT,
    RUNS,
    command_line,
    data_available,
    emit,
    fmt,
    machine_info,
    median,
    peak_rss_mb,
    ratio,
    run_worker,
    set_threads,
    skip_message,
    write_json,
)

CONFIG = "benchmarks/configs/feature_cache_sst2.yaml"
SCRIPT = "benchmarks/bench_cache.py"
SIDES = ("cached", "uncached")
TASKS = ("linear_probe", "partial")
STRATEGY = {"linear_probe": ["strategy.name=linear_probe"],
            "partial": ["strategy.name=partial", "strategy.train_last=2", "optim.lr=1e-4"]}
FULL: dict[str, dict[str, Any]] = {
    "linear_probe": {"train_subset": 8000, "epochs": 3},
    "partial": {"train_subset": 4000, "epochs": 2},
}
QUICK: dict[str, dict[str, Any]] = {
    "linear_probe": {"train_subset": 256, "epochs": 2},
    "partial": {"train_subset": 128, "epochs": 2},
}
TARGETS = {"linear_probe": 0.02, "partial": 1.8}


# ============================================================================================
# Parent.
# ============================================================================================
def run(quick: bool = False, repeats: int = 2, *, tasks: Sequence[str] = TASKS, threads: int = DEFAULT_THREADS,
        config: str = CONFIG, verbose: bool = True) -> dict[str, Any]:
    """Alternate cached/uncached workers for each task; settings, commands, per-round numbers, medians."""
    if not data_available():
        return {"benchmark": "feature_cache", "skipped": skip_message()}
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise ValueError(f"Unknown task(s) {unknown}; tasks: {TASKS}.")
    presets = QUICK if quick else FULL
    result: dict[str, Any] = {"benchmark": "feature_cache", "quick": quick, "config": config, "threads": threads,
                              "machine": machine_info(threads), "tasks": {},
                              "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    with tempfile.TemporaryDirectory(prefix="headstart_cache_bench_") as tmp:
        for task in tasks:
            s = presets[task]
            overrides = [*STRATEGY[task], f"data.train_subset={s['train_subset']}", f"trainer.epochs={s['epochs']}",
                         f"trainer.threads={threads}"]
            per_side: dict[str, list[dict[str, Any]]] = {side: [] for side in SIDES}
            commands: dict[str, list[str]] = {side: [] for side in SIDES}
            for r in range(repeats):
                for side in (SIDES if r % 2 == 0 else SIDES[::-1]):
                    cache_dir = Path(tmp) / f"{task}_r{r}"
                    cmd = [sys.executable, SCRIPT, "--worker", side, "--task", task, "--config", config,
                           "--run-dir", str(RUNS.relative_to(ROOT) / f"cache_{task}_{side}_r{r}"),
                           "--threads", str(threads), "--cache-dir", str(cache_dir),
                           *[a for o in overrides for a in ("--set", o)]]
                    out = run_worker(cmd, threads, 3600.0)
                    out["round"] = r
                    per_side[side].append(out)
                    commands[side].append(command_line(cmd).replace(str(cache_dir), "CACHE_DIR"))
                    if verbose:
                        print(f"[{task} round {r + 1}/{repeats}] {side}: {_one_line(out)}", flush=True)
            result["tasks"][task] = summarise(task, s, overrides, per_side, commands)
    result["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    return result


def summarise(task: str, s: dict[str, Any], overrides: Sequence[str], per_side: dict[str, list[dict[str, Any]]],
              commands: dict[str, list[str]]) -> dict[str, Any]:
    ok = {side: [r for r in runs if "error" not in r] for side, runs in per_side.items()}
    med: dict[str, dict[str, Any]] = {}
    for side, runs in ok.items():
        later = [e for r in runs for e in r["epochs"][1:]]
        every = [e for r in runs for e in r["epochs"]]
        med[side] = {
            "n": len(runs),
            "first_epoch_s": median([r["epochs"][0]["total_s"] for r in runs]),
            "later_epoch_s": median([e["total_s"] for e in later]),
            "later_epoch_train_s": median([e["train_s"] for e in later]),
            "later_epoch_val_s": median([e["val_s"] for e in later]),
            "epoch_s": median([e["total_s"] for e in every]),
            "epoch_train_s": median([e["train_s"] for e in every]),
            "setup_s": median([r["setup_s"] for r in runs]),
            "cache_build_s": median([r.get("cache_build_s") for r in runs]),
            "cache_mb": median([r.get("cache_mb") for r in runs]),
            "fit_wall_s": median([r["fit_wall_s"] for r in runs]),
            "peak_rss_mb": median([r["peak_rss_mb"] for r in runs]),
        }
    c, u = med.get("cached", {}), med.get("uncached", {})
    out: dict[str, Any] = {"settings": {**s, "overrides": list(overrides)}, "commands": commands,
                           "per_repeat": per_side, "median": med,
                           "errors": {k: [r for r in v if "error" in r] for k, v in per_side.items()
                                      if any("error" in r for r in v)}}
    if c and u:
        out["losses"] = compare_losses(ok["cached"][0], ok["uncached"][0])
        if task == "linear_probe":
            value = ratio(c["later_epoch_s"], u["later_epoch_s"])
            out["targets"] = {"cached epoch after the first / uncached epoch <= 0.02": {
                "value": value, "bound": TARGETS[task], "met": None if value is None else value <= TARGETS[task]}}
        else:
            value = ratio(u["epoch_s"], c["epoch_s"])
            out["targets"] = {"per-epoch speed-up uncached / cached >= 1.8x": {
                "value": value, "bound": TARGETS[task], "met": None if value is None else value >= TARGETS[task]}}
            out["train_only_speedup"] = ratio(u["epoch_train_s"], c["epoch_train_s"])
    return out


def compare_losses(cached: dict[str, Any], uncached: dict[str, Any]) -> dict[str, Any]:
    """Per-step and per-epoch losses of one cached and one uncached run of the same round."""
    a, b = cached["step_losses"], uncached["step_losses"]
    n = min(len(a), len(b))
    diffs = [abs(x - y) for x, y in zip(a[:n], b[:n], strict=True)]
    rel = [d / max(abs(y), 1e-12) for d, y in zip(diffs, b[:n], strict=True)]
    epochs = [{"epoch": i, **{f"{k}_{side}": run["epochs"][i].get(k) for side, run in (("cached", cached),
                                                                                     ("uncached", uncached))
                              for k in ("train_loss", "val_loss", "val_acc")}}
              for i in range(min(len(cached["epochs"]), len(uncached["epochs"])))]
    return {"steps_compared": n, "same_step_count": len(a) == len(b), "max_abs_diff": max(diffs, default=None),
            "max_rel_diff": max(rel, default=None), "first_steps": {"cached": a[:5], "uncached": b[:5]},
            "epochs": epochs}


def _one_line(out: dict[str, Any]) -> str:
    if "error" in out:
        return f"ERROR {out['error']}: {out.get('stderr_tail', '')[-400:]}"
    times = ", ".join(f"{e['total_s']:.1f}" for e in out["epochs"])
    build = f", cache built in {out['cache_build_s']:.1f} s" if out.get("cache_build_s") is not None else ""
    return f"epochs {times} s{build}, final train loss {out['epochs'][-1]['train_loss']:.5f}"


# ============================================================================================
# Worker.
# ============================================================================================
def worker(side: str, task: str, args: argparse.Namespace, t_start: float) -> dict[str, Any]:
    import pytorch_lightning as pl
    import torch

    from headstart.config import load_config, parse_override
    from headstart.experiments.fit import run_fit

    set_threads(args.threads)
    cfg = load_config(ROOT / args.config, [parse_override(o) for o in args.set])
    cfg.output_dir = str(args.run_dir.resolve())  # absolute: not read relative to the config's folder
    cfg.cache.enabled = side == "cached"
    cfg.cache.dir = str(args.cache_dir)
    marks: dict[str, Any] = {"epochs": [], "losses": []}

    class Timer(pl.Callback):
        def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            marks["train_start"] = time.perf_counter()

        def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            marks["epochs"].append({"start": time.perf_counter()})

        def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                               batch_idx: int) -> None:
            marks["losses"].append(outputs["loss"].detach())  # read back once, at the end

        def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            if not trainer.sanity_checking and marks["epochs"]:
                marks["epochs"][-1]["val_start"] = time.perf_counter()

        def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            e = marks["epochs"][-1]
            e["end"] = time.perf_counter()
            for key in ("train_loss", "val_loss", "val_acc"):
                value = trainer.callback_metrics.get(key)
                e[key] = None if value is None else float(value)

    t_fit = time.perf_counter()
    fit = run_fit(cfg, overwrite=True, verbose=False, callbacks=[Timer()])
    fit_wall = time.perf_counter() - t_fit
    epochs = []
    for i, e in enumerate(marks["epochs"]):
        val_start = e.get("val_start", e["end"])
        epochs.append({"epoch": i, "total_s": round(e["end"] - e["start"], 3),
                       "train_s": round(val_start - e["start"], 3), "val_s": round(e["end"] - val_start, 3),
                       **{k: e.get(k) for k in ("train_loss", "val_loss", "val_acc")}})
    cache = fit.summary.get("cache", {})
    entries = cache.get("entries", {}) if cache.get("used") else {}
    return {
        "epochs": epochs, "step_losses": [float(x) for x in torch.stack(marks["losses"]).tolist()],
        "setup_s": round(marks["train_start"] - t_start, 2), "fit_wall_s": round(fit_wall, 2),
        "cache_used": bool(cache.get("used")), "cache_plan": cache.get("plan"), "cache_reason": cache.get("reason"),
        "cache_build_s": round(sum(e["seconds"] for e in entries.values() if not e["hit"]), 2) if entries else None,
        "cache_mb": round(sum(e["bytes"] for e in entries.values()) / 2**20, 1) if entries else None,
        "test": fit.summary.get("test"), "threads": torch.get_num_threads(),
        "run_dir": str(args.run_dir),
    }


# ============================================================================================
# Reporting and CLI.
# ============================================================================================
def to_markdown(result: dict[str, Any]) -> str:
    if "skipped" in result:
        return result["skipped"]
    lines = [f"### Feature cache{' (quick smoke settings)' if result['quick'] else ''}", ""]
    for task, t in result["tasks"].items():
        st = t["settings"]
        lines += [f"**{task}** ({st['train_subset']} rows, {st['epochs']} epochs, overrides "
                  f"`{' '.join(st['overrides'])}`), medians of {max(v['n'] for v in t['median'].values())} rounds:",
                  "", "| side | epoch 1 s | later epochs s (train / val) | all epochs s | cache build s | cache MB | "
                  "fit wall s | peak RSS MB |", "|---|---|---|---|---|---|---|---|"]
        for side, v in t["median"].items():
            lines.append(f"| {side} | {fmt(v['first_epoch_s'])} | {fmt(v['later_epoch_s'])} "
                         f"({fmt(v['later_epoch_train_s'])} / {fmt(v['later_epoch_val_s'])}) | {fmt(v['epoch_s'])} | "
                         f"{fmt(v['cache_build_s'])} | {fmt(v['cache_mb'], 1)} | {fmt(v['fit_wall_s'], 1)} | "
                         f"{fmt(v['peak_rss_mb'], 0)} |")
        lines.append("")
        for name, tv in t.get("targets", {}).items():
            digits = 4 if task == "linear_probe" else 2
            lines.append(f"- target {name}: **{fmt(tv['value'], digits)}**, met: {tv['met']}")
        if "train_only_speedup" in t:
            lines.append(f"- speed-up of the training part alone (validation excluded): "
                         f"{fmt(t['train_only_speedup'], 2)}x")
        loss = t.get("losses")
        if loss:
            lines += [f"- losses, round 1: {loss['steps_compared']} steps compared, max abs diff "
                      f"{loss['max_abs_diff']:.2e}, max rel diff {loss['max_rel_diff']:.2e}", "",
                      "| epoch | train loss cached | train loss uncached | val loss cached | val loss uncached | "
                      "val acc cached | val acc uncached |", "|---|---|---|---|---|---|---|"]
            for e in loss["epochs"]:
                lines.append(f"| {e['epoch']} | {fmt(e['train_loss_cached'], 6)} | {fmt(e['train_loss_uncached'], 6)} "
                             f"| {fmt(e['val_loss_cached'], 6)} | {fmt(e['val_loss_uncached'], 6)} | "
                             f"{fmt(e['val_acc_cached'], 4)} | {fmt(e['val_acc_uncached'], 4)} |")
        lines.append("")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny smoke settings")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    p.add_argument("--threads", type=int, default=DEFAULT_THREADS)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--worker", choices=SIDES, default=None, help=argparse.SUPPRESS)
    p.add_argument("--task", choices=TASKS, default="linear_probe", help=argparse.SUPPRESS)
    p.add_argument("--config", default=CONFIG, help=argparse.SUPPRESS)
    p.add_argument("--set", action="append", default=[], help=argparse.SUPPRESS)
    p.add_argument("--run-dir", type=Path, default=RUNS / "cache_worker", help=argparse.SUPPRESS)
    p.add_argument("--cache-dir", type=Path, default=None, help=argparse.SUPPRESS)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    t_start = time.perf_counter()
    args = _parser().parse_args(argv)
    if args.worker is not None:
        if args.cache_dir is None:
            raise SystemExit("--worker needs --cache-dir (an empty directory for the cached side)")
        out = worker(args.worker, args.task, args, t_start)
        out.update(side=args.worker, task=args.task, peak_rss_mb=peak_rss_mb(),
                   worker_inner_s=round(time.perf_counter() - t_start, 2))
        emit(out)
        return 0
    if not data_available():
        print(skip_message())
        return 0
    result = run(quick=args.quick, repeats=args.repeats, tasks=args.tasks, threads=args.threads)
    out_path = args.out or RESULTS / f"feature_cache{'_quick' if args.quick else ''}.json"
    write_json(out_path, result)
    print()
    print(to_markdown(result))
    print(f"\nwrote {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
