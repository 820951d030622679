"""Classic baselines on the CDNOW repeat-purchase task (issue 15), on the fixed splits of make_cdnow_task.py.

Methods, all scored on the same test customers:

- ``rfm_lightgbm``: hand-made RFM aggregates of the pre-cut purchases + LightGBM, seeds 0/1/2, early
  stopping on val log-loss;
- ``bgnbd_p_alive`` / ``bgnbd_expected``: BG/NBD (``lifetimes``) fitted on the train customers'
  summary (frequency = repeat purchase days, recency and T in weeks, observation end 1997-09-30); the
  scores are P(alive at the cut) and the expected number of purchases in the 39-week label window;
- ``frequency_only``: the number of pre-cut purchases (rows), as a ranking score;
- ``constant_prior``: the train positive rate for everyone (ROC-AUC 0.5, PR-AUC = test positive rate).

Metrics on test: ROC-AUC, PR-AUC (average precision), accuracy at the threshold that maximises val
accuracy (every method, so scores that are not probabilities compare fairly), accuracy at 0.5 for
scores that estimate P(label = 1) (LightGBM, the constant prior), and wall and CPU time (features + fit +
predict).

Writes ``benchmarks/results/sequences_cdnow_baselines.{md,json}``; the json is keyed by method so later
rows (the headstart sequence models, in ``sequences_cdnow.md``) append with ``evaluate_scores`` +
``summarise_runs`` + ``write_results``. Run from the repo root::

    python benchmarks/make_cdnow_task.py            # once: writes benchmarks/data/cdnow/
    python benchmarks/sequences_cdnow_baselines.py [--task-dir benchmarks/data/cdnow] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_cdnow_task as task_mod  # a sibling script, not a package

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
NAME = "sequences_cdnow_baselines"
CUT = pd.Timestamp(task_mod.CUT)
OBS_END = CUT - pd.Timedelta(days=1)  # last feature day: lifetimes' observation_period_end
WINDOW_WEEKS = ((pd.Timestamp(task_mod.LABEL_END) - CUT).days + 1) / 7  # 273 days = 39 weeks
METRICS = ("roc_auc", "pr_auc", "accuracy", "accuracy_at_0_5", "wall_s", "cpu_s")
# one LightGBM thread: on 2 CPUs shared with other jobs, 2 OpenMP threads spin-wait and made wall time
# swing from 1 s to 17 s between identical seeds; one thread is as fast when idle and stable when not
THREADS = 1


@dataclass
class Split:
    """One split's feature rows and its customers' labels (customer order = ``labels`` order)."""

    events: pd.DataFrame
    labels: pd.DataFrame

    @property
    def y(self) -> np.ndarray:
        return self.labels["label"].to_numpy()


@dataclass
class Run:
    """One method x seed on test; ``extra`` holds method-specific facts (best iteration, fitted params)."""

    method: str
    seed: int | None
    roc_auc: float
    pr_auc: float
    accuracy: float
    threshold: float
    accuracy_at_0_5: float | None
    wall_s: float
    cpu_s: float
    extra: dict[str, Any] = field(default_factory=dict)


def _now() -> tuple[float, float]:
    """Wall and process CPU clocks: CPU time stays comparable when other jobs share the 2 CPUs."""
    return time.perf_counter(), time.process_time()


def _since(t0: tuple[float, float]) -> tuple[float, float]:
    return time.perf_counter() - t0[0], time.process_time() - t0[1]


def load_task(task_dir: Path) -> dict[str, Split]:
    """The three splits from make_cdnow_task.py's files; ids stay strings (the zeros matter for joins)."""
    labels = pd.read_csv(task_dir / "labels.csv", dtype={"customer_id": str})
    out = {}
    for name in task_mod.SPLITS:
        ev = pd.read_csv(task_dir / f"events_{name}.csv", dtype={"customer_id": str}, parse_dates=["date"])
        ids = ev["customer_id"].unique()
        lab = labels[labels["customer_id"].isin(set(ids))].sort_values("customer_id").reset_index(drop=True)
        if len(lab) != len(ids):
            raise ValueError(f"{task_dir}: {len(ids) - len(lab)} customers of events_{name}.csv lack a label "
                             "in labels.csv: rerun make_cdnow_task.py")
        out[name] = Split(ev, lab)
    return out


# headstart.baselines.sequence.rfm_features' columns -> this benchmark's names (and order)
RFM_NAMES = {"recency": "recency_days", "tenure": "tenure_days", "frequency": "frequency",
             "distinct_times": "purchase_days", "dollar_value_sum": "monetary_total",
             "dollar_value_mean": "monetary_mean", "number_of_cds_sum": "cds_total", "number_of_cds_mean": "cds_mean"}


def _days(dates: Any) -> Any:
    return (dates - pd.Timestamp("1970-01-01")) / pd.Timedelta(days=1)


def rfm_features(split: Split) -> pd.DataFrame:
    """Recency/frequency/monetary/tenure aggregates per customer, in ``split.labels`` order: headstart's own RFM
    features (the ``rfm_lightgbm`` classic baseline's), on days before the cut."""
    from headstart.baselines.sequence import rfm_features as headstart_rfm

    ids = split.labels["customer_id"]
    entity = pd.Index(ids).get_indexer(split.events["customer_id"])
    numeric = {k: split.events[k].to_numpy(dtype=float) for k in ("dollar_value", "number_of_cds")}
    feats = headstart_rfm(entity, len(ids), _days(split.events["date"]).to_numpy(), numeric, float(_days(CUT)))
    return feats.rename(columns=RFM_NAMES)[list(RFM_NAMES.values())]


def best_threshold(y: np.ndarray, score: np.ndarray) -> tuple[float, float]:
    """The threshold t (predict 1 iff score >= t) with the highest accuracy on (y, score); ties go to the
    higher t. Candidates are the distinct scores plus +inf (all negative)."""
    order = np.argsort(-score, kind="stable")
    s, ys = score[order], y[order]
    # predicting the top i as positive: correct = positives in top i + negatives below
    tp = np.concatenate([[0], np.cumsum(ys)])
    fp = np.concatenate([[0], np.cumsum(1 - ys)])
    correct = tp + ((1 - y).sum() - fp)
    valid = np.concatenate([[True], np.append(s[1:] != s[:-1], True)])  # cut only between distinct scores
    cand = np.flatnonzero(valid)
    i = cand[np.argmax(correct[cand])]
    thr = float("inf") if i == 0 else float(s[i - 1])
    return thr, float(correct[i] / len(y))


def evaluate_scores(method: str, seed: int | None, val_y: np.ndarray, val_score: np.ndarray,
                    test_y: np.ndarray, test_score: np.ndarray, probabilistic: bool, wall_s: float,
                    cpu_s: float, **extra: Any) -> Run:
    """The test metrics of one scored run; the accuracy threshold comes from val only."""
    thr, _ = best_threshold(val_y, val_score)
    return Run(
        method=method, seed=seed,
        roc_auc=float(roc_auc_score(test_y, test_score)),
        pr_auc=float(average_precision_score(test_y, test_score)),
        accuracy=float(((test_score >= thr).astype(int) == test_y).mean()), threshold=thr,
        accuracy_at_0_5=float(((test_score >= 0.5).astype(int) == test_y).mean()) if probabilistic else None,
        wall_s=round(wall_s, 3), cpu_s=round(cpu_s, 3), extra=extra,
    )


def run_rfm_lightgbm(data: dict[str, Split], seeds: list[int],
                     scores: dict[str, np.ndarray] | None = None) -> list[Run]:
    """LightGBM on the RFM aggregates, one run per seed; ``scores`` (optional) receives each run's test scores
    (key ``rfm_lightgbm/<seed>``, ``data["test"].labels`` order) for callers that break metrics down."""
    from headstart.baselines.boosting import train_lightgbm

    runs = []
    for seed in seeds:
        t0 = _now()
        x = {name: rfm_features(s) for name, s in data.items()}
        params = {"objective": "binary", "metric": "binary_logloss", "learning_rate": 0.02, "num_leaves": 15,
                  "min_data_in_leaf": 50, "bagging_fraction": 0.8, "bagging_freq": 1, "feature_fraction": 0.8,
                  "lambda_l2": 1.0, "seed": seed, "num_threads": THREADS, "deterministic": True,
                  "force_row_wise": True, "verbosity": -1}
        # headstart's LightGBM step (native API, 2000 rounds, early stopping after 100 on val log-loss)
        booster = train_lightgbm(params, x["train"], data["train"].y, x["val"], data["val"].y)
        val_p = booster.predict(x["val"], num_iteration=booster.best_iteration)
        test_p = booster.predict(x["test"], num_iteration=booster.best_iteration)
        wall, cpu = _since(t0)
        gain = booster.feature_importance("gain", iteration=booster.best_iteration).round(1).tolist()
        imp = dict(zip(x["train"].columns, gain, strict=True))
        if scores is not None:
            scores[f"rfm_lightgbm/{seed}"] = test_p
        runs.append(evaluate_scores("rfm_lightgbm", seed, data["val"].y, val_p, data["test"].y, test_p, True, wall,
                                    cpu, best_iteration=int(booster.best_iteration), gain_importance=imp))
    return runs


def lifetimes_summary(split: Split) -> pd.DataFrame:
    """lifetimes' calibration summary (frequency = repeat purchase days, recency/T in days), in label order."""
    from lifetimes.utils import summary_data_from_transaction_data

    s = summary_data_from_transaction_data(split.events, "customer_id", "date", observation_period_end=OBS_END,
                                           freq="D")
    return s.loc[split.labels["customer_id"]].reset_index(drop=True)


def run_bgnbd(data: dict[str, Split], scores: dict[str, np.ndarray] | None = None) -> list[Run]:
    """BG/NBD fitted once on the train customers (maximum likelihood: no seed); two scores from one fit.
    ``scores`` (optional) receives the test scores, keyed ``<method>/None``, as in :func:`run_rfm_lightgbm`."""
    from lifetimes import BetaGeoFitter

    t0 = _now()
    summ = {name: lifetimes_summary(s) for name, s in data.items()}
    weeks = {name: (s["frequency"], s["recency"] / 7, s["T"] / 7) for name, s in summ.items()}
    bgf = BetaGeoFitter(penalizer_coef=0.0)
    bgf.fit(*weeks["train"])
    fit_s, fit_cpu = _since(t0)
    params = {k: round(float(v), 4) for k, v in bgf.params_.items()}
    # BG/NBD lets a customer drop out only right after a repeat purchase, so one-purchase-day customers
    # (frequency 0) get P(alive) = 1 although they return least often: recorded to explain that score
    f0 = summ["test"]["frequency"].to_numpy() == 0
    p_alive_f0 = np.asarray(bgf.conditional_probability_alive(*(w[f0] for w in weeks["test"])), dtype=float)
    diag = {"test_share_frequency_0": round(float(f0.mean()), 4),
            "test_positive_rate_frequency_0": round(float(data["test"].y[f0].mean()), 4),
            "test_positive_rate_frequency_1plus": round(float(data["test"].y[~f0].mean()), 4),
            "test_p_alive_frequency_0_min": round(float(p_alive_f0.min()), 4)}
    runs = []
    scorers: dict[str, Callable[..., Any]] = {
        "bgnbd_p_alive": bgf.conditional_probability_alive,
        "bgnbd_expected": lambda f, r, T: bgf.conditional_expected_number_of_purchases_up_to_time(
            WINDOW_WEEKS, f, r, T),
    }
    for method, score_fn in scorers.items():
        t1 = _now()
        val_s = np.asarray(score_fn(*weeks["val"]), dtype=float)
        test_s = np.asarray(score_fn(*weeks["test"]), dtype=float)
        wall, cpu = _since(t1)
        if scores is not None:
            scores[f"{method}/None"] = test_s
        runs.append(evaluate_scores(method, None, data["val"].y, val_s, data["test"].y, test_s, False,
                                    fit_s + wall, fit_cpu + cpu,
                                    params=params, fit_s=round(fit_s, 3), window_weeks=WINDOW_WEEKS,
                                    time_unit="weeks", observation_period_end=str(OBS_END.date()), **diag))
    return runs


def run_frequency_only(data: dict[str, Split]) -> list[Run]:
    t0 = _now()
    score = {name: rfm_features(s)["frequency"].to_numpy(dtype=float) for name, s in data.items()}
    return [evaluate_scores("frequency_only", None, data["val"].y, score["val"], data["test"].y, score["test"],
                            False, *_since(t0))]


def run_constant_prior(data: dict[str, Split]) -> list[Run]:
    t0 = _now()
    prior = float(data["train"].y.mean())
    score = {name: np.full(len(s.labels), prior) for name, s in data.items()}
    return [evaluate_scores("constant_prior", None, data["val"].y, score["val"], data["test"].y, score["test"],
                            True, *_since(t0), prior=round(prior, 4))]


def summarise_runs(runs: list[Run]) -> dict[str, Any]:
    """Per method: seeds, mean and std (sample std; 0 with one run) of every metric, and the runs."""
    by_method: dict[str, list[Run]] = {}
    for r in runs:
        by_method.setdefault(r.method, []).append(r)
    out: dict[str, Any] = {}
    for method, rs in by_method.items():
        stats: dict[str, Any] = {}
        for m in METRICS:
            vals = [getattr(r, m) for r in rs if getattr(r, m) is not None]
            stats[m] = None if not vals else {
                "mean": statistics.fmean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else 0.0}
        out[method] = {"seeds": [r.seed for r in rs], "n_runs": len(rs), **stats, "runs": [asdict(r) for r in rs]}
    return out


def _fmt(stat: dict[str, float] | None, n_runs: int, digits: int = 4) -> str:
    if stat is None:
        return "—"
    return f"{stat['mean']:.{digits}f}" if n_runs == 1 else f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"


def results_table(methods: dict[str, Any]) -> str:
    """Markdown rows, best test ROC-AUC first; later sessions call this on the merged dict."""
    lines = ["| method | seeds | test ROC-AUC | test PR-AUC | test accuracy (val-tuned threshold) | "
             "test accuracy @0.5 | wall s (per run) | CPU s (per run) |", "|---|---|---|---|---|---|---|---|"]
    order = sorted(methods, key=lambda k: -(methods[k]["roc_auc"] or {"mean": 0})["mean"])
    for k in order:
        m = methods[k]
        seeds = ",".join("—" if s is None else str(s) for s in m["seeds"])
        lines.append(f"| {k} | {seeds} | {_fmt(m['roc_auc'], m['n_runs'])} | {_fmt(m['pr_auc'], m['n_runs'])} | "
                     f"{_fmt(m['accuracy'], m['n_runs'])} | {_fmt(m['accuracy_at_0_5'], m['n_runs'])} | "
                     f"{_fmt(m['wall_s'], m['n_runs'], 2)} | {_fmt(m['cpu_s'], m['n_runs'], 2)} |")
    return "\n".join(lines)


def counts_table(counts: dict[str, Any]) -> str:
    lines = ["| split | customers | feature events | positives | positive rate |", "|---|---|---|---|---|"]
    for name, c in counts["splits"].items():
        lines.append(f"| {name} | {c['customers']} | {c['events']} | {c['positives']} | {c['positive_rate']:.4f} |")
    lines.append(f"| all | {counts['customers']} | {counts['feature_events']} | {counts['positives']} | "
                 f"{counts['positive_rate']:.4f} |")
    return "\n".join(lines)


def hist_line(bins: dict[str, int], total: int) -> str:
    return ", ".join(f"{k}: {v} ({100 * v / total:.1f}%)" for k, v in bins.items())


def environment() -> dict[str, Any]:
    import lightgbm
    import sklearn

    env = {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
           "threads": THREADS, "numpy": np.__version__, "pandas": pd.__version__, "scikit-learn": sklearn.__version__,
           "lightgbm": lightgbm.__version__}
    try:
        import lifetimes

        env["lifetimes"] = lifetimes.__version__
    except Exception as exc:  # recorded, not fatal: the report says why BG/NBD is missing
        env["lifetimes"] = f"not importable: {type(exc).__name__}: {exc}"
    return env


def write_results(methods: dict[str, Any], task: dict[str, Any], commands: list[str], notes: list[str],
                  failures: dict[str, str], name: str = NAME) -> tuple[Path, Path]:
    """``results/<name>.json`` (keyed by method) and ``results/<name>.md``."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    env = environment()
    payload = {"task": task, "methods": methods, "failures": failures, "commands": commands, "environment": env}
    json_path = RESULTS / f"{name}.json"
    json_path.write_text(json.dumps(payload, indent=2) + "\n")
    c = task["counts"]
    d = task["definition"]
    md = [
        "# CDNOW repeat purchase: classic baselines",
        "",
        "## Task (benchmarks/make_cdnow_task.py)",
        "",
        f"- Features: {d['features']}. Label: {d['label']} (9 months, {WINDOW_WEEKS:g} weeks). "
        f"Entities: {d['entities']}.",
        f"- Split: {d['split']}; the same files feed every method.",
        f"- Source: `CDNOW_master.txt`, sha256 `{task['source']['sha256']}`, {c['source_rows']} rows, "
        f"{c['customers_in_source']} customers; first purchases {c['first_purchase_range'][0]} to "
        f"{c['first_purchase_range'][1]}.",
        "",
        counts_table(c),
        "",
        f"Customers by number of feature rows (transactions before the cut): "
        f"{hist_line(c['customers_by_feature_rows'], c['customers'])}.",
        f"By distinct purchase days: {hist_line(c['customers_by_feature_purchase_days'], c['customers'])}. "
        f"Mean {c['feature_rows_per_customer']['mean']} rows per customer, median "
        f"{c['feature_rows_per_customer']['median']:g}: most sequences are one or two purchases long.",
        "",
        "## Results (test split)",
        "",
        results_table(methods),
        "",
        "- Accuracy (val-tuned threshold): the threshold maximising accuracy on val (predict 1 iff score >= t) "
        "is applied to test, for every method. Accuracy @0.5 only for scores that estimate P(label = 1) "
        "(LightGBM, the constant prior); P(alive) and expected purchases are not that probability.",
        "- Wall and CPU time per run: feature building + fit + predicting val and test, on "
        f"{env['cpus']} CPUs shared with other jobs (so wall time is noisy; process CPU time is the steadier "
        f"figure), {THREADS} LightGBM thread; data loading excluded. BG/NBD's two rows share one fit and each "
        "includes it.",
        "- seeds `—`: deterministic method, one run.",
        "",
    ]
    if failures:
        md += ["## Methods that did not run", ""] + [f"- `{k}`: {v}" for k, v in failures.items()] + [""]
    md += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    md += ["## Commands", "", "```", *commands, "```", "", "## Environment", "",
           ", ".join(f"{k} {v}" for k, v in env.items()), ""]
    md_path = RESULTS / f"{name}.md"
    md_path.write_text("\n".join(md))
    return json_path, md_path


def notes_for(methods: dict[str, Any]) -> list[str]:
    """Facts read off this run's numbers (nothing hard-coded)."""
    notes = []
    if "rfm_lightgbm" in methods:
        runs = methods["rfm_lightgbm"]["runs"]
        notes.append("LightGBM: num_leaves 15, learning_rate 0.02, min_data_in_leaf 50, lambda_l2 1, row/column subsampling "
                     "0.8 (the only source of seed variance), early stopping after 100 rounds on val log-loss; "
                     f"best iterations {[r['extra']['best_iteration'] for r in runs]}. Gain importance (seed "
                     f"{runs[0]['seed']}): " + ", ".join(f"{k} {v:g}" for k, v in sorted(
                         runs[0]["extra"]["gain_importance"].items(), key=lambda kv: -kv[1])) + ".")
    if "bgnbd_p_alive" in methods:
        ex = methods["bgnbd_p_alive"]["runs"][0]["extra"]
        notes.append(f"BG/NBD (lifetimes BetaGeoFitter, penalizer 0) fitted on the {ex['time_unit']} scale, "
                     f"observation end {ex['observation_period_end']}; parameters {ex['params']} "
                     f"(Fader, Hardie & Lee 2005 report r=0.243, alpha=4.414, a=0.793, b=2.426 on their 1/10th "
                     f"CDNOW sample with a 39-week calibration period). Expected purchases are for the next "
                     f"{ex['window_weeks']:g} weeks.")
        notes.append(f"P(alive) ranks worse than chance by construction: in BG/NBD a customer can drop out only "
                     f"right after a repeat purchase, so the {100 * ex['test_share_frequency_0']:.1f}% of test "
                     f"customers with a single purchase day (frequency 0) all get P(alive) = 1 (min "
                     f"{ex['test_p_alive_frequency_0_min']:g}), yet only "
                     f"{100 * ex['test_positive_rate_frequency_0']:.1f}% of them buy again, against "
                     f"{100 * ex['test_positive_rate_frequency_1plus']:.1f}% of the others. P(alive) is only "
                     "meaningful together with the purchase rate, which the expected-purchases score combines.")
    if "frequency_only" in methods:
        notes.append("frequency_only ranks by pre-cut transaction count; most customers tie at 1 or 2, "
                     "so its ROC curve has few steps.")
    return notes


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--task-dir", type=Path, default=task_mod.OUT, help="make_cdnow_task.py's --out")
    ap.add_argument("--source", type=Path, default=task_mod.SOURCE,
                    help="CDNOW_master.txt, used to build --task-dir when it is missing")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="LightGBM seeds")
    args = ap.parse_args(argv)
    task_dir = args.task_dir.resolve()
    if not (task_dir / "task.json").is_file():
        if not args.source.is_file():
            raise SystemExit(f"{task_dir} has no task.json and {args.source} is absent: nothing to benchmark "
                             "(run make_cdnow_task.py or pass --source)")
        print(f"building the task into {task_dir}", flush=True)
        task_mod.build_task(args.source, task_dir)
    task = json.loads((task_dir / "task.json").read_text())
    data = load_task(task_dir)
    runs: list[Run] = []
    failures: dict[str, str] = {}
    steps: list[tuple[str, Callable[[], list[Run]]]] = [
        ("rfm_lightgbm", lambda: run_rfm_lightgbm(data, args.seeds)),
        ("bgnbd", lambda: run_bgnbd(data)),
        ("frequency_only", lambda: run_frequency_only(data)),
        ("constant_prior", lambda: run_constant_prior(data)),
    ]
    for name, step in steps:
        try:
            new = step()
        except Exception as exc:  # one missing package must not hide the other rows; the report says why
            failures[name] = f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
            continue
        for r in new:
            print(f"{r.method:16s} seed={r.seed} roc_auc={r.roc_auc:.4f} pr_auc={r.pr_auc:.4f} "
                  f"acc={r.accuracy:.4f} wall={r.wall_s:.2f}s", flush=True)
        runs.extend(new)
    methods = summarise_runs(runs)
    rel = task_dir.relative_to(ROOT) if task_dir.is_relative_to(ROOT) else task_dir
    commands = [f"python benchmarks/make_cdnow_task.py --out {rel}",
                "python benchmarks/sequences_cdnow_baselines.py " + shlex.join(argv if argv is not None else sys.argv[1:])]
    json_path, md_path = write_results(methods, task, commands, notes_for(methods), failures)
    print(results_table(methods))
    print(f"wrote {json_path} and {md_path}")


if __name__ == "__main__":
    main()
