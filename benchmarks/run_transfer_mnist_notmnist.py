"""Transfer: MNIST (dataset A) -> notMNIST (dataset B) with a plain-torch ResNet, through the CLI.

1. ``headstart pretrain`` a ResNet on MNIST (``benchmarks/configs/transfer_mnist_pretrain.yaml``).
2. On notMNIST (10,000 images): a seeded 2,000-image test split, a 1,000-image validation split and a
   seeded 1,000-image training subset of the rest (disjoint; ``test_fraction`` / ``val_fraction`` /
   ``train_subset``), for seeds 0, 1, 2 (the seed picks the splits *and* the initialisation):
   ``scratch`` (same architecture, random init), ``finetune`` (full, from the MNIST checkpoint),
   ``linear_probe``, ``partial`` (last stage trainable) and ``cosface`` (full fine-tuning with a CosFace head).
3. Writes ``benchmarks/results/transfer_mnist_notmnist.{json,md}``: per-seed test accuracy / macro-F1 /
   Fisher ratio, means, the fine-tune minus scratch gap (target >= 3 points), each command and its wall time
   (per-run logs in ``benchmarks/results/transfer_mnist_notmnist_logs/``, gitignored).

Run from the repo root:
    python benchmarks/run_transfer_mnist_notmnist.py [--seeds 0 1 2] [--only finetune scratch]
    [--arch resnet14]   (both datasets; results in transfer_mnist_notmnist_resnet14.{json,md})
    [--pretrain-config benchmarks/configs/transfer_mnist_pretrain_generic.yaml]
                        (strong augmentation on A; transfer_mnist_notmnist_generic.{json,md})
    [--epochs 40 --skip-pretrain]   (B budget; transfer_mnist_notmnist[...]_e40.{json,md})
Needs ../shared/data/mnist and ../shared/data/notmnist_small_10k; skips cleanly without them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
LOGS = RESULTS / "transfer_mnist_notmnist_logs"  # gitignored
RUNS = ROOT / "benchmarks" / "runs" / "transfer_mnist_notmnist"  # gitignored
DATA = ROOT.parent / "shared" / "data"
PRETRAIN_CONFIG = "benchmarks/configs/transfer_mnist_pretrain.yaml"
FINETUNE_CONFIG = "benchmarks/configs/transfer_notmnist.yaml"
VARIANTS: dict[str, list[str]] = {
    "scratch": ["--strategy", "full"],
    "finetune": ["--strategy", "full", "--pretrain", "{pretrained}"],
    "linear_probe": ["--strategy", "linear_probe", "--pretrain", "{pretrained}", "--lr", "1e-2"],
    "partial": ["--strategy", "partial:2", "--pretrain", "{pretrained}"],
    "cosface": ["--strategy", "full", "--pretrain", "{pretrained}", "--set", "head.type=cosface",
                "--set", "head.scale=16", "--set", "head.margin=0.2"],
}
STEM = "transfer_mnist_notmnist"  # results file name (an --arch run adds _ARCH)
TARGET_GAP = 3.0  # accuracy points, fine-tune over scratch, mean over seeds


def _run(cmd: list[str], log: Path) -> tuple[int, float]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=dict(os.environ))
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(proc.stdout[-20000:] + "\n--- stderr ---\n" + proc.stderr[-20000:], encoding="utf-8")
    return proc.returncode, round(time.perf_counter() - t0, 1)


def _summary(run_dir: Path) -> dict[str, Any]:
    s = json.loads((run_dir / "summary.json").read_text())
    rows = (run_dir / "metrics.csv").read_text().splitlines()
    header, last = rows[0].split(","), rows[-1].split(",")
    fisher = float(last[header.index("val_fisher")]) if "val_fisher" in header else None
    return {"test_acc": s["test"].get("acc"), "test_f1": s["test"].get("f1"), "val_acc": s["val"].get("acc"),
            "val_fisher_last": fisher, "train_time_s": s["train_time_s"], "best_epoch": s["best_epoch"],
            "n_train": s["n_train"], "n_test": s["n_test"], "pretrain": s.get("pretrain")}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--only", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    p.add_argument("--skip-pretrain", action="store_true", help="reuse benchmarks/runs/transfer_mnist_notmnist[_ARCH]/mnist")
    p.add_argument("--arch", help="backbone.arch for pretraining and every variant (default: the configs')")
    p.add_argument("--pretrain-config", default=PRETRAIN_CONFIG,
                   help="dataset-A config (e.g. benchmarks/configs/transfer_mnist_pretrain_generic.yaml; a non-default "
                        "one writes transfer_mnist_notmnist_<name>.{json,md} and runs under "
                        "benchmarks/runs/transfer_mnist_notmnist_<name>)")
    p.add_argument("--epochs", type=int, help="trainer.epochs of every dataset-B run (default: the config's 20); "
                                                "writes transfer_mnist_notmnist[...]_e<N>.{json,md}")
    args = p.parse_args(argv)
    global RUNS, STEM
    if args.arch:
        RUNS, STEM = RUNS.with_name(f"{RUNS.name}_{args.arch}"), f"{STEM}_{args.arch}"
    if args.pretrain_config != PRETRAIN_CONFIG:
        tag = Path(args.pretrain_config).stem.removeprefix("transfer_mnist_pretrain").strip("_") or "custom"
        RUNS, STEM = RUNS.with_name(f"{RUNS.name}_{tag}"), f"{STEM}_{tag}"
    pretrained, pretrain_stem = RUNS / "mnist", STEM  # dataset A's checkpoint: shared by every dataset-B budget
    if args.epochs:
        STEM = f"{STEM}_e{args.epochs}"
    arch = ["--set", f"backbone.arch={args.arch}"] if args.arch else []
    budget = ["--set", f"trainer.epochs={args.epochs}"] if args.epochs else []
    if not ((DATA / "mnist").is_dir() and (DATA / "notmnist_small_10k").is_dir()):
        print(f"{DATA}/mnist or notmnist_small_10k is absent: nothing to benchmark.")
        return 0
    out: dict[str, Any] = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "runs": {}, "commands": {},
                           "argv": " ".join(argv if argv is not None else sys.argv[1:])}
    if not args.skip_pretrain:
        cmd = ["headstart", "pretrain", args.pretrain_config, *arch, "--output-dir", str(pretrained.relative_to(ROOT)),
               "--overwrite"]
        code, wall = _run(cmd, LOGS / f"{STEM}_pretrain.log")
        out["pretrain"] = {"command": " ".join(cmd), "exit_code": code, "wall_s": wall}
        if code != 0:
            print(f"pretraining failed (exit {code}); see {LOGS / f'{STEM}_pretrain.log'}", file=sys.stderr)
            return code
        out["pretrain"].update(_summary(pretrained))
    elif (RESULTS / f"{pretrain_stem}.json").exists():  # the checkpoint is reused: keep its pretraining record
        previous = json.loads((RESULTS / f"{pretrain_stem}.json").read_text()).get("pretrain")
        if previous:
            out["pretrain"] = {**previous, "reused": True}
    for variant in args.only:
        for seed in args.seeds:
            run_dir = RUNS / f"{variant}_s{seed}{f'_e{args.epochs}' if args.epochs else ''}"
            extra = [a.replace("{pretrained}", str(pretrained.relative_to(ROOT))) for a in VARIANTS[variant]]
            cmd = ["headstart", "fit", FINETUNE_CONFIG, *extra, *arch, *budget, "--seed", str(seed), "--output-dir",
                   str(run_dir.relative_to(ROOT)), "--overwrite"]
            code, wall = _run(cmd, LOGS / f"{STEM}_{variant}_s{seed}.log")
            row: dict[str, Any] = {"command": " ".join(cmd), "exit_code": code, "wall_s": wall}
            if code == 0:
                row.update(_summary(run_dir))
            out["runs"][f"{variant}/{seed}"] = row
            print(f"{variant} seed {seed}: exit {code}, test acc {row.get('test_acc')}, {wall} s", flush=True)
            _write(out)
    out["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    _write(out)
    print((RESULTS / f"{STEM}.md").read_text())
    return 0


def _means(out: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    means: dict[str, dict[str, float | None]] = {}
    for variant in VARIANTS:
        rows = [r for k, r in out["runs"].items() if k.split("/")[0] == variant and r.get("test_acc") is not None]
        if rows:
            means[variant] = {m: round(statistics.mean(r[m] for r in rows), 4) if all(r.get(m) is not None
                                                                                      for r in rows) else None
                              for m in ("test_acc", "test_f1", "val_fisher_last", "train_time_s")}
            means[variant]["seeds"] = len(rows)
    return means


def _write(out: dict[str, Any]) -> None:
    out["means"] = _means(out)
    ft, sc = out["means"].get("finetune"), out["means"].get("scratch")
    if ft and sc:
        gap = 100 * (ft["test_acc"] - sc["test_acc"])
        out["target"] = {"finetune_minus_scratch_points": round(gap, 2), "bound": TARGET_GAP, "met": gap >= TARGET_GAP}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{STEM}.json").write_text(json.dumps(out, indent=2), encoding="utf-8")
    lines = ["## MNIST -> notMNIST transfer", "",
             f"Made with `{' '.join(['python benchmarks/run_transfer_mnist_notmnist.py', out.get('argv', '')]).strip()}`"
             f" ({out['started']}"
             f"{' to ' + out['finished'] if 'finished' in out else ', running'}); 2,000-image test split, "
             f"1,000 training images per seed.", ""]
    if "pretrain" in out:
        pt = out["pretrain"]
        reused = " (checkpoint reused from an earlier run: --skip-pretrain)" if pt.get("reused") else ""
        lines += [f"Pretraining: `{pt['command']}`: test acc {pt.get('test_acc')}, {pt['wall_s']} s{reused}.", ""]
    lines += ["| variant | seed | test acc | test F1 | val Fisher | train s | wall s | command |", "|---|---|---|---|---|---|---|---|"]
    for key, r in out["runs"].items():
        variant, seed = key.split("/")
        lines.append(f"| {variant} | {seed} | {r.get('test_acc')} | {r.get('test_f1')} | {r.get('val_fisher_last')} | "
                     f"{r.get('train_time_s')} | {r['wall_s']} | `{r['command']}` |")
    lines += ["", "| variant | mean test acc | mean test F1 | mean val Fisher | seeds |", "|---|---|---|---|---|"]
    for variant, m in out["means"].items():
        lines.append(f"| {variant} | {m['test_acc']} | {m['test_f1']} | {m['val_fisher_last']} | {m['seeds']} |")
    if "target" in out:
        t = out["target"]
        lines += ["", f"Target: fine-tune - scratch >= {t['bound']} points (mean test accuracy): "
                      f"**{t['finetune_minus_scratch_points']}**, met: {t['met']}."]
    (RESULTS / f"{STEM}.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
