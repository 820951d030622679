"""Text pairs as a cross-encoder vs a Siamese model, on MRPC (English) and AFQMC (Chinese).

Each dataset config (``benchmarks/configs/pairs_{mrpc,afqmc}.yaml``) runs twice through the CLI:
``--set backbone.pair=cross`` (both texts in one MiniLM input) and ``--set backbone.pair=siamese`` (one
shared MiniLM per text, fused by ``backbone.fusion`` into the head). Writes
``benchmarks/results/pairs.{json,md}``: test accuracy, macro-F1, F1 of the positive class (GLUE's
MRPC figure), the majority-class baseline, each command and its wall time. AFQMC's config adds the training
file's Chinese characters to MiniLM's vocabulary (``backbone.extend_vocab``).

Run from the repo root:  python benchmarks/run_pairs.py [--only mrpc] [--modes cross siamese]
Needs ../shared/data/mrpc and ../shared/data/afqmc; skips a dataset that is absent.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
RUNS = ROOT / "benchmarks" / "runs" / "pairs"  # gitignored
DATA = ROOT.parent / "shared" / "data"
DATASETS = {"mrpc": "benchmarks/configs/pairs_mrpc.yaml", "afqmc": "benchmarks/configs/pairs_afqmc.yaml"}
MODES = ("cross", "siamese")


def _majority(config: str) -> float:
    """Accuracy of always predicting the training split's most frequent label, on the test file."""
    sys.path.insert(0, str(ROOT / "src"))
    from headstart.config import load_config
    from headstart.data.readers import read_table

    d = load_config(ROOT / config).data
    labels = {}
    for split in ("train", "test"):  # a config's relative paths start at its own folder
        path = (ROOT / config).parent / getattr(d, split)
        frame = read_table(path, d.format, f"data.{split}", column_names=d.column_names)
        labels[split] = frame[d.label_column].astype(str)
    top = labels["train"].value_counts().idxmax()
    return round(float((labels["test"] == top).mean()), 4)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", nargs="+", choices=list(DATASETS), default=list(DATASETS))
    p.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES))
    args = p.parse_args(argv)
    out_json = RESULTS / "pairs.json"
    out: dict[str, Any] = json.loads(out_json.read_text()) if out_json.exists() else {"runs": {}}
    out["runs"] = out.get("runs", {})
    for name in args.only:
        if not (DATA / name).is_dir():
            print(f"{DATA / name} is absent: skipping {name}.")
            continue
        out.setdefault("majority", {})[name] = _majority(DATASETS[name])
        for mode in args.modes:
            run_dir = RUNS / f"{name}_{mode}"
            cmd = ["headstart", "fit", DATASETS[name], "--set", f"backbone.pair={mode}", "--output-dir",
                   str(run_dir.relative_to(ROOT)), "--overwrite"]
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=dict(os.environ))
            wall = round(time.perf_counter() - t0, 1)
            log = RESULTS / "pairs_logs" / f"{name}_{mode}.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            log.write_text(proc.stdout[-20000:] + "\n--- stderr ---\n" + proc.stderr[-20000:], encoding="utf-8")
            row: dict[str, Any] = {"command": " ".join(cmd), "exit_code": proc.returncode, "wall_s": wall,
                                   "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
            if proc.returncode == 0:
                s = json.loads((run_dir / "summary.json").read_text())
                row.update({k: s["test"].get(k) for k in ("acc", "f1", "f1_pos", "auc")})
                row.update(val_acc=s["val"].get("acc"), train_time_s=s["train_time_s"], n_train=s["n_train"],
                           n_test=s["n_test"], trainable_params=s["trainable_params"], best_epoch=s["best_epoch"],
                           cache=s["cache"].get("used"))
            out["runs"][f"{name}/{mode}"] = row
            print(f"{name} {mode}: exit {proc.returncode}, test acc {row.get('acc')}, {wall} s", flush=True)
            _write(out)
    print((RESULTS / "pairs.md").read_text())
    return 0


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else ("-" if v is None else str(v))


def _write(out: dict[str, Any]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "pairs.json").write_text(json.dumps(out, indent=2), encoding="utf-8")
    lines = [
        "## Text pairs: cross-encoder vs Siamese (packaged MiniLM, CPU)",
        "",
        "Made with `python benchmarks/run_pairs.py`. Cross-encoder: both texts in one input "
        "(`[CLS] a [SEP] b`), mean-pooled; Siamese: one shared encoder per text, fused as "
        "[a, b, |a-b|, a*b] into the same MLP head. F1 = macro-F1; F1 pos = F1 of label 1 (GLUE's MRPC figure).",
        "",
        "| dataset | mode | test acc | test F1 | test F1 pos | AUC | majority acc | n train / test | train s | wall s "
        "| command |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, r in out["runs"].items():
        name, mode = key.split("/")
        lines.append(
            f"| {name} | {mode} | {_fmt(r.get('acc'))} | {_fmt(r.get('f1'))} | {_fmt(r.get('f1_pos'))} | "
            f"{_fmt(r.get('auc'))} | {_fmt(out.get('majority', {}).get(name))} | {r.get('n_train')} / "
            f"{r.get('n_test')} | {r.get('train_time_s')} | {r.get('wall_s')} | `{r['command']}` |"
        )
    (RESULTS / "pairs.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    raise SystemExit(main())
