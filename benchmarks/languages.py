"""Text that is not English: the packaged MiniLM against the classic TF-IDF baseline on Chinese data.

For each dataset this runs, through the real CLI on seeded splits that every recipe shares:

(a) the classic baseline (TF-IDF character 1-3-grams + logistic regression, C on val): ``fit --baseline``;
(b) headstart with the packaged MiniLM as is (``data.accept_unk: true``: its English vocabulary reads most
    Chinese characters as [UNK]);
(c) the same with ``backbone.extend_vocab`` (the training text's missing characters added to the vocabulary);
(d) extension + ``headstart pretrain --objective mlm`` on the unlabelled training text, then fine-tuned;
(e) the same pretrained encoder, linear probe.

It writes ``benchmarks/results/languages.json`` and ``languages.md`` (test accuracy, macro-F1, wall time, the
[UNK] rate before and after, every command). Needs ``../shared/data``; run from the repo root:

    python benchmarks/languages.py [--only TASK ...] [--recipes b c d e] [--report-only]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results"
RUNS = ROOT / "benchmarks" / "runs" / "languages"  # gitignored
OUT = RESULTS / "languages.json"

SHOP = DATA / "online_shopping_10_cats" / "online_shopping_10_cats.csv.gz"
SHOP_DATA = {"train": str(SHOP), "text_column": "review", "label_column": "label", "val_fraction": 0.02,
             "test_fraction": 0.03, "train_subset": 2000, "max_length": 64}
# Seeded carves: headstart splits the file itself (data.val_fraction / test_fraction / split_seed), so every
# recipe, and the baseline, sees exactly the same train / val / test rows.
TASKS: dict[str, dict[str, Any]] = {
    "chnsenticorp_htl": {
        "what": "hotel-review sentiment, 2 classes; seeded 70/10/20 carve of the 7,766 reviews; 2,000 labelled "
                "training rows (MLM: all 5,436 training rows, unlabelled)",
        "data": {"train": str(DATA / "chnsenticorp_htl" / "ChnSentiCorp_htl_all.csv"), "text_column": "review",
                 "label_column": "label", "val_fraction": 0.1, "test_fraction": 0.2, "train_subset": 2000,
                 "max_length": 64},
        "mlm_subset": None,
    },
    "online_shopping_sentiment": {
        "what": "e-commerce review sentiment, 2 classes; seeded 2% val / 3% test of the 62,774 reviews, 2,000 "
                "labelled training rows (MLM: 10,000 unlabelled training rows)",
        "data": SHOP_DATA,
        "mlm_subset": 10000,
    },
    "online_shopping_category": {
        "what": "e-commerce review product category, 10 classes; same fractions (its own stratified carve), 2,000 "
                "labelled training rows (MLM: 10,000 unlabelled training rows)",
        "data": {**SHOP_DATA, "label_column": "cat"},
        "mlm_subset": 10000,
    },
    "thucnews_titles": {
        "what": "news-title topic, 10 classes; train = the shipped dev.txt (10,000 titles: 10% carved for val, "
                "3,000 labelled training rows; MLM: all 9,000), test = test.txt (10,000)",
        "data": {"train": str(DATA / "thucnews_titles" / "dev.txt"), "test": str(DATA / "thucnews_titles" / "test.txt"),
                 "format": "tsv", "column_names": ["text", "label"], "text_column": "text", "label_column": "label",
                 "val_fraction": 0.1, "train_subset": 3000, "max_length": 32},
        "mlm_subset": None,
    },
}
# CPU budget (2 cores): MiniLM trains at roughly 1,000-1,500 tokens/s here, hence the subsets, max_length 64 and
# two epochs; the TF-IDF baseline gets exactly the same labelled rows.
EXTEND = {"from": "train", "min_freq": 2, "max_new": 20000}
COMMON: dict[str, Any] = {
    "optim": {"lr": 1.0e-3, "encoder_lr": 2.0e-4, "scheduler": "cosine", "warmup_epochs": 0.2},
    "trainer": {"epochs": 2, "seed": 42, "monitor": "val_f1", "monitor_mode": "max", "progress_bar": False},
}
RECIPES = {
    "b": "packaged MiniLM as is (full fine-tune)",
    "c": "+ vocabulary extension (full fine-tune)",
    "d": "+ extension + MLM domain pretraining, full fine-tune",
    "e": "+ extension + MLM domain pretraining, linear probe",
}


# Further recipes tried after the main table (run with --recipes NAME; reported below it).
EXTRA = {
    "c_long": "+ extension, 4 epochs, encoder lr 5e-4 (full fine-tune)",
    "d_long": "+ extension + 3-epoch MLM (lr 1e-3), 4 epochs, encoder lr 5e-4 (full fine-tune)",
}
ALL = {**RECIPES, **EXTRA}


def _config(task: str, recipe: str) -> dict[str, Any]:
    spec = TASKS[task]
    data = {**spec["data"], "batch_size": 32, "eval_batch_size": 256}
    raw: dict[str, Any] = {"task": "text_classification", "output_dir": str(RUNS / task / recipe), "data": data,
                           "backbone": {"type": "hf", "pooling": "mean"}, "strategy": {"name": "full"},
                           **json.loads(json.dumps(COMMON))}
    if recipe == "b":
        data["accept_unk"] = True
    else:
        raw["backbone"]["extend_vocab"] = dict(EXTEND)
    if recipe in ("mlm", "mlm_long"):
        data.pop("train_subset", None)
        if spec["mlm_subset"]:
            data["train_subset"] = spec["mlm_subset"]
        raw["optim"] = {"lr": 5.0e-4, "encoder_lr": 2.0e-4, "scheduler": "cosine", "warmup_epochs": 0.1}
        raw["trainer"] = {"epochs": 1, "seed": 42, "progress_bar": False}
    if recipe in EXTRA:
        raw["optim"]["encoder_lr"] = 5.0e-4
        raw["trainer"]["epochs"] = 4
    if recipe == "mlm_long":
        raw["optim"] = {"lr": 1.0e-3, "encoder_lr": 1.0e-3, "scheduler": "cosine", "warmup_epochs": 0.1}
        raw["trainer"] = {"epochs": 3, "seed": 42, "progress_bar": False}
    if recipe == "e":
        raw["strategy"] = {"name": "linear_probe"}
        raw["optim"] = {"lr": 1.0e-2, "scheduler": "cosine"}
        raw["trainer"]["epochs"] = 10
    return raw


def _run(cmd: list[str], log: Path) -> tuple[int, float]:
    t0 = time.perf_counter()
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    log.write_text(proc.stdout[-30000:] + "\n--- stderr ---\n" + proc.stderr[-30000:], encoding="utf-8")
    return proc.returncode, wall


def _write_config(task: str, recipe: str) -> Path:
    path = RUNS / "configs" / f"{task}_{recipe}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(_config(task, recipe), allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def _rel(path: Path) -> str:
    return os.path.relpath(path, ROOT)


def run_task(task: str, recipes: list[str]) -> dict[str, Any]:
    """Run the recipes of one dataset; returns {recipe: record}."""
    out: dict[str, Any] = {}
    logs = RUNS / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    for name, users in (("mlm", {"d", "e"}), ("mlm_long", {"d_long"})):
        if not users & set(recipes):
            continue
        cfg = _write_config(task, name)
        cmd = ["headstart", "pretrain", _rel(cfg), "--objective", "mlm", "--overwrite"]
        code, wall = _run(cmd, logs / f"{task}_{name}.log")
        record: dict[str, Any] = {"command": " ".join(cmd), "exit_code": code, "wall_s": round(wall, 1)}
        if code == 0:
            summary = json.loads((RUNS / task / name / "summary.json").read_text(encoding="utf-8"))
            record.update(val=summary.get("val"), tokenizer=summary.get("tokenizer"),
                          epochs=summary.get("epochs_trained", summary.get("best_epoch")))
        out[name] = record
    for recipe in recipes:
        mlm = "mlm_long" if recipe == "d_long" else "mlm"
        mlm_dir = RUNS / task / mlm
        cfg = _write_config(task, recipe)
        cmd = ["headstart", "fit", _rel(cfg), "--overwrite"]
        if recipe in ("d", "e", "d_long"):
            cmd += ["--pretrain", _rel(mlm_dir)]
        if recipe == "b":
            cmd += ["--baseline"]  # (a): the classic baseline on the same split, in summary.json
        code, wall = _run(cmd, logs / f"{task}_{recipe}.log")
        record = {"command": " ".join(cmd), "exit_code": code, "wall_s": round(wall, 1)}
        if recipe in ("d", "e", "d_long") and mlm in out:
            record["wall_s_with_pretrain"] = round(wall + out[mlm]["wall_s"], 1)
        if code == 0:
            summary = json.loads((RUNS / task / recipe / "summary.json").read_text(encoding="utf-8"))
            record.update(test=summary["test"], val=summary["val"], best_epoch=summary["best_epoch"],
                          tokenizer=summary.get("tokenizer"), train_time_s=summary.get("train_time_s"))
            if recipe == "b" and summary.get("classic_baseline"):
                out["a"] = {"command": " ".join(cmd) + "  (the baseline row)", **summary["classic_baseline"]}
        else:
            print(f"{task} {recipe} failed (exit {code}); see {logs / f'{task}_{recipe}.log'}", file=sys.stderr)
        out[recipe] = record
    return out


def _fmt(x: Any, digits: int = 3) -> str:
    return "—" if x is None else f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def _test(record: dict[str, Any] | None, key: str) -> float | None:
    if not record:
        return None
    test = record.get("test") or {}
    return test.get(key)


def _unk(record: dict[str, Any] | None, key: str) -> float | None:
    tok = (record or {}).get("tokenizer") or {}
    return tok.get(key)


def write_markdown(results: dict[str, Any]) -> None:
    meta = results.get("_meta", {})
    lines = [
        "# Text that is not English: the packaged MiniLM vs the classic baseline (Chinese)",
        "",
        f"Written by `python benchmarks/languages.py` on {meta.get('date', '?')} ({meta.get('machine', '?')}). "
        "Every recipe of a dataset trains on the same seeded split (headstart carves it from the file); test "
        "accuracy and macro-F1 on the test split. Wall time: the whole CLI command (startup, data, training, "
        "evaluation); (d) and (e) also list it with the MLM pretraining added. The configs are written by "
        "`benchmarks/languages.py` (`_config`: MiniLM, mean pooling, batch 32, head lr 1e-3, encoder lr 2e-4, "
        "cosine, 2 epochs, monitor val_f1; MLM: 1 epoch, lr 5e-4 / 2e-4, mask rate 0.15, token masking).",
        "",
        "Recipes: (a) TF-IDF + logistic regression (`fit --baseline`); " + "; ".join(
            f"({k}) {v}" for k, v in RECIPES.items()) + ".",
        "",
    ]
    wins = 0
    judged = 0
    for task, spec in TASKS.items():
        rec = results.get(task)
        if not rec:
            continue
        lines += [f"## {task}", "", spec["what"] + ".", "",
                  "| recipe | test acc | test macro-F1 | [UNK] rate (before -> after extension) | wall s |",
                  "|---|---|---|---|---|"]
        a = rec.get("a")
        if a:
            params = a.get("params") or {}
            chosen = ", ".join(f"{k}={params[k]}" for k in ("features", "C") if k in params)
            lines.append(f"| (a) {a.get('label', a.get('name', ''))} ({chosen}) | {_fmt(_test(a, 'acc'))} | "
                         f"{_fmt(_test(a, 'f1'))} | n/a | {_fmt(a.get('wall_time_s'), 1)} |")
        for key in ALL:
            r = rec.get(key)
            if not r:
                continue
            if r.get("exit_code"):
                lines.append(f"| ({key}) {ALL[key]} | failed (exit {r['exit_code']}) | | | {r['wall_s']} |")
                continue
            before = _unk(r, "unk_rate_before_extension")
            after = _unk(r, "unk_rate")
            unk = f"{_fmt(after)}" if before is None else f"{_fmt(before)} -> {_fmt(after)}"
            wall = f"{r['wall_s']}" + (f" ({r['wall_s_with_pretrain']} with MLM)" if "wall_s_with_pretrain" in r else "")
            lines.append(f"| ({key}) {ALL[key]} | {_fmt(_test(r, 'acc'))} | {_fmt(_test(r, 'f1'))} | {unk} | "
                         f"{wall} |")
        for name in ("mlm", "mlm_long"):
            mlm = rec.get(name)
            if mlm:
                val = {k: round(v, 3) for k, v in (mlm.get("val") or {}).items() if isinstance(v, float)}
                lines += ["", f"MLM pretraining ({name}): exit {mlm['exit_code']}, {mlm['wall_s']} s; val {val}."]
        best = max((_test(rec.get(k), "acc") or 0.0) for k in ("c", "d", "c_long", "d_long"))
        base = _test(a, "acc") if a else None
        if base is not None and any(rec.get(k) for k in ("c", "d", "c_long", "d_long")):
            judged += 1
            wins += best > base
            lines += ["", f"Best of the (c)/(d) recipes: {best:.3f} vs TF-IDF {base:.3f}: "
                          f"{'headstart wins' if best > base else 'the baseline wins'}."]
        lines += ["", "Commands:", ""] + [f"- ({k}) `{r['command']}`" for k, r in rec.items() if isinstance(r, dict)
                                          and "command" in r] + [""]
    lines += ["## Target", "",
              f"(c) or (d) beats the TF-IDF baseline on at least two of the three datasets: {wins} of {judged} "
              f"dataset tasks judged -> **{'met' if wins >= 2 else 'missed'}**.", ""]
    notes = results.get("_notes")
    if notes:
        lines += ["## Recipes tried and notes", "", *notes, ""]
    (RESULTS / "languages.md").write_text("\n".join(lines), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="*", default=None, choices=list(TASKS))
    parser.add_argument("--recipes", nargs="*", default=list(RECIPES), choices=list(ALL))
    parser.add_argument("--report-only", action="store_true", help="rewrite the markdown from the JSON only")
    args = parser.parse_args(argv)
    results = json.loads(OUT.read_text(encoding="utf-8")) if OUT.exists() else {}
    if args.report_only:
        write_markdown(results)
        return 0
    if not DATA.is_dir():
        print(f"{DATA} is absent: nothing to benchmark")
        return 0
    RESULTS.mkdir(parents=True, exist_ok=True)
    import torch

    for task in args.only or list(TASKS):
        print(f"== {task}", flush=True)
        results[task] = {**results.get(task, {}), **run_task(task, args.recipes)}
        results["_meta"] = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.processor() or platform.machine()}"
                            f", {os.cpu_count()} cores, torch {torch.__version__}"}
        OUT.write_text(json.dumps(results, indent=2, ensure_ascii=False), encoding="utf-8")
        write_markdown(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
