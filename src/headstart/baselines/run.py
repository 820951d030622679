"""The classic baseline beside a fit run (``fit --baseline``) or a compare grid (its ``baseline:<name>`` row).

``fit --baseline``: :func:`fit_run_baseline` fits the modality's baseline on the run's own splits and writes
``baseline.json`` in the run directory, a ``classic_baseline`` entry in summary.json and one console line that
says which wins. ``compare``: :func:`compare_baseline_row` fits it once on the grid's split (the base config,
``split_seed``), keeps the result in ``classic_baseline.json`` of the compare directory (reused while the data,
task, monitor and seeds are unchanged: a resumed grid reports the same row), and returns the results.csv row.
:func:`verdict` is the plain sentence both say.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from headstart.baselines.base import BaselineResult, run_classic_baseline
from headstart.fileio import write_json
from headstart.metrics.direction import lower_is_better

if TYPE_CHECKING:
    from headstart.config import RunConfig

__all__ = ["CLASSIC_FILE", "CLASSIC_PREFIX", "baseline_label", "baseline_row", "compare_baseline_row",
           "fit_run_baseline", "verdict"]

CLASSIC_PREFIX = "baseline:"  # the strategy column of the classic row: baseline:tfidf_logreg
CLASSIC_FILE = "classic_baseline.json"
_VERSION = 1  # bump when a baseline's features or model change: saved compare rows are then refitted


def _num(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _params_words(params: Mapping[str, Any]) -> str:
    chosen = [f"{k}={params[k]:g}" for k in ("C", "alpha") if isinstance(params.get(k), (int, float))]
    if "chosen_on" in params and chosen:
        chosen[-1] += f" chosen on {params['chosen_on']}"
    return ", ".join([str(params["features"])] * ("features" in params) + chosen)


def verdict(label: str, value: Any, others: Mapping[str, Any], metric: str, what: str = "fine-tuned strategy") -> str:
    """Whether the classic baseline beats ``others`` (name -> value, e.g. mean per strategy) on ``metric``."""
    classic = _num(value)
    scored = {k: _num(v) for k, v in others.items() if math.isfinite(_num(v))}
    if not math.isfinite(classic):
        return f"The classic baseline ({label}) has no {metric}, so it cannot be compared."
    if not scored:
        return f"The classic baseline ({label}) scores {classic:.4f} {metric}; no {what} has a {metric} to compare."
    lower = lower_is_better(metric)
    order = sorted(scored, key=lambda k: scored[k], reverse=not lower)  # best first
    best, worst = order[0], order[-1]
    beaten = [k for k in order if (classic < scored[k] if lower else classic > scored[k])]
    plural = (what[:-1] + "ies" if what.endswith("y") else what + "s") if len(scored) > 1 else what
    if len(beaten) == len(scored):
        return (f"The classic baseline ({label}) beats every {what}: {classic:.4f} vs {scored[best]:.4f} {metric}"
                + (f" (the best, {best})." if len(scored) > 1 else f" ({best})."))
    if beaten:
        return (f"The classic baseline ({label}) beats {len(beaten)} of {len(scored)} {plural} ({', '.join(beaten)}) "
                f"on {metric} but not the best, {best}: {classic:.4f} vs {scored[best]:.4f}.")
    if any(scored[k] == classic for k in scored):
        return (f"No {what} beats the classic baseline ({label}) on {metric} by more than a tie: {classic:.4f} vs "
                f"{scored[best]:.4f} for {best}.")
    return (f"Every {what} beats the classic baseline ({label}) on {metric}: {classic:.4f} vs "
            f"{scored[worst]:.4f} for the weakest, {worst}" + (f", and {scored[best]:.4f} for the best, {best}."
                                                               if len(scored) > 1 else "."))


def _metric_of(cfg: RunConfig, run_metrics: Mapping[str, Mapping[str, Any]], classic: BaselineResult) -> str:
    """The metric the verdict reads: the monitored one on test where both have it, else on val."""
    key = cfg.trainer.monitor.removeprefix("val_")
    for split in ("test", "val"):
        if key in (run_metrics.get(split) or {}) and key in classic.metrics.get(split, {}):
            return f"{split}_{key}"
    return f"test_{key}"


def fit_run_baseline(cfg: RunConfig, splits: Any, run: Path, summary: dict[str, Any],
                     verbose: bool = True) -> dict[str, Any]:
    """Fit the classic baseline on a finished run's splits: ``baseline.json``, the summary entry (returned; the
    caller writes summary.json) and a console line."""
    result = run_classic_baseline(cfg, splits)
    entry = result.to_dict()
    if result.status == "done":
        metric = _metric_of(cfg, summary, result)
        split, key = metric.split("_", 1)
        entry["verdict"] = verdict(result.label, result.metrics.get(split, {}).get(key),
                                   {"this run": (summary.get(split) or {}).get(key)}, metric, what="fine-tuned run")
    write_json(run / "baseline.json", entry)
    if verbose:
        if result.status == "done":
            print(f"Classic baseline ({_params_words(result.params)}): {entry['verdict']} (baseline.json)")
        else:
            print(f"Classic baseline skipped: {result.reason}")
    return entry


def baseline_label(strategy: str) -> str:
    """The human words of a ``baseline:<name>`` row (its name when the baseline is not registered here)."""
    from headstart.baselines.base import baseline_names, get_baseline

    name = strategy.removeprefix(CLASSIC_PREFIX)
    return get_baseline(name).label if name in baseline_names() else name


def baseline_row(result: BaselineResult) -> dict[str, Any]:
    """The results.csv row of a baseline (strategy ``baseline:<name>``, metrics as ``val_*`` / ``test_*``)."""
    row: dict[str, Any] = {"run": "classic_baseline", "strategy": CLASSIC_PREFIX + result.name, "seed": "",
                           "status": result.status, "run_dir": CLASSIC_FILE, "wall_time_s": result.wall_time_s,
                           "train_time_s": result.wall_time_s}
    for split, metrics in result.metrics.items():
        for key, value in metrics.items():
            row[f"{split}_{key}"] = value
    words = _params_words(result.params)
    row["note"] = (f"classic baseline: {result.label}" + (f" ({words})" if words else "")
                   if result.status == "done" else f"classic baseline skipped: {result.reason}")
    return row


def _digest(cfg: RunConfig, split_seed: int) -> str:
    raw = cfg.model_dump(mode="json")
    keep = {"version": _VERSION, "task": raw["task"], "data": raw["data"], "loss": raw.get("loss"),
            "monitor": [raw["trainer"]["monitor"], raw["trainer"]["monitor_mode"]], "seed": raw["trainer"]["seed"],
            "split_seed": split_seed, "pretrain": raw.get("pretrain")}
    return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]


def compare_baseline_row(cfg: RunConfig, split_seed: int, out: Path, verbose: bool = True) -> dict[str, Any]:
    """The classic row of a compare grid: fitted on the grid's split, or read back from ``classic_baseline.json``
    when it was fitted on the same data, task, monitor and seeds."""
    path, digest = out / CLASSIC_FILE, _digest(cfg, split_seed)
    if path.exists():
        saved = json.loads(path.read_text(encoding="utf-8"))
        if saved.get("digest") == digest and saved.get("result", {}).get("status") == "done":
            return baseline_row(BaselineResult.from_dict(saved["result"]))
    from headstart.modalities import get_modality

    if verbose:
        print("compare: fitting the classic baseline on the grid's split", flush=True)
    splits = get_modality(cfg.task).load_splits(cfg, split_seed)
    result = run_classic_baseline(cfg, splits)
    write_json(path, {"digest": digest, "split_seed": split_seed, "result": result.to_dict()})
    if verbose:
        shown = result.reason if result.status != "done" else ", ".join(
            f"{s}_{k}={v:.4f}" for s, m in result.metrics.items() for k, v in m.items() if k in ("acc", "rmse", "auc"))
        print(f"classic baseline {result.name}: {shown}", flush=True)
    return baseline_row(result)
