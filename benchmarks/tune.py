"""What `headstart tune` finds, and what pruning saves, on real data (2 CPU cores), through the CLI.

Parts (``--part``, in order):
  sst2        ``headstart tune`` on the SST-2 compare setup (packaged MiniLM, 2,000 training rows, 606 validation
              rows, the 872-row test set): strategy-conditional space ``benchmarks/configs/tune_sst2_space.yaml``,
              20 trials, median pruner.
  sst2_seeds  ``headstart compare TUNE_DIR --top 1 --seeds 42,43,44``: the best trial's config over 3 seeds, against
              the best hand-picked strategy of ``benchmarks/results/compare_sst2/`` (full, 0.8322 ± 0.0029).
  image       notMNIST (1,000 training images) from the MNIST checkpoint (pretrained here when missing):
              ``examples/tune_image_space.yaml``, 30 trials, then the best over 3 seeds (image_seeds); against the
              transfer benchmark's hand-picked variants, re-run on the tune's pinned split (image_handpicked).
Writes ``benchmarks/results/tune.json`` (every part's figures and commands) and ``tune.md``. Runs go to
``benchmarks/runs/tune/`` (gitignored); a rerun continues each study (finished trials are kept).

    python benchmarks/tune.py [--part sst2 sst2_seeds image image_seeds image_handpicked] [--trials 20]
                              [--image-trials 30]
Needs ../shared/data/sst2 (and mnist, notmnist_small_10k for image); skips cleanly without them.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
RUNS = ROOT / "benchmarks" / "runs" / "tune"
DATA = ROOT.parent / "shared" / "data"
MNIST_RUN = "benchmarks/runs/transfer_mnist_notmnist/mnist"
HAND_PICKED_SST2 = ("full (compare_sst2)", 0.8322, 0.0029)
HAND_PICKED_IMAGE = {"finetune (full)": 0.9028, "cosface": 0.9032, "partial:2": 0.8958, "linear_probe": 0.6120,
                     "scratch": 0.8817}


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "headstart.cli.main", *args]


def _shown(cmd: list[str]) -> str:
    return "headstart " + " ".join(cmd[3:])


def _run(cmd: list[str], log: Path) -> tuple[int, float]:
    print("$", _shown(cmd), flush=True)
    t0 = time.perf_counter()
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w", encoding="utf-8") as fh:
        code = subprocess.run(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT).returncode
    return code, round(time.perf_counter() - t0, 1)


def _parsed(text: str) -> Any:
    """A trials.csv cell as a number where it is one (3 significant digits), else as written."""
    try:
        return float(f"{float(text):.3g}") if "." in text or "e" in text else int(text)
    except ValueError:
        return text


def _study(out: Path) -> dict[str, Any]:
    """The figures of a finished study, from its trials.csv."""
    with (out / "trials.csv").open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    num = lambda r, k: float(r[k]) if r.get(k) not in (None, "") else None  # noqa: E731
    done = [r for r in rows if r["state"] == "COMPLETE"]
    pruned = [r for r in rows if r["state"] == "PRUNED"]
    best = max(done, key=lambda r: float(r["value"])) if done else None
    wall = sum(num(r, "wall_time_s") or 0 for r in rows)
    skipped_s = sum((num(r, "epochs_planned") - num(r, "epochs_run")) * num(r, "train_time_s") / num(r, "epochs_run")
                    for r in pruned if num(r, "epochs_run"))
    return {
        "trials": len(rows), "complete": len(done), "pruned": len(pruned),
        "failed": sum(r["state"] == "FAIL" for r in rows),
        "pruned_at_epochs": [int(float(r["pruned_at_epoch"])) for r in pruned],
        "trial_wall_s_sum": round(wall, 1), "pruning_saved_s_estimate": round(skipped_s, 1),
        "saved_share": round(skipped_s / (wall + skipped_s), 3) if wall else None,
        "best": None if best is None else {
            "number": int(best["number"]), "val": float(best["value"]), "test_acc": num(best, "test_acc"),
            "params": {k.removeprefix("param:"): _parsed(v) for k, v in best.items() if k.startswith("param:") and v}},
        "per_strategy": {s: {"trials": sum(r.get("param:strategy.name") == s for r in rows),
                             "best_val": max((float(r["value"]) for r in done if r.get("param:strategy.name") == s),
                                             default=None)}
                         for s in sorted({r.get("param:strategy.name") for r in rows if r.get("param:strategy.name")})},
    }


def _seeds(out: Path) -> dict[str, Any]:
    with (out / "results.csv").open(newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r["status"] == "done"]
    accs = [float(r["test_acc"]) for r in rows]
    return {"strategy": rows[0]["strategy"] if rows else None, "seeds": [int(r["seed"]) for r in rows],
            "test_acc": accs, "mean": round(statistics.mean(accs), 4) if accs else None,
            "std": round(statistics.stdev(accs), 4) if len(accs) > 1 else None}


def part_sst2(trials: int, timeout: int) -> dict[str, Any]:
    out = RUNS / "sst2"
    cmd = _cli("tune", "benchmarks/configs/compare_sst2.yaml", "--space", "benchmarks/configs/tune_sst2_space.yaml",
               "--n-trials", str(trials), "--timeout", str(timeout), "--pruner", "median", "--pruner-startup", "3",
               "--output-dir", str(out.relative_to(ROOT)))
    code, wall = _run(cmd, RUNS / "logs" / "sst2.log")
    return {"command": _shown(cmd), "exit_code": code, "wall_s": wall, **_study(out)}


def part_seeds(tune_dir: Path, seeds: str, name: str) -> dict[str, Any]:
    cmd = _cli("compare", str(tune_dir.relative_to(ROOT)), "--top", "1", "--seeds", seeds)
    code, wall = _run(cmd, RUNS / "logs" / f"{name}.log")
    return {"command": _shown(cmd), "exit_code": code, "wall_s": wall, **_seeds(tune_dir / "top-compare")}


def part_image(trials: int, timeout: int) -> dict[str, Any]:
    record: dict[str, Any] = {}
    if not (ROOT / MNIST_RUN / "pretrained.safetensors").exists():
        cmd = _cli("pretrain", "benchmarks/configs/transfer_mnist_pretrain.yaml", "--output-dir", MNIST_RUN,
                   "--overwrite")
        code, wall = _run(cmd, RUNS / "logs" / "mnist_pretrain.log")
        record["pretrain"] = {"command": _shown(cmd), "exit_code": code, "wall_s": wall}
    out = RUNS / "notmnist"
    cmd = _cli("tune", "benchmarks/configs/transfer_notmnist.yaml", "--space", "examples/tune_image_space.yaml",
               "--set", f"pretrain={MNIST_RUN}", "--n-trials", str(trials), "--timeout", str(timeout),
               "--pruner", "median", "--pruner-startup", "3", "--pruner-warmup", "3",
               "--output-dir", str(out.relative_to(ROOT)))
    code, wall = _run(cmd, RUNS / "logs" / "notmnist.log")
    return {**record, "command": _shown(cmd), "exit_code": code, "wall_s": wall, **_study(out)}


def _f(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4f}"


HAND_PICKED_GRID = "full,full[head.type=cosface,head.scale=16,head.margin=0.2],partial:2,full[pretrain=null]"


def part_image_handpicked() -> dict[str, Any]:
    """The transfer benchmark's hand-picked variants on the tune's pinned split and seeds (a fair comparison)."""
    out = RUNS / "notmnist_handpicked"
    cmd = _cli("compare", "benchmarks/configs/transfer_notmnist.yaml", "--set", f"pretrain={MNIST_RUN}",
               "--strategies", HAND_PICKED_GRID, "--seeds", "0,1,2", "--output-dir", str(out.relative_to(ROOT)))
    code, wall = _run(cmd, RUNS / "logs" / "image_handpicked.log")
    with (out / "results.csv").open(newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r["status"] == "done"]
    by: dict[str, list[float]] = {}
    for r in rows:
        by.setdefault(r["strategy"], []).append(float(r["test_acc"]))
    return {"command": _shown(cmd), "exit_code": code, "wall_s": wall,
            "test_acc": {k: {"values": v, "mean": round(statistics.mean(v), 4),
                             "std": round(statistics.stdev(v), 4) if len(v) > 1 else None} for k, v in by.items()}}


def _md(res: dict[str, Any]) -> str:
    lines = ["# `headstart tune` benchmarks (2 CPU cores)", "",
             "Made with `python benchmarks/tune.py` (figures also in `tune.json`). Trials are chosen on the "
             "validation split; the test split is reported only.", ""]
    for key, title in (("sst2", "SST-2, packaged MiniLM, 2,000 training rows"),
                       ("image", "notMNIST from the MNIST checkpoint, 1,000 training images")):
        s = res.get(key)
        if not s:
            continue
        lines += [f"## {title}", "", f"`{s['command']}` — exit {s['exit_code']}, {s['wall_s']:.0f} s wall.", ""]
        if s.get("pretrain"):
            lines += [f"(MNIST checkpoint made first: `{s['pretrain']['command']}`, "
                      f"{s['pretrain']['wall_s']:.0f} s.)", ""]
        b = s.get("best") or {}
        lines += [
            f"- Trials: {s['trials']} ({s['complete']} complete, {s['pruned']} pruned at epochs "
            f"{s['pruned_at_epochs']}, {s['failed']} failed).",
            f"- Best trial {b.get('number')}: val acc {_f(b.get('val'))}, test acc {_f(b.get('test_acc'))}; params "
            f"`{json.dumps(b.get('params'))}`.",
            f"- Pruning: about {s['pruning_saved_s_estimate']:.0f} s of training saved against running every pruned "
            f"trial to its last epoch (each pruned trial's seconds per epoch times the epochs it skipped), "
            f"{(s['saved_share'] or 0):.0%} of the {s['trial_wall_s_sum'] + s['pruning_saved_s_estimate']:.0f} s "
            f"all trials would have taken.",
            "- Per strategy (trials, best val acc): " + "; ".join(
                f"{k} {v['trials']}, {_f(v['best_val'])}" for k, v in s["per_strategy"].items()), ""]
        seeds = res.get(f"{key}_seeds")
        if seeds:
            lines += [f"Best trial over seeds: `{seeds['command']}` — test acc {', '.join(_f(a) for a in seeds['test_acc'])} "
                      f"(mean {seeds['mean']} ± {seeds['std']}), {seeds['wall_s']:.0f} s.", ""]
        if key == "sst2":
            name, mean, std = HAND_PICKED_SST2
            lines += [f"Best hand-picked strategy: {name}, test acc {mean} ± {std} (3 seeds).", ""]
        else:
            lines += ["Hand-picked variants of the transfer benchmark (mean test acc, 3 seeds; those vary the split "
                      "with the seed, the tune pins split seed 0): " + ", ".join(
                          f"{k} {v}" for k, v in HAND_PICKED_IMAGE.items()), ""]
            hand = res.get("image_handpicked")
            if hand:
                lines += [f"The same hand-picked variants on the tune's pinned split and seeds 0, 1, 2: `{hand['command']}` "
                          f"({hand['wall_s']:.0f} s):", "", "| variant | test acc (mean ± std) | per seed |", "|---|---|---|"]
                lines += [f"| {k} | {v['mean']:.4f} ± {v['std']:.4f} | {', '.join(_f(a) for a in v['values'])} |"
                          for k, v in hand["test_acc"].items()]
                lines.append("")
    if res.get("notes"):
        lines += ["## Notes", "", *(f"- {n}" for n in res["notes"]), ""]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--part", nargs="+", default=["sst2", "sst2_seeds", "image", "image_seeds", "image_handpicked"])
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--image-trials", type=int, default=30)
    ap.add_argument("--timeout", type=int, default=3600, help="seconds after which a study starts no new trial")
    args = ap.parse_args()
    if not (DATA / "sst2" / "train.tsv").exists():
        print(f"{DATA / 'sst2'} is absent: nothing to benchmark.")
        return 0
    path = RESULTS / "tune.json"
    res: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    for part in args.part:
        if part == "sst2":
            res["sst2"] = part_sst2(args.trials, args.timeout)
        elif part == "sst2_seeds":
            res["sst2_seeds"] = part_seeds(RUNS / "sst2", "42,43,44", "sst2_seeds")
        elif part == "image":
            if not (DATA / "notmnist_small_10k").exists() or not (DATA / "mnist").exists():
                print("mnist / notmnist_small_10k are absent: image part skipped.")
                continue
            res["image"] = part_image(args.image_trials, args.timeout)
        elif part == "image_handpicked":
            res["image_handpicked"] = part_image_handpicked()
        elif part == "image_seeds" and (RUNS / "notmnist" / "trials.csv").exists():
            res["image_seeds"] = part_seeds(RUNS / "notmnist", "0,1,2", "image_seeds")
        path.write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
        (RESULTS / "tune.md").write_text(_md(res), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
