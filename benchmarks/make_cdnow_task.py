"""Derive the CDNOW repeat-purchase task of issue 15 from the raw transactions, with fixed splits.

Task (every method in ``sequences_cdnow*`` reads exactly these files, so rows are comparable):

- features: a customer's purchases strictly before the cut, 1997-10-01;
- label: 1 when the customer buys at least once between 1997-10-01 and 1998-06-30, both inclusive;
- entities: every customer with at least one purchase before the cut (all 23,570 CDNOW customers made
  their first purchase in Q1 1997, so every customer is one);
- split: per customer, 70/10/20 train/val/test, stratified by label, seed 0.

Writes into ``--out`` (default ``benchmarks/data/cdnow/``, which must stay out of git):
``events_{train,val,test}.csv`` (customer_id, date as YYYY-MM-DD, number_of_cds, dollar_value; feature
rows only), ``labels.csv`` (customer_id, label 0/1, every entity), ``split.csv`` (customer_id, split) and
``task.json`` (the definition and the counts, also printed). The three events files split the feature
rows by customer, so a headstart config points data.train/val/test at them and data.events.labels at
labels.csv, and every method sees the same customers in the same split.

Run from the repo root::

    python benchmarks/make_cdnow_task.py [--source ../shared/data/cdnow/CDNOW_master.txt] [--out DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT.parent / "shared" / "data" / "cdnow" / "CDNOW_master.txt"
OUT = ROOT / "benchmarks" / "data" / "cdnow"
CUT = date(1997, 10, 1)  # first day of the label window; features are strictly before it
LABEL_END = date(1998, 6, 30)  # last day of the label window, inclusive
SPLITS = ("train", "val", "test")
FRACTIONS = (0.7, 0.1, 0.2)
SEED = 0
COLUMNS = ("customer_id", "date", "number_of_cds", "dollar_value")


def read_cdnow(path: Path) -> pd.DataFrame:
    """The raw file as typed columns; customer ids stay 5-digit strings so no reader drops the zeros."""
    df = pd.read_csv(path, sep=r"\s+", dtype={"customer_id": str, "date": str})
    if tuple(df.columns) != COLUMNS:
        raise ValueError(f"{path}: header {list(df.columns)}, expected {list(COLUMNS)} (the CDNOW_master format)")
    df["date"] = pd.to_datetime(df["date"], format="%Y%m%d")
    df["number_of_cds"] = df["number_of_cds"].astype("int64")
    df["dollar_value"] = df["dollar_value"].astype("float64")
    return df


def make_labels(tx: pd.DataFrame, cut: date = CUT, label_end: date = LABEL_END) -> pd.DataFrame:
    """One row per entity (a purchase before the cut): label 1 iff a purchase falls in [cut, label_end]."""
    cut_ts, end_ts = pd.Timestamp(cut), pd.Timestamp(label_end)
    entities = np.sort(tx.loc[tx["date"] < cut_ts, "customer_id"].unique())
    in_window = tx.loc[(tx["date"] >= cut_ts) & (tx["date"] <= end_ts), "customer_id"].unique()
    labels = pd.DataFrame({"customer_id": entities})
    labels["label"] = labels["customer_id"].isin(set(in_window)).astype("int64")
    return labels


def split_customers(labels: pd.DataFrame, seed: int = SEED,
                    fractions: tuple[float, float, float] = FRACTIONS) -> pd.DataFrame:
    """Stratified per-customer split: each class is shuffled on its own (sorted ids first, so the result
    depends only on the ids, labels and seed) and cut at rounded 70%/80% of its size."""
    rng = np.random.default_rng(seed)
    parts = []
    for label in sorted(labels["label"].unique()):
        ids = np.sort(labels.loc[labels["label"] == label, "customer_id"].to_numpy())
        ids = ids[rng.permutation(len(ids))]
        n_train = round(fractions[0] * len(ids))
        n_val = round((fractions[0] + fractions[1]) * len(ids)) - n_train
        names = np.array(["train"] * n_train + ["val"] * n_val + ["test"] * (len(ids) - n_train - n_val))
        parts.append(pd.DataFrame({"customer_id": ids, "split": names}))
    return pd.concat(parts).sort_values("customer_id", kind="stable").reset_index(drop=True)


def feature_events(tx: pd.DataFrame, cut: date = CUT) -> pd.DataFrame:
    """The rows before the cut, ordered by customer then date (same-day rows keep their file order)."""
    events = tx.loc[tx["date"] < pd.Timestamp(cut)]
    return events.sort_values(["customer_id", "date"], kind="stable").reset_index(drop=True)


def _count_bins(per_customer: pd.Series) -> dict[str, int]:
    """Customers with 1, 2, ... purchases: 1-5 exactly, then the tail, and the 3+ total the issue asks for."""
    bins = {str(k): int((per_customer == k).sum()) for k in range(1, 6)}
    bins["6-10"] = int(((per_customer >= 6) & (per_customer <= 10)).sum())
    bins["11+"] = int((per_customer >= 11).sum())
    bins["3+"] = int((per_customer >= 3).sum())
    return bins


def summarise(tx: pd.DataFrame, events: pd.DataFrame, labels: pd.DataFrame, split: pd.DataFrame) -> dict[str, Any]:
    """Counts that say how much signal the task holds (most customers bought only once or twice)."""
    merged = labels.merge(split, on="customer_id")
    per_split: dict[str, Any] = {}
    for name in SPLITS:
        ids = set(merged.loc[merged["split"] == name, "customer_id"])
        y = merged.loc[merged["split"] == name, "label"]
        per_split[name] = {"customers": len(ids), "events": int(events["customer_id"].isin(ids).sum()),
                           "positives": int(y.sum()), "positive_rate": round(float(y.mean()), 4)}
    rows = events.groupby("customer_id").size()
    days = events.groupby("customer_id")["date"].nunique()
    return {
        "customers": len(labels),
        "customers_in_source": int(tx["customer_id"].nunique()),
        "source_rows": len(tx),
        "feature_events": len(events),
        "positives": int(labels["label"].sum()),
        "positive_rate": round(float(labels["label"].mean()), 4),
        "splits": per_split,
        "customers_by_feature_rows": _count_bins(rows),
        "customers_by_feature_purchase_days": _count_bins(days),
        "feature_rows_per_customer": {"mean": round(float(rows.mean()), 3), "median": float(rows.median()),
                                      "max": int(rows.max())},
        "first_purchase_range": [str(events["date"].min().date()), str(events.groupby("customer_id")["date"]
                                                                          .min().max().date())],
    }


def _git_ignored(path: Path) -> bool | None:
    """Whether git ignores ``path`` (None when git cannot tell, e.g. outside a work tree)."""
    try:
        res = subprocess.run(["git", "check-ignore", "-q", str(path)], cwd=ROOT, capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return {0: True, 1: False}.get(res.returncode)


def _write_csv(df: pd.DataFrame, path: Path) -> None:
    out = df.copy()
    if "date" in out:
        out["date"] = out["date"].dt.strftime("%Y-%m-%d")
    out.to_csv(path, index=False, lineterminator="\n")


def build_task(source: Path = SOURCE, out: Path = OUT, seed: int = SEED) -> dict[str, Any]:
    """Read the source, write the task files into ``out``, and return the task definition with counts."""
    tx = read_cdnow(source)
    events = feature_events(tx)
    labels = make_labels(tx)
    split = split_customers(labels, seed=seed)
    out.mkdir(parents=True, exist_ok=True)
    for name in SPLITS:
        ids = set(split.loc[split["split"] == name, "customer_id"])
        _write_csv(events.loc[events["customer_id"].isin(ids)], out / f"events_{name}.csv")
    _write_csv(labels, out / "labels.csv")
    _write_csv(split, out / "split.csv")
    task = {
        "definition": {
            "features": f"purchases with date < {CUT.isoformat()}",
            "label": f"1 iff at least one purchase with {CUT.isoformat()} <= date <= {LABEL_END.isoformat()}",
            "entities": f"customers with at least one purchase before {CUT.isoformat()}",
            "split": f"per customer, train/val/test {'/'.join(str(round(f * 100)) for f in FRACTIONS)}, "
                     f"stratified by label, numpy default_rng({seed}) permutation per class",
            "cut": CUT.isoformat(), "label_end": LABEL_END.isoformat(), "seed": seed,
        },
        "source": {"path": str(source), "sha256": hashlib.sha256(source.read_bytes()).hexdigest()},
        "files": {name: f"events_{name}.csv" for name in SPLITS} | {"labels": "labels.csv", "split": "split.csv"},
        "counts": summarise(tx, events, labels, split),
    }
    (out / "task.json").write_text(json.dumps(task, indent=2) + "\n")
    return task


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--source", type=Path, default=SOURCE, help="CDNOW_master.txt")
    ap.add_argument("--out", type=Path, default=OUT, help="output directory (keep it git-ignored)")
    ap.add_argument("--seed", type=int, default=SEED, help="split seed")
    args = ap.parse_args(argv)
    if not args.source.is_file():
        raise SystemExit(f"{args.source} not found: pass --source pointing at CDNOW_master.txt")
    task = build_task(args.source, args.out.resolve(), args.seed)
    print(json.dumps(task, indent=2))
    if _git_ignored(args.out.resolve()) is False:
        print(f"WARNING: {args.out} is not git-ignored: add its folder (e.g. 'benchmarks/data/') to .gitignore "
              "so derived data never gets committed.")


if __name__ == "__main__":
    main()
