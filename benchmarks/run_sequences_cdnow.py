"""Sequence models against the classic baselines on the CDNOW repeat-purchase task (issue 15), in one run.

Rows, all scored on the same test customers of ``make_cdnow_task.py``'s fixed splits:

- ``gru_scratch_full``: headstart's ptls GRU over each customer's pre-cut purchases, trained from scratch
  (``configs/sequences_cdnow_scratch.yaml``, strategy full);
- ``gru_coles_gradual``: the same GRU pretrained with CoLES (``headstart pretrain --objective coles``,
  ``configs/sequences_cdnow_coles.yaml``) on every customer's pre-cut purchases (train + val + test events,
  no label read), then fine-tuned with ``gradual`` (one head-only epoch, then every block;
  ``configs/sequences_cdnow_coles_gradual.yaml``);
- ``gru_coles_linear_probe``: a linear head on the frozen CoLES encoder (its pooled features cached;
  ``configs/sequences_cdnow_coles_probe.yaml``);
- the baselines of ``sequences_cdnow_baselines.py`` (RFM + LightGBM, BG/NBD, purchase count, constant prior),
  called from there on the same splits.

Metrics come from each run's ``predictions/{val,test}.npz`` (class probabilities + labels) through
``sequences_cdnow_baselines.evaluate_scores``: test ROC-AUC, PR-AUC, accuracy at the val-tuned threshold and at
0.5; the headstart rows' wall time is the fit's own (``summary.json``: data loading, training, evaluation,
saving), their CPU time the whole command's. Seeds 0/1/2 fine-tune; CoLES pretrains once (seed 0) unless
``--pretrain-seeds`` lists more (then fine-tuning seed s uses the encoder pretrained with seed s).

Writes ``benchmarks/results/sequences_cdnow.{md,json}``; runs and logs go to ``benchmarks/runs/sequences_cdnow/``
(git-ignored), the derived data to ``benchmarks/data/cdnow/`` (git-ignored; built when missing). Run from the
repo root::

    python benchmarks/run_sequences_cdnow.py [--seeds 0 1 2] [--pretrain-seeds 0] [--reuse-pretrain]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_cdnow_task as task_mod  # sibling scripts, not a package
import sequences_cdnow_baselines as base

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "benchmarks" / "configs"
RUNS = ROOT / "benchmarks" / "runs" / "sequences_cdnow"  # must match output_dir / pretrain in the configs
TASK_DIR = task_mod.OUT  # the configs read ../data/cdnow/ (benchmarks/data/cdnow)
NAME = "sequences_cdnow"
THREADS = 2
PRETRAIN_CONFIG = "sequences_cdnow_coles.yaml"
# method -> (config, uses the CoLES encoder)
FINETUNES = {
    "gru_scratch_full": ("sequences_cdnow_scratch.yaml", False),
    "gru_coles_gradual": ("sequences_cdnow_coles_gradual.yaml", True),
    "gru_coles_linear_probe": ("sequences_cdnow_coles_probe.yaml", True),
}
BUCKETS = {"1 purchase": (1, 1), "2 purchases": (2, 2), "3+ purchases": (3, 10**9)}  # feature rows per customer


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def ensure_task(source: Path) -> dict[str, Any]:
    """The task files (built by make_cdnow_task.py when missing) plus ``events_all.csv`` for CoLES: the three
    events files concatenated, customers in id order (no label, every customer of every split)."""
    if not (TASK_DIR / "task.json").is_file():
        if not source.is_file():
            raise SystemExit(f"{TASK_DIR} has no task.json and {source} is absent: pass --source CDNOW_master.txt")
        print(f"building the task into {rel(TASK_DIR)}", flush=True)
        task_mod.build_task(source, TASK_DIR)
    parts = [TASK_DIR / f"events_{name}.csv" for name in task_mod.SPLITS]
    combined = TASK_DIR / "events_all.csv"
    if not combined.is_file() or combined.stat().st_mtime < max(p.stat().st_mtime for p in parts):
        frames = [pd.read_csv(p, dtype={"customer_id": str, "date": str}) for p in parts]
        events = pd.concat(frames).sort_values("customer_id", kind="stable")  # same-day order kept
        events.to_csv(combined, index=False, lineterminator="\n")
        print(f"wrote {rel(combined)}: {len(events)} events of {events['customer_id'].nunique()} customers", flush=True)
    return json.loads((TASK_DIR / "task.json").read_text())


def run_command(cmd: list[str], log: Path) -> tuple[float, float, int]:
    """Run ``cmd`` with its output in ``log``; returns wall s, the child's CPU s (user + sys) and the exit code."""
    env = dict(os.environ, OMP_NUM_THREADS=str(THREADS), MKL_NUM_THREADS=str(THREADS), PYTHONUNBUFFERED="1")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as fh:
        fh.write("$ " + shlex.join(cmd) + "\n")
        fh.flush()
        code = subprocess.run(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, env=env).returncode
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, code


def pretrain(seed: int, reuse: bool, commands: list[str]) -> dict[str, Any]:
    """CoLES on every customer's events; returns the run's facts (summary.json) with the command's timing."""
    run = RUNS / f"coles_seed{seed}"
    cmd = ["headstart", "pretrain", rel(CONFIGS / PRETRAIN_CONFIG), "--objective", "coles", "--seed", str(seed),
           "--output-dir", rel(run), "--overwrite"]
    commands.append(shlex.join(cmd))
    timing_file = RUNS / f"coles_seed{seed}.timing.json"  # the command's timing, read back by --reuse-pretrain
    if reuse and (run / "pretrained.safetensors").is_file() and (run / "summary.json").is_file():
        print(f"reusing {rel(run)} (--reuse-pretrain)", flush=True)
        timing = json.loads(timing_file.read_text()) if timing_file.is_file() else {}
        timing["reused"] = True
    else:
        print(f"pretraining CoLES, seed {seed} ...", flush=True)
        wall, cpu, code = run_command(cmd, RUNS / f"coles_seed{seed}.log")
        if code:
            raise RuntimeError(f"`{shlex.join(cmd)}` exited with {code}; see {rel(RUNS / f'coles_seed{seed}.log')}")
        timing = {"command_wall_s": round(wall, 2), "command_cpu_s": round(cpu, 2), "reused": False}
        timing_file.write_text(json.dumps(timing) + "\n")
    summary = json.loads((run / "summary.json").read_text())
    keep = ("objective", "best_epoch", "epochs_run", "best_value", "val", "sizes", "short_histories",
            "whole_history_views", "wall_time_s", "train_time_s", "peak_rss_mb", "total_params")
    facts = {k: summary.get(k) for k in keep} | timing | {"run_dir": rel(run), "seed": seed}
    print(f"  CoLES seed {seed}: best epoch {facts['best_epoch']}/{facts['epochs_run']}, val {facts['val']}, "
          f"whole-history views {facts['whole_history_views']}, fit wall {facts['wall_time_s']} s", flush=True)
    return facts


def positive_column(run: Path) -> int:
    classes = [str(c) for c in json.loads((run / "labels.json").read_text())["classes"]]
    if "1" not in classes:
        raise ValueError(f"{run}/labels.json has classes {classes}; expected the labels 0 and 1")
    return classes.index("1")


def customers_of(split: str, rows: np.ndarray) -> np.ndarray:
    """The customer id of each prediction row (``row``: the entity's 0-based data row in events_<split>.csv)."""
    ids = pd.read_csv(TASK_DIR / f"events_{split}.csv", usecols=["customer_id"], dtype=str)["customer_id"]
    return ids.to_numpy()[rows]


def finetune(method: str, seed: int, coles_run: Path | None, commands: list[str],
             data: dict[str, base.Split], scores: dict[str, np.ndarray]) -> base.Run:
    config, _ = FINETUNES[method]
    run = RUNS / f"{method}_seed{seed}"
    cmd = ["headstart", "fit", rel(CONFIGS / config), "--seed", str(seed), "--output-dir", rel(run), "--overwrite"]
    if coles_run is not None:
        cmd += ["--pretrain", rel(coles_run)]
    commands.append(shlex.join(cmd))
    print(f"{method} seed {seed} ...", flush=True)
    wall, cpu, code = run_command(cmd, RUNS / f"{method}_seed{seed}.log")
    if code:
        raise RuntimeError(f"`{shlex.join(cmd)}` exited with {code}; see {rel(RUNS / f'{method}_seed{seed}.log')}")
    r = score_run(method, seed, run, data, scores, cpu)
    r.extra = {"command_wall_s": round(wall, 2)} | r.extra | {"pretrain": None if coles_run is None else rel(coles_run)}
    return r


def score_run(method: str, seed: int, run: Path, data: dict[str, base.Split], scores: dict[str, np.ndarray],
              cpu_s: float) -> base.Run:
    """A finished run's val/test predictions -> ``base.evaluate_scores``; its test scores go into ``scores``
    (keyed ``method/seed``, in ``data["test"].labels`` order)."""
    summary = json.loads((run / "summary.json").read_text())
    col = positive_column(run)
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for split in ("val", "test"):
        npz = np.load(run / "predictions" / f"{split}.npz")
        y, p = npz["label"].astype(int), npz["proba"][:, col].astype(float)
        ids = customers_of(split, npz["row"])
        truth = data[split].labels.set_index("customer_id")["label"]
        if not np.array_equal(truth.loc[ids].to_numpy(), y):  # checks the row -> customer join and the classes
            raise ValueError(f"{run}/predictions/{split}.npz: its labels disagree with labels.csv")
        out[split] = (y, p)
        if split == "test":
            scores[f"{method}/{seed}"] = pd.Series(p, index=ids).loc[truth.index].to_numpy()
    return base.evaluate_scores(
        method, seed, out["val"][0], out["val"][1], out["test"][0], out["test"][1], True,
        float(summary["wall_time_s"]), cpu_s,
        train_time_s=summary.get("train_time_s"), best_epoch=summary.get("best_epoch"),
        epochs_run=summary.get("epochs_run"), val_auc=summary.get("val", {}).get("auc"),
        trainable_params=summary.get("trainable_params"), cache=summary.get("cache"), run_dir=rel(run))


def bucket_table(data: dict[str, base.Split], scores: dict[str, np.ndarray]) -> tuple[str, dict[str, Any]]:
    """Test ROC-AUC per history length (pre-cut transactions), mean over a method's seeds."""
    ev = data["test"].events.groupby("customer_id").size()
    n = ev.loc[data["test"].labels["customer_id"]].to_numpy()
    y = data["test"].y
    methods: dict[str, list[np.ndarray]] = {}
    for key, s in scores.items():
        methods.setdefault(key.split("/")[0], []).append(s)
    result: dict[str, Any] = {}
    head = "| method | " + " | ".join(f"{b} (ROC-AUC / PR-AUC)" for b in BUCKETS) + " |"
    lines = [head, "|---|" + "---|" * len(BUCKETS)]
    sizes = []
    for b, (lo, hi) in BUCKETS.items():
        m = (n >= lo) & (n <= hi)
        sizes.append(f"{b}: {int(m.sum())} customers, positive rate {y[m].mean():.3f}")
    for method, runs in methods.items():
        cells, result[method] = [], {}
        for b, (lo, hi) in BUCKETS.items():
            m = (n >= lo) & (n <= hi)
            aucs = [roc_auc_score(y[m], s[m]) for s in runs]
            aps = [average_precision_score(y[m], s[m]) for s in runs]
            result[method][b] = {"roc_auc": statistics.fmean(aucs), "pr_auc": statistics.fmean(aps)}
            cells.append(f"{statistics.fmean(aucs):.4f} / {statistics.fmean(aps):.4f}")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\nTest customers per bucket: " + "; ".join(sizes) + ".", result


def _count(size: str) -> int:
    """'22391 entities (46402 events)' -> 22391 (summary.json's sizes)."""
    return int(str(size).split()[0])


def _m(methods: dict[str, Any], k: str, metric: str = "roc_auc") -> float | None:
    return methods[k][metric]["mean"] if k in methods and methods[k][metric] else None


def analysis(methods: dict[str, Any], buckets: dict[str, Any], coles: list[dict[str, Any]]) -> list[str]:
    """Comparisons read off this run's numbers (nothing hard-coded)."""
    out = []
    order = sorted(methods, key=lambda k: -(methods[k]["roc_auc"] or {"mean": 0})["mean"])
    best = order[0]
    out.append(f"Best test ROC-AUC: `{best}` ({_m(methods, best):.4f}); ranking: " +
               ", ".join(f"`{k}` {_m(methods, k):.4f}" for k in order) + ".")
    ref = "rfm_lightgbm"
    for k in FINETUNES:
        if k in methods and ref in methods:
            d = {m: _m(methods, k, m) - _m(methods, ref, m) for m in ("roc_auc", "pr_auc", "accuracy")}
            out.append(f"`{k}` vs `{ref}`: ROC-AUC {d['roc_auc']:+.4f}, PR-AUC {d['pr_auc']:+.4f}, accuracy "
                       f"{d['accuracy']:+.4f} (seed std of `{k}`: ROC-AUC {methods[k]['roc_auc']['std']:.4f}).")
    if "gru_coles_gradual" in methods and "gru_scratch_full" in methods:
        d = _m(methods, "gru_coles_gradual") - _m(methods, "gru_scratch_full")
        sd = max(methods["gru_coles_gradual"]["roc_auc"]["std"], methods["gru_scratch_full"]["roc_auc"]["std"])
        verdict = "within twice the seed spread" if abs(d) <= 2 * sd else ("a gain" if d > 0 else "a loss")
        once = (" The spread covers fine-tuning seeds only: CoLES was pretrained once, so its own seed variance is "
                "not in it." if len(coles) == 1 else "")
        out.append(f"CoLES pretraining + gradual vs the same GRU from scratch: ROC-AUC {d:+.4f} ({verdict}; "
                   f"largest seed std {sd:.4f}).{once}")
    epochs = {k: [(r["extra"]["best_epoch"], r["extra"]["epochs_run"]) for r in methods[k]["runs"]]
              for k in FINETUNES if k in methods}
    if epochs:
        out.append("Best epoch by val ROC-AUC (the checkpoint that predicts), per seed: " + "; ".join(
            f"`{k}` " + ", ".join(f"{b}/{n}" for b, n in v) for k, v in epochs.items()) + ".")
    if coles:
        c = coles[0]
        wh, total = c["whole_history_views"], {k: _count(v) for k, v in c["sizes"].items()}
        out.append(f"CoLES (seed {c['seed']}): {wh.get('train')} of {total.get('train')} pretraining entities "
                   f"(and {wh.get('val')} of {total.get('val')} CoLES-val entities) have a single purchase, so every view is "
                   f"the whole history: they only serve as negatives. Best val_loss {c['best_value']:.4f} at epoch "
                   f"{c['best_epoch']}/{c['epochs_run']}, val recall@{c['objective']['split_count'] - 1} "
                   f"{c['val'].get('recall_top_k', float('nan')):.3f}.")
    if buckets and "1 purchase" in next(iter(buckets.values())):
        one = {k: v["1 purchase"]["roc_auc"] for k, v in buckets.items()}
        more = {k: v["3+ purchases"]["roc_auc"] for k, v in buckets.items()}
        out.append("Single-purchase customers (test ROC-AUC within the bucket): " +
                   ", ".join(f"`{k}` {v:.4f}" for k, v in sorted(one.items(), key=lambda kv: -kv[1])) +
                   "; 3+ purchases: " +
                   ", ".join(f"`{k}` {v:.4f}" for k, v in sorted(more.items(), key=lambda kv: -kv[1])) + ".")
    return out


DISCUSSION = [
    "What the GRU sees: per purchase log1p(number_of_cds), log1p(dollar_value) and the days since the "
    "customer's previous purchase (0 for the first). It never sees a calendar date, so the days from the last "
    "purchase to the cut (recency, the top LightGBM feature by gain) are known only up to the first-purchase "
    "date (any day in Q1 1997), and a single-purchase customer is one (cds, dollars, 0) event: the order of "
    "the first purchase within Q1, which RFM's recency/tenure carry, is invisible to it. The RFM features are "
    "the sufficient statistics BG/NBD needs; with a median of one purchase per customer there is little "
    "sequence left for an RNN to read beyond them.",
    "What CoLES can add here: its positives are sub-sequences of one customer, so it needs two or more "
    "purchases; 3 in 5 customers have one, and for them CoLES learns nothing but to be told apart from others. "
    "What it encodes (a customer's typical basket size, spend and purchase spacing) is what RFM summarises by "
    "hand. Sequence models pay off with long, rich histories (many events, categorical fields such as MCC "
    "codes, exact timestamps); CDNOW's first nine months give neither, so this task mainly tests that the "
    "pipeline matches the classic baselines, not that it beats them.",
]


def write_results(methods: dict[str, Any], task: dict[str, Any], coles: list[dict[str, Any]], bucket_md: str,
                  buckets: dict[str, Any], commands: list[str], failures: dict[str, str], timings: dict[str, float],
                  args: argparse.Namespace) -> tuple[Path, Path]:
    base.RESULTS.mkdir(parents=True, exist_ok=True)
    env = base.environment()
    env = {k: v for k, v in env.items() if k != "threads"} | {"lightgbm_threads": base.THREADS,
                                                               "torch_threads": THREADS}
    configs = {p.name: p.read_text() for p in sorted(CONFIGS.glob("sequences_cdnow_*.yaml"))}
    notes = analysis(methods, buckets, coles)
    payload = {"task": task, "methods": methods, "coles_pretraining": coles, "by_history_length": buckets,
               "failures": failures, "commands": commands, "timings_s": timings, "configs": configs,
               "seeds": args.seeds, "pretrain_seeds": args.pretrain_seeds, "analysis": notes, "environment": env}
    json_path = base.RESULTS / f"{NAME}.json"
    json_path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    c, d = task["counts"], task["definition"]
    pre_seeds = ",".join(str(s) for s in args.pretrain_seeds)
    md = [
        "# CDNOW repeat purchase: sequence models vs classic baselines",
        "",
        "## Task (benchmarks/make_cdnow_task.py)",
        "",
        f"- Features: {d['features']}. Label: {d['label']} (9 months, {base.WINDOW_WEEKS:g} weeks). "
        f"Entities: {d['entities']}.",
        f"- Split: {d['split']}; the same files feed every row.",
        f"- Source: `CDNOW_master.txt`, sha256 `{task['source']['sha256']}`, {c['source_rows']} rows.",
        "",
        base.counts_table(c),
        "",
        f"Customers by number of feature rows: {base.hist_line(c['customers_by_feature_rows'], c['customers'])}. "
        f"Median {c['feature_rows_per_customer']['median']:g} row per customer.",
        "",
        "## Results (test split)",
        "",
        base.results_table(methods),
        "",
        f"- `gru_*`: headstart's ptls GRU (hidden 64, 1 layer, linear head; inputs log1p(number_of_cds), "
        f"log1p(dollar_value), days since the previous purchase; batch norm on the inputs), fine-tuning seeds "
        f"{','.join(str(s) for s in args.seeds)}. `gru_coles_*` start from CoLES pretrained with seed(s) {pre_seeds}"
        + (" (once, shared by every fine-tuning seed)" if len(args.pretrain_seeds) == 1 else
           " (fine-tuning seed s uses the encoder pretrained with seed s)") + ".",
        "- Accuracy (val-tuned threshold): the threshold maximising val accuracy, applied to test (every row). "
        "Accuracy @0.5: for the GRUs, the argmax of the predicted class probabilities.",
        "- Wall s: for `gru_*`, the fit itself as summary.json records it (data loading, training, evaluation, "
        "saving + reload check), without CoLES pretraining (below) and without the ~5 s of Python/torch start-up; "
        "CPU s: the whole `headstart fit` process (user + sys). Baselines: features + fit + predict, data loading "
        f"excluded. All on {env['cpus']} CPUs shared with other jobs (wall times are noisy); {THREADS} torch "
        f"threads, {base.THREADS} LightGBM thread.",
        "- seeds `—`: deterministic method, one run.",
        "",
        "### CoLES pretraining (one-off cost of the `gru_coles_*` rows)",
        "",
        "| seed | entities (train / val) | whole-history views (train / val) | epochs (best) | best val_loss | "
        "val recall@k | fit wall s | command wall s | command CPU s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for f in coles:
        md.append(f"| {f['seed']} | {_count(f['sizes']['train'])} / {_count(f['sizes']['val'])} | "
                  f"{f['whole_history_views']['train']} / {f['whole_history_views']['val']} | "
                  f"{f['epochs_run']} ({f['best_epoch']}) | {f['best_value']:.4f} | "
                  f"{f['val'].get('recall_top_k', float('nan')):.3f} | {f['wall_time_s']} | "
                  f"{f.get('command_wall_s', '?')} | {f.get('command_cpu_s', '?')} |")
    if any(f.get("reused") for f in coles):
        md += ["", "Pretraining reused (`--reuse-pretrain`): the run dir of an earlier invocation of the same "
               "command; its timings are that invocation's (`benchmarks/runs/sequences_cdnow/coles_seed*.timing.json`)."]
    if coles:
        o = coles[0]["objective"]
        md += ["", f"CoLES settings: {o['split_count']} views per customer, {o['min_len']}..{o['max_len']} events "
               f"each ({o['sampling']}), short_histories {o['short_histories']}, {o['loss']} loss (margin "
               f"{o['margin']}, {o['neg_count']} hardest negatives), 64 customers (320 views) per batch. Data: "
               "`events_all.csv`, the events of all 23,570 customers (train + val + test, no label read); "
               "headstart carves 5% of them (seeded) as CoLES validation entities, which pick the exported epoch, "
               "so 95% are trained on. With min_len 1 a customer with 2+ purchases gives views of different "
               "lengths; a 1-purchase customer gives its whole history every time (counted above as whole-history "
               "views, kept as negatives: `drop` would need min_len 2, which also makes every 2-purchase view "
               "the whole history)."]
    md += ["", "## Test ROC-AUC / PR-AUC by history length", "", bucket_md, "",
           "## Analysis", ""] + [f"- {n}" for n in notes] + [f"- {n}" for n in DISCUSSION] + [""]
    if failures:
        md += ["## Methods that did not run", ""] + [f"- `{k}`: {v}" for k, v in failures.items()] + [""]
    md += ["## Time per part (this run)", "", "| part | wall s |", "|---|---|"]
    md += [f"| {k} | {v:.1f} |" for k, v in timings.items()]
    md += ["", "## Commands", "", "Everything above comes from:", "", "```",
           " ".join(["python benchmarks/run_sequences_cdnow.py", shlex.join(args.argv)]).strip(), "```", "",
           "which ran (from the repo root; logs in `benchmarks/runs/sequences_cdnow/*.log`):", "", "```",
           f"python benchmarks/make_cdnow_task.py   # when {rel(TASK_DIR)}/task.json is missing",
           *commands, "```", "",
           "Configs: `benchmarks/configs/sequences_cdnow_*.yaml` (copied into the json under `configs`).", "",
           "## Environment", "", ", ".join(f"{k} {v}" for k, v in env.items()), ""]
    md_path = base.RESULTS / f"{NAME}.md"
    md_path.write_text("\n".join(md))
    return json_path, md_path


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="fine-tuning (and LightGBM) seeds")
    ap.add_argument("--pretrain-seeds", type=int, nargs="+", default=[0],
                    help="CoLES seeds; one: shared by every fine-tuning seed, else one per fine-tuning seed")
    ap.add_argument("--reuse-pretrain", action="store_true",
                    help="keep an existing finished CoLES run dir instead of pretraining again")
    ap.add_argument("--source", type=Path, default=task_mod.SOURCE, help="CDNOW_master.txt (to build the task)")
    args = ap.parse_args(argv)
    args.argv = list(argv if argv is not None else sys.argv[1:])
    if len(args.pretrain_seeds) > 1 and set(args.pretrain_seeds) != set(args.seeds):
        raise SystemExit("--pretrain-seeds: give one seed, or the same seeds as --seeds")
    timings: dict[str, float] = {}
    t = time.perf_counter()
    task = ensure_task(args.source)
    data = base.load_task(TASK_DIR)
    timings["task files + loading"] = time.perf_counter() - t
    commands: list[str] = []
    failures: dict[str, str] = {}
    runs: list[base.Run] = []
    scores: dict[str, np.ndarray] = {}

    t = time.perf_counter()
    for name, step in (("rfm_lightgbm", lambda: base.run_rfm_lightgbm(data, args.seeds, scores)),
                       ("bgnbd", lambda: base.run_bgnbd(data, scores)),
                       ("frequency_only", lambda: base.run_frequency_only(data)),
                       ("constant_prior", lambda: base.run_constant_prior(data))):
        try:
            runs.extend(step())
        except Exception as exc:  # one missing package must not hide the other rows; the report says why
            failures[name] = f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
    commands.append("# baselines: sequences_cdnow_baselines.run_rfm_lightgbm / run_bgnbd / run_frequency_only / "
                    "run_constant_prior, called in-process")
    timings["baselines (in-process)"] = time.perf_counter() - t

    coles: list[dict[str, Any]] = []
    t = time.perf_counter()
    for seed in args.pretrain_seeds:
        try:
            coles.append(pretrain(seed, args.reuse_pretrain, commands))
        except Exception as exc:
            failures[f"coles_seed{seed}"] = f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
    if any(c.get("reused") for c in coles):  # this invocation only read the run dir: report the recorded time
        timings["CoLES pretraining (reused: the recorded command wall time)"] = sum(
            float(c.get("command_wall_s", 0.0)) for c in coles)
    else:
        timings["CoLES pretraining"] = time.perf_counter() - t
    done = {c["seed"] for c in coles}

    for method, (_, uses_coles) in FINETUNES.items():
        t = time.perf_counter()
        for seed in args.seeds:
            coles_seed = args.pretrain_seeds[0] if len(args.pretrain_seeds) == 1 else seed
            if uses_coles and coles_seed not in done:
                failures[f"{method}/{seed}"] = f"no CoLES encoder (seed {coles_seed} failed)"
                continue
            try:
                r = finetune(method, seed, RUNS / f"coles_seed{coles_seed}" if uses_coles else None, commands,
                             data, scores)
            except Exception as exc:
                failures[f"{method}/{seed}"] = f"{type(exc).__name__}: {exc}"
                traceback.print_exc()
                continue
            print(f"  {r.method} seed={r.seed} roc_auc={r.roc_auc:.4f} pr_auc={r.pr_auc:.4f} acc={r.accuracy:.4f} "
                  f"wall={r.wall_s:.1f}s (command {r.extra['command_wall_s']}s)", flush=True)
            runs.append(r)
        timings[f"{method} ({len(args.seeds)} seeds, commands)"] = time.perf_counter() - t

    methods = base.summarise_runs(runs)
    bucket_md, buckets = bucket_table(data, scores)
    json_path, md_path = write_results(methods, task, coles, bucket_md, buckets, commands, failures, timings, args)
    print(base.results_table(methods))
    print(bucket_md)
    print(f"wrote {rel(json_path)} and {rel(md_path)}")


if __name__ == "__main__":
    main()
