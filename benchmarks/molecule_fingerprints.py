"""Classic molecule baseline (issue 16): Morgan fingerprints + LightGBM on BBBP and ESOL, scaffold and random splits.

- Features: Morgan (ECFP4-like) bit vectors, radius 2, 2048 bits (``rdFingerprintGenerator.GetMorganGenerator``),
  from the molecules headstart's own reader parses (``headstart.data.molecules.read_molecules``).
- Splits: 80 / 10 / 10 with headstart's split functions, so these numbers share their splits with headstart
  runs: ``scaffold_split`` (deterministic: the same split for every seed) and ``random_split`` (seeded).
- Model: LightGBM (native API), learning_rate 0.05, num_leaves 31, bagging / feature fraction 0.8,
  min_data_in_leaf 5, up to 2000 rounds with early stopping (100 rounds) on the val split's log-loss (BBBP) or
  RMSE (ESOL). Nothing is tuned on test; the parameters were fixed before the first run.
- Seeds 42, 43, 44 drive LightGBM and the random split; the scaffold split only varies the model seed.
- Metrics on test: ROC-AUC (BBBP, target ``p_np``), RMSE (ESOL, target ``logp``, which in chemprop's
  ``delaney.csv`` is the measured log solubility in mol/L despite its name).

Writes ``benchmarks/results/molecule_fingerprints.json`` (per-seed values, mean and sample std). Run from the
repo root::

    python benchmarks/molecule_fingerprints.py [--data-dir ../shared/data] [--seeds 42 43 44]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
NAME = "molecule_fingerprints"
DATA = ROOT.parent / "shared" / "data"
# dataset -> (file under the data dir, target column, task, test metric)
DATASETS: dict[str, tuple[str, str, str, str]] = {
    "bbbp": ("bbbp/bbbp.csv", "p_np", "classification", "roc_auc"),
    "esol": ("esol/delaney.csv", "logp", "regression", "rmse"),
}
SPLITS = ("scaffold", "random")
VAL_FRACTION = TEST_FRACTION = 0.1
RADIUS, N_BITS = 2, 2048
# one LightGBM thread: the 2 CPUs are shared with other jobs, and OpenMP spin-waits make wall time noisy
THREADS = 1


def morgan_features(mols: list[Any]) -> np.ndarray:
    """headstart's Morgan bits (the ``morgan_lightgbm`` classic baseline's features)."""
    from headstart.baselines.molecule import morgan_features as headstart_morgan

    return headstart_morgan(mols, RADIUS, N_BITS)


def lgb_params(task: str, seed: int) -> dict[str, Any]:
    """headstart's LightGBM parameters for the ``morgan_lightgbm`` baseline (binary log-loss or RMSE on val)."""
    from headstart.baselines.boosting import lgb_params as headstart_params

    return headstart_params({"classification": "binary", "regression": "regression"}[task], seed, num_threads=THREADS)


def score(metric: str, y: np.ndarray, pred: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    if metric == "roc_auc":
        return float(roc_auc_score(y, pred))
    return float(np.sqrt(np.mean((y - pred) ** 2)))


def run_one(x: np.ndarray, y: np.ndarray, parts: dict[str, np.ndarray], task: str, metric: str,
            seed: int) -> dict[str, Any]:
    from headstart.baselines.boosting import train_lightgbm

    t0 = time.perf_counter()
    train, val, test = parts["train"], parts["val"], parts["test"]
    booster = train_lightgbm(lgb_params(task, seed), x[train], y[train], x[val], y[val])
    best = int(booster.best_iteration)
    val_pred = booster.predict(x[val], num_iteration=best)
    test_pred = booster.predict(x[test], num_iteration=best)
    return {"seed": seed, "test": score(metric, y[test], test_pred), "val": score(metric, y[val], val_pred),
            "best_iteration": best, "wall_s": round(time.perf_counter() - t0, 2)}


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and sample std (0 with one run) of the test and val metric over seeds."""
    out: dict[str, Any] = {}
    for key in ("test", "val"):
        values = np.asarray([r[key] for r in runs], dtype=np.float64)
        out[key] = {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0}
    return out


def run_dataset(name: str, data_dir: Path, seeds: list[int]) -> dict[str, Any]:
    from headstart.config import DataConfig
    from headstart.data.molecule_splits import random_split, scaffold_split
    from headstart.data.molecules import read_molecules

    file, target, task, metric = DATASETS[name]
    path = data_dir / file
    cfg = DataConfig(train=str(path), label_column=target, val_fraction=VAL_FRACTION, test_fraction=TEST_FRACTION,
                     molecules={})
    table = read_molecules(path, cfg)
    assert table.targets is not None
    y = table.targets[target].to_numpy(dtype=np.float64)
    t0 = time.perf_counter()
    x = morgan_features(table.mols)
    features_s = time.perf_counter() - t0
    out: dict[str, Any] = {"file": str(file), "target": target, "task": task, "metric": metric, "rows": len(table),
                           "invalid_smiles": len(table.dropped), "features_s": round(features_s, 2), "splits": {}}
    scaffold = scaffold_split(table.mols, VAL_FRACTION, TEST_FRACTION)
    for split in SPLITS:
        runs, reports = [], {}
        for seed in seeds:
            result = scaffold if split == "scaffold" else random_split(len(table), VAL_FRACTION, TEST_FRACTION,
                                                                        seed, mols=table.mols)
            # positive rate (classification) or mean target (regression) per split: scaffold splits shift it
            reports[seed] = {**result.report, "target_mean": {k: round(float(y[v].mean()), 4)
                                                              for k, v in result.parts().items()}}
            run = run_one(x, y, result.parts(), task, metric, seed)
            runs.append(run)
            print(f"{name:5s} {split:8s} seed={seed} test {metric}={run['test']:.4f} val={run['val']:.4f} "
                  f"best_iter={run['best_iteration']} ({run['wall_s']:.1f}s)", flush=True)
        report = reports[seeds[0]] if split == "scaffold" else {str(s): r for s, r in reports.items()}
        out["splits"][split] = {"runs": runs, **summarise(runs), "split_report": report}
    return out


def environment() -> dict[str, Any]:
    import lightgbm
    import rdkit
    import sklearn

    return {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
            "threads": THREADS, "numpy": np.__version__, "rdkit": rdkit.__version__, "lightgbm": lightgbm.__version__,
            "scikit-learn": sklearn.__version__}


def results_table(results: dict[str, Any]) -> str:
    lines = ["| dataset | split | metric (test) | mean ± std | per seed | val mean |", "|---|---|---|---:|---|---:|"]
    for name, res in results.items():
        for split, s in res["splits"].items():
            per_seed = ", ".join(f"{r['test']:.4f}" for r in s["runs"])
            lines.append(f"| {name} | {split} | {res['metric']} | {s['test']['mean']:.4f} ± {s['test']['std']:.4f} "
                         f"| {per_seed} | {s['val']['mean']:.4f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", type=Path, default=DATA, help="folder holding bbbp/bbbp.csv and esol/delaney.csv")
    ap.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44], help="LightGBM and random-split seeds")
    ap.add_argument("--datasets", nargs="+", choices=sorted(DATASETS), default=list(DATASETS))
    ap.add_argument("--out", type=Path, default=RESULTS / f"{NAME}.json", help="results JSON")
    args = ap.parse_args(argv)
    missing = [str(args.data_dir / DATASETS[d][0]) for d in args.datasets if not (args.data_dir / DATASETS[d][0]).is_file()]
    if missing:
        print(f"skipped: {', '.join(missing)} absent: nothing to benchmark (the molecule baseline needs "
              f"../shared/data/bbbp and ../shared/data/esol; pass --data-dir).")
        return 0
    sys.path.insert(0, str(ROOT / "src"))  # run from a checkout without installing
    results = {name: run_dataset(name, args.data_dir, args.seeds) for name in args.datasets}
    command = "python benchmarks/molecule_fingerprints.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    payload = {
        "task": {"features": f"Morgan bits, radius {RADIUS}, {N_BITS} bits", "model": "LightGBM",
                 "params": {k: v for k, v in lgb_params("classification", 0).items() if k not in ("objective",
                                                                                                  "metric", "seed")},
                 "num_boost_round": 2000, "early_stopping_rounds": 100,
                 "early_stopping_metric": {"classification": "binary_logloss", "regression": "rmse"},
                 "fractions": {"train": 1 - VAL_FRACTION - TEST_FRACTION, "val": VAL_FRACTION, "test": TEST_FRACTION},
                 "seeds": args.seeds, "std": "sample std over seeds",
                 "note": "scaffold split is deterministic (same rows for every seed); random split seeded per seed"},
        "results": results, "commands": [command.strip()], "environment": environment(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    print(results_table(results))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
