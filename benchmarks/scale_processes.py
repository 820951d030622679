"""One process vs two (Lightning DDP, gloo) on this machine: training samples/s and peak RSS per process.

Both sides run ``headstart fit`` through the CLI on the same config: MiniLM full fine-tuning on a seeded SST-2
subset, global batch 32 (two processes take 16 rows each per step), the same epochs. One process gets every
core as threads; two processes share them (cores / 2 threads each, what ``trainer.threads`` unset gives).
Throughput is read from ``metrics.csv`` (the last epoch's time, which includes its validation pass over ~120
rows (0.2% of train.tsv): the first epoch includes warm-up), peak RSS of every
process from an exit hook (``sitecustomize`` on PYTHONPATH, one line per process), the validation metric from
``summary.json``. The sides alternate ``--repeats`` times; medians are reported.

    python benchmarks/scale_processes.py [--rows 640] [--epochs 2] [--repeats 1]

Writes ``benchmarks/results/scale_processes.json``; ``benchmarks/scale_report.py`` renders ``scale.md``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, command_line, data_available, machine_info, median, skip_message

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "benchmarks" / "configs" / "compare_sst2.yaml"
RUNS = ROOT / "benchmarks" / "runs" / "scale_processes"
EXIT_HOOK = r'''
import atexit, os, resource
def _peak():
    log = os.environ.get("HS_PEAK_LOG")
    if log:
        with open(log, "a") as fh:
            fh.write(f"{os.getpid()} {os.environ.get('LOCAL_RANK', '0')} "
                     f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f}\n")
atexit.register(_peak)
'''


def _run(devices: int, rows: int, epochs: int, tag: str) -> dict[str, Any]:
    run = RUNS / tag
    site = RUNS / "site"
    site.mkdir(parents=True, exist_ok=True)
    (site / "sitecustomize.py").write_text(EXIT_HOOK)
    peaks = RUNS / f"{tag}.peaks"
    peaks.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "headstart.cli.main", "fit", str(CONFIG), "--overwrite", "--output-dir", str(run),
           "--set", f"data.train_subset={rows}", "--set", f"trainer.epochs={epochs}",
           "--set", "data.val_fraction=0.002",  # ~120 rows: the epoch time is mostly training
           "--set", "trainer.accelerator=cpu", "--set", f"trainer.devices={devices}", "--no-cache"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
               HS_PEAK_LOG=str(peaks), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env.pop("OMP_NUM_THREADS", None)
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{tag} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    with (run / "metrics.csv").open(newline="") as fh:
        epochs_rows = list(csv.DictReader(fh))
    summary = json.loads((run / "summary.json").read_text())
    train_rows = summary["n_train"]
    last = float(epochs_rows[-1]["epoch_time_s"])
    per_process = sorted((line.split() for line in peaks.read_text().splitlines()), key=lambda p: p[1])
    return {
        "devices": devices, "tag": tag, "command": command_line(cmd), "wall_s": round(wall, 1),
        "last_epoch_s": last, "samples_per_s": round(train_rows / last, 2), "n_train": train_rows,
        "threads_per_process": summary["threads"], "processes": summary["processes"],
        "peak_rss_mb_per_process": {f"rank {rank}": float(mb) for _, rank, mb in per_process},
        "val_acc": summary["val"].get("acc"), "test_acc": summary["test"].get("acc"),
        "val_loss_per_epoch": [float(r["val_loss"]) for r in epochs_rows],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=640)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    if not data_available():
        print(skip_message())
        return
    results: list[dict[str, Any]] = []
    for r in range(args.repeats):
        order = (1, 2) if r % 2 == 0 else (2, 1)  # alternate, so neither side always runs on a warmer machine
        for devices in order:
            res = _run(devices, args.rows, args.epochs, f"p{devices}_r{r}")
            print(json.dumps({k: res[k] for k in ("tag", "samples_per_s", "peak_rss_mb_per_process", "val_acc")}))
            results.append(res)
    by = {d: [x for x in results if x["devices"] == d] for d in (1, 2)}
    one, two = (median([x["samples_per_s"] for x in by[d]]) for d in (1, 2))
    out = {
        "machine": machine_info(os.cpu_count() or 1), "rows": args.rows, "epochs": args.epochs,
        "runs": results, "samples_per_s": {"1 process": one, "2 processes": two},
        "speedup_2_over_1": round(two / one, 3) if one and two else None,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "scale_processes.json").write_text(json.dumps(out, indent=1))
    print(f"1 process {one} samples/s, 2 processes {two} samples/s (x{out['speedup_2_over_1']})")


if __name__ == "__main__":
    main()
