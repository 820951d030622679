"""Molecules end to end (issue 16): BBBP and ESOL with a graph encoder from scratch, pretrained on HIV then
fine-tuned, and as a linear probe, against Morgan fingerprints + LightGBM on the same splits in the same run;
OOD detection of frozen vs fine-tuned models (scaffold-OOD protocol) as one ``headstart compare``; Uni-Mol's
epoch time frozen (cached) vs last two layers with a random-init checkpoint.

Every headstart number comes from the library's own path (``run_fit`` / ``run_pretrain`` / ``run_compare``
with configs written below; the equivalent CLI commands are in the results file). Splits: 80 / 10 / 10 from
``data.molecules.split`` (scaffold: deterministic Bemis-Murcko sets, largest to train; random: seeded), shared
with the fingerprint baseline through the same split functions. Seeds 42, 43, 44.

Run from the repo root (about an hour on 2 CPU cores; ``--quick`` for a smoke run)::

    python benchmarks/molecules.py [--data-dir ../shared/data] [--parts pretrain,bbbp,esol,ood,unimol]

Each part writes ``benchmarks/results/molecules/<part>.json`` when it finishes (parts can run in separate
processes: ``--parts unimol`` beside ``--parts pretrain,bbbp``; ``bbbp`` / ``esol`` / ``ood`` read the pretraining
part's file). Every graph run uses one torch thread: on 2 shared cores a small graph network runs 3x faster so.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
RESULTS = ROOT / "benchmarks" / "results"
RUNS = ROOT / "benchmarks" / "runs" / "molecules"
DATA = ROOT.parent / "shared" / "data"
SEEDS = (42, 43, 44)
PARTS = ("pretrain", "bbbp", "esol", "ood", "unimol")
# One encoder shape for every graph run (CPU budget: 2 cores): GINE, 3 layers x 128, mean pooling.
GRAPH = {"conv": "gine", "hidden_size": 128, "num_layers": 3, "dropout": 0.1, "pooling": "mean"}
SPLITS = {"bbbp": ("scaffold",), "esol": ("scaffold", "random")}
DATASETS = {  # file, target, task, metric (test), monitor
    "bbbp": ("bbbp/bbbp.csv", "p_np", "molecule_classification", "test_auc", "val_auc"),
    "esol": ("esol/delaney.csv", "logp", "molecule_regression", "test_rmse", "val_rmse"),
}


def graph_config(name: str, out: Path, data: dict[str, Any], *, task: str, seed: int, epochs: int,
                 strategy: dict[str, Any] | None = None, pretrain: Path | None = None, lr: float = 1e-3,
                 monitor: str = "val_auc", **extra: Any) -> dict[str, Any]:
    mode = "min" if monitor.endswith(("rmse", "loss")) else "max"
    raw: dict[str, Any] = {
        "name": name, "output_dir": str(out), "task": task,
        "data": {"val_fraction": 0.1, "test_fraction": 0.1, "batch_size": 64, "eval_batch_size": 512, **data},
        "backbone": {"type": "graph", "graph": GRAPH},
        "strategy": strategy or {"name": "full"},
        "optim": {"lr": lr, "weight_decay": 0.0, "warmup_epochs": 1},
        "trainer": {"epochs": epochs, "seed": seed, "progress_bar": False, "monitor": monitor, "monitor_mode": mode,
                    "threads": 1, "early_stopping": {"monitor": monitor, "mode": mode, "patience": 6}},
    }
    if pretrain is not None:
        raw["pretrain"], raw["pretrain_head"] = str(pretrain), "reset"
    for key, value in extra.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    return raw


def fit(raw: dict[str, Any]) -> dict[str, Any]:
    from headstart.config import load_config
    from headstart.experiments.fit import run_fit

    t0 = time.perf_counter()
    summary = run_fit(load_config(None, raw=raw), overwrite=True, verbose=False).summary
    return {"summary": summary, "wall_s": round(time.perf_counter() - t0, 1)}


# ----- pretraining on HIV ------------------------------------------------------------------------------------
def part_pretrain(data: Path, quick: bool) -> dict[str, Any]:
    """Supervised on HIV's labels (scaffold split) and attribute masking on its SMILES (no labels)."""
    from headstart.config import load_config
    from headstart.pretraining.objectives import objective_names, run_pretrain

    out: dict[str, Any] = {}
    hiv = str(data / "hiv" / "hiv.csv.gz")
    subset = {"train_subset": 2000} if quick else {}
    sup = graph_config("hiv-supervised", RUNS / "pretrain" / "hiv_supervised", {
        "train": hiv, "label_column": "HIV_active", "val_fraction": 0.05, "test_fraction": 0.0,
        "molecules": {"split": "scaffold", "invalid": "drop"}, "batch_size": 128, **subset},
        task="molecule_classification", seed=42, epochs=1 if quick else 4, monitor="val_auc")
    sup["trainer"].pop("early_stopping")
    t0 = time.perf_counter()
    result = run_pretrain(load_config(None, raw=sup), overwrite=True, verbose=False)
    out["supervised"] = {"run_dir": str(result.run_dir), "wall_s": round(time.perf_counter() - t0, 1),
                         "val_auc": result.summary["val"].get("auc"), "epochs": result.summary["epochs_run"],
                         "n_train": result.summary["n_train"]}
    print(f"pretrain supervised on HIV: val AUC {out['supervised']['val_auc']:.4f} ({out['supervised']['wall_s']} s)",
          flush=True)
    if "attribute_masking" in objective_names():
        am = graph_config("hiv-masking", RUNS / "pretrain" / "hiv_masking", {
            "train": hiv, "label_column": "HIV_active", "val_fraction": 0.05, "test_fraction": 0.0,
            "molecules": {"split": "random", "invalid": "drop"}, "batch_size": 128, **subset},
            task="molecule_classification", seed=42, epochs=1 if quick else 3, monitor="val_loss")
        am["trainer"].pop("early_stopping")
        am["objective"] = {"name": "attribute_masking"}
        t0 = time.perf_counter()
        result = run_pretrain(load_config(None, raw=am), overwrite=True, verbose=False)
        out["attribute_masking"] = {"run_dir": str(result.run_dir), "wall_s": round(time.perf_counter() - t0, 1),
                                    "val": result.summary.get("val"), "epochs": result.summary.get("epochs_run")}
        print(f"pretrain attribute masking on HIV: {out['attribute_masking']['val']} "
              f"({out['attribute_masking']['wall_s']} s)", flush=True)
    return out


# ----- BBBP / ESOL: four recipes ---------------------------------------------------------------------------
def part_dataset(name: str, data: Path, pretrained: dict[str, Any], seeds: list[int], quick: bool) -> dict[str, Any]:
    import molecule_fingerprints

    file, target, task, metric, monitor = DATASETS[name]
    out: dict[str, Any] = {"metric": metric, "splits": {}}
    epochs = 2 if quick else 30
    baseline = molecule_fingerprints.run_dataset(name, data, seeds)  # same split functions, same run
    for split in SPLITS[name]:
        rows: dict[str, list[float]] = {}
        rows["Morgan fingerprints + LightGBM"] = [r["test"] for r in baseline["splits"][split]["runs"]]
        for seed in seeds:
            d = {"train": str(data / file), "label_column": target, "molecules": {"split": split}}
            recipes = {"graph from scratch": graph_config(f"{name}-scratch", RUNS / name / split / f"scratch_s{seed}",
                                                          d, task=task, seed=seed, epochs=epochs, monitor=monitor)}
            for source, info in pretrained.items():
                recipes[f"{source} pretrained, fine-tuned"] = graph_config(
                    f"{name}-ft-{source}", RUNS / name / split / f"ft_{source}_s{seed}", d, task=task, seed=seed,
                    epochs=epochs, monitor=monitor, pretrain=Path(info["run_dir"]))
            if "supervised" in pretrained:
                recipes["supervised pretrained, linear probe"] = graph_config(
                    f"{name}-probe", RUNS / name / split / f"probe_s{seed}", d, task=task, seed=seed,
                    epochs=2 if quick else 60, monitor=monitor, pretrain=Path(pretrained["supervised"]["run_dir"]),
                    strategy={"name": "linear_probe"}, lr=1e-2)
            for recipe, raw in recipes.items():
                result = fit(raw)
                value = result["summary"]["test"][metric.removeprefix("test_")]
                rows.setdefault(recipe, []).append(value)
                print(f"{name} {split} seed {seed} {recipe}: {metric} {value:.4f} ({result['wall_s']} s, best epoch "
                      f"{result['summary']['best_epoch']})", flush=True)
        out["splits"][split] = {k: {"values": v, "mean": float(np.mean(v)), "std": float(np.std(v, ddof=1))
                                    if len(v) > 1 else 0.0} for k, v in rows.items()}
    return out


# ----- OOD: frozen vs fine-tuned as one compare ----------------------------------------------------------------
def part_ood(data: Path, pretrained: dict[str, Any], seeds: list[int], quick: bool) -> dict[str, Any]:
    import yaml

    from headstart.experiments.compare import run_compare

    if "supervised" not in pretrained:
        return {"skipped": "no supervised pretraining"}
    raw = graph_config("bbbp-ood", RUNS / "ood" / "base", {
        "train": str(data / "bbbp" / "bbbp.csv"), "label_column": "p_np",
        "molecules": {"split": "scaffold", "id_test_fraction": 0.1}}, task="molecule_classification", seed=42,
        epochs=2 if quick else 40, monitor="val_auc", pretrain=Path(pretrained["supervised"]["run_dir"]),
        ood={"ridge": 1e-3})
    config = RUNS / "ood" / "bbbp_ood.yaml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(yaml.safe_dump(raw), encoding="utf-8")
    # The seed system: frozen encoder with cached features and a large batch vs the last blocks trained with a
    # smaller encoder LR than the head's and a smaller batch; same pinned split for both, seeds paired.
    strategies = ("linear_probe[optim.lr=1e-2,data.batch_size=256],"
                  "partial:2[optim.encoder_lr=1e-4,optim.lr=1e-3,data.batch_size=32]")
    t0 = time.perf_counter()
    result = run_compare(config, strategies, ",".join(map(str, seeds)), output_dir=RUNS / "ood" / "compare",
                         metric="ood_mahalanobis_auroc", verbose=False)
    out: dict[str, Any] = {"wall_s": round(time.perf_counter() - t0, 1), "strategies": strategies,
                           "summary_md": str(RUNS / "ood" / "compare" / "summary.md"), "runs": {}}
    for row in result.rows:
        keys = [k for k in row if k.startswith("ood_") or k in ("test_auc", "test_acc")]
        out["runs"].setdefault(row["strategy"], []).append({k: row[k] for k in keys} | {"seed": row["seed"]})
    return out


# ----- Uni-Mol epoch time ------------------------------------------------------------------------------------------
def part_unimol(quick: bool) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT / "tests" / "unit" / "backbones"))
    from unimol_weights import write_random_unimol

    weights, _ = write_random_unimol(RUNS / "unimol" / "weights")
    out: dict[str, Any] = {"weights": "random init, real shape (15 layers x 512)", "runs": {}}
    for label, strategy in (("frozen (linear probe, cached)", {"name": "linear_probe"}),
                            ("last 2 layers (partial freeze 0-13)", {"name": "partial", "freeze": "0-13"})):
        raw = {"name": "unimol", "output_dir": str(RUNS / "unimol" / strategy["name"]), "task": "molecule_regression",
               "data": {"train": str(ROOT / "examples" / "data" / "molecules.csv"), "label_column": "logp",
                        "train_subset": 64 if quick else 256, "batch_size": 16, "eval_batch_size": 64,
                        "molecules": {"split": "random"}},
               "backbone": {"type": "unimol", "unimol": {"weights": str(weights)}}, "strategy": strategy,
               "trainer": {"epochs": 2 if quick else 3, "seed": 42, "progress_bar": False, "threads": 1}}
        result = fit(raw)
        s = result["summary"]
        cache = s["cache"]
        build = sum(e["seconds"] for e in cache.get("entries", {}).values()) if cache.get("used") else 0.0
        import pandas as pd

        epochs = pd.read_csv(Path(raw["output_dir"]) / "metrics.csv")["epoch_time_s"]  # train + val of each epoch
        out["runs"][label] = {"train_time_s": s["train_time_s"], "epochs": s["epochs_run"], "n_train": s["n_train"],
                              "cache_build_s": round(build, 1), "epoch_s": round(float(epochs.median()), 3),
                              "epoch_times_s": epochs.round(3).tolist(), "wall_s": result["wall_s"],
                              "trainable_params": s["trainable_params"], "total_params": s["total_params"]}
        print(f"unimol {label}: {out['runs'][label]}", flush=True)
    return out


def _cell(entry: dict[str, Any]) -> str:
    values = ", ".join(f"{v:.3f}" for v in entry["values"])
    return f"{entry['mean']:.3f} ± {entry['std']:.3f} ({values})"


def render(folder: Path) -> str:
    """The results tables of every finished part (the reading and the targets are written by hand above them)."""
    def load(part: str) -> dict[str, Any]:
        path = folder / f"{part}.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}

    lines: list[str] = []
    pre = load("pretrain")
    if pre:
        lines += ["### Pretraining on HIV", "", "| objective | result | wall time |", "|---|---|---:|"]
        if "supervised" in pre:
            s = pre["supervised"]
            lines.append(f"| supervised (HIV_active, scaffold split, {s['epochs']} epochs, {s['n_train']} molecules) "
                         f"| val ROC-AUC {s['val_auc']:.3f} | {s['wall_s']:.0f} s |")
        if "attribute_masking" in pre:
            a = pre["attribute_masking"]
            lines.append(f"| attribute masking (no labels, {a['epochs']} epochs) | val masked-atom accuracy "
                         f"{a['val'].get('masked_acc', float('nan')):.3f} | {a['wall_s']:.0f} s |")
        lines.append("")
    for name, title in (("bbbp", "BBBP, test ROC-AUC (higher is better)"), ("esol", "ESOL, test RMSE (lower is better)")):
        part = load(name)
        for split, rows in (part.get("splits") or {}).items():
            lines += [f"### {title}, {split} split 80/10/10, seeds {', '.join(map(str, part['seeds']))}", "",
                      "| recipe | mean ± std (per seed) |", "|---|---|"]
            lines += [f"| {recipe} | {_cell(entry)} |" for recipe, entry in rows.items()]
            lines.append("")
    ood = load("ood")
    if ood.get("runs"):
        lines += ["### OOD on BBBP (scaffold-OOD protocol: ID = held-out molecules of training scaffolds, OOD = "
                  "unseen scaffolds), mean ± std over seeds", "",
                  "| strategy | score | AUROC | AUPR-out | AUPR-in | FPR95 |", "|---|---|---:|---:|---:|---:|"]
        for strategy, runs in ood["runs"].items():
            for score in ("msp", "max_logit", "energy", "mahalanobis"):
                cells = []
                for metric in ("auroc", "aupr_out", "aupr_in", "fpr95"):
                    v = np.asarray([float(r[f"ood_{score}_{metric}"]) for r in runs])
                    cells.append(f"{v.mean():.3f} ± {v.std(ddof=1) if len(v) > 1 else 0.0:.3f}")
                lines.append(f"| {strategy} | {score} | " + " | ".join(cells) + " |")
            auc = np.asarray([float(r["test_auc"]) for r in runs if "test_auc" in r])
            if len(auc):
                lines.append(f"| {strategy} | (task: test ROC-AUC) | {auc.mean():.3f} ± "
                             f"{auc.std(ddof=1) if len(auc) > 1 else 0.0:.3f} | | | |")
        summary = Path(ood["summary_md"])
        shown = summary.relative_to(ROOT) if summary.is_relative_to(ROOT) else summary
        lines += ["", f"Paired tests: `{shown}` (headstart compare's summary, metric ood_mahalanobis_auroc; "
                      f"benchmarks/runs is not committed).", ""]
    uni = load("unimol")
    if uni.get("runs"):
        lines += ["### Uni-Mol (random-init checkpoint, real shape), epoch time on 2 CPU cores (1 torch thread)", "",
                  "| strategy | train molecules | median epoch, train + val (s) | feature-cache build (s) | "
                  "trainable / total params |",
                  "|---|---:|---:|---:|---|"]
        for label, r in uni["runs"].items():
            lines.append(f"| {label} | {r['n_train']} | {r['epoch_s']:.2f} | {r['cache_build_s']:.1f} | "
                         f"{r['trainable_params']:,} / {r['total_params']:,} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=DATA)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--parts", default=",".join(PARTS))
    parser.add_argument("--quick", action="store_true", help="tiny epochs and subsets: a smoke run")
    parser.add_argument("--tables", action="store_true", help="print the tables of the finished parts and exit")
    args = parser.parse_args(argv)
    if args.tables:
        print(render(RESULTS / ("molecules_quick" if args.quick else "molecules")))
        return 0
    if not (args.data_dir / "bbbp" / "bbbp.csv").exists():
        print(f"skipped: {args.data_dir} has no bbbp/bbbp.csv (the shared datasets beside the repo)")
        return 0
    parts = [p for p in args.parts.split(",") if p]
    folder = RESULTS / ("molecules_quick" if args.quick else "molecules")
    folder.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/molecules.py " + " ".join(argv if argv is not None else sys.argv[1:])

    def save(part: str, result: dict[str, Any]) -> None:
        payload = {"command": command, "graph": GRAPH, "seeds": args.seeds, **result}
        (folder / f"{part}.json").write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")

    def load(part: str) -> dict[str, Any]:
        path = folder / f"{part}.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}

    if "pretrain" in parts:
        save("pretrain", part_pretrain(args.data_dir, args.quick))
    pretrained = {k: v for k, v in load("pretrain").items() if isinstance(v, dict) and "run_dir" in v}
    for name in ("bbbp", "esol"):
        if name in parts:
            save(name, part_dataset(name, args.data_dir, pretrained, args.seeds, args.quick))
    if "ood" in parts:
        save("ood", part_ood(args.data_dir, pretrained, args.seeds, args.quick))
    if "unimol" in parts:
        save("unimol", part_unimol(args.quick))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
