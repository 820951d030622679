"""What a tune leaves behind: ``trials.csv`` (a row per trial), ``plots/`` and ``report.html`` / ``summary.md``.

Everything is read back from the study, not from this process's memory, so a study that several machines
share is reported whole by any of them. Plots are Optuna's own (optimisation history, intermediate values,
parameter importances by PED-ANOVA, slice), drawn with matplotlib so the report stays one offline file.
"""

from __future__ import annotations

import csv
import os
import shutil
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any

from headstart.experiments.report_html import Image, Page, Table, fmt, render_page_html, render_page_markdown
from headstart.fileio import atomic_path, atomic_write_text
from headstart.tune.study import SURPLUS
from headstart.tune.trial import PRUNED_AT

__all__ = ["BASE_COLUMNS", "best_trial", "trial_rows", "write_trials_csv", "write_tune_report"]

BASE_COLUMNS = ("number", "state", "value", PRUNED_AT, "epochs_run", "best_epoch", "wall_time_s", "train_time_s",
                "trainable_params", "total_params", "cache_hits", "cache_entries", "machine", "retry_of",
                "run_dir", "error")
DPI = 110
MIN_FOR_IMPORTANCE = 4  # complete trials before an importance means anything


def best_trial(study: Any) -> Any | None:
    """The best complete trial (pruned and failed trials never are), or None before the first completes."""
    try:
        return study.best_trial
    except ValueError:
        return None


def _run_dir(t: Any, out: Path) -> str:
    tune_dir = t.user_attrs.get("tune_dir")
    if tune_dir == str(out.resolve()):
        return f"trials/{t.number}"
    return f"{t.user_attrs.get('machine', '?')}:{tune_dir}/trials/{t.number}" if tune_dir else ""


def trial_rows(study: Any, metric: str, out: Path) -> list[dict[str, Any]]:
    """A row per trial: state, value, params (``param:<key>``), the metric after each epoch
    (``<metric>@<epoch>``), the run's cost and its val / test metrics."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.user_attrs.get(SURPLUS):  # asked after the study was full, never run
            continue
        result = t.user_attrs.get("result") or {}
        row: dict[str, Any] = {"number": t.number, "state": t.state.name, "value": t.value,
                               PRUNED_AT: t.user_attrs.get(PRUNED_AT), "machine": t.user_attrs.get("machine"),
                               "retry_of": t.user_attrs.get("retry_of"), "run_dir": _run_dir(t, out),
                               "error": t.user_attrs.get("error")}
        for key in ("epochs_run", "best_epoch", "wall_time_s", "train_time_s", "trainable_params", "total_params",
                    "cache_hits", "cache_entries"):
            row[key] = result.get(key)
        if row["wall_time_s"] is None and t.datetime_start and t.datetime_complete:
            row["wall_time_s"] = round((t.datetime_complete - t.datetime_start).total_seconds(), 2)
        row["epochs_planned"] = ((t.user_attrs.get("config") or {}).get("trainer") or {}).get("epochs")
        row.update({f"param:{k}": v for k, v in t.params.items()})
        row.update({f"{metric}@{step}": v for step, v in sorted(t.intermediate_values.items())})
        for split in ("val", "test"):
            row.update({f"{split}_{k}": v for k, v in (result.get(split) or {}).items() if isinstance(v, (int, float))})
        rows.append(row)
    return rows


def write_trials_csv(rows: list[dict[str, Any]], path: Path) -> None:
    params = list(dict.fromkeys(k for r in rows for k in r if k.startswith("param:")))
    epochs = sorted({k for r in rows for k in r if "@" in k}, key=lambda k: int(k.rsplit("@", 1)[1]))
    rest = sorted({k for r in rows for k in r} - set(BASE_COLUMNS) - set(params) - set(epochs))
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=[*BASE_COLUMNS, *params, *epochs, *rest], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def _savings(rows: list[dict[str, Any]]) -> dict[str, float] | None:
    """Epochs and (estimated) seconds pruning saved against running every pruned trial to its last epoch."""
    pruned = [r for r in rows if r["state"] == "PRUNED" and r.get("epochs_run") and r.get("epochs_planned")]
    if not pruned:
        return None
    skipped = sum(r["epochs_planned"] - r["epochs_run"] for r in pruned)
    seconds = sum((r["epochs_planned"] - r["epochs_run"]) * (r.get("train_time_s") or 0) / r["epochs_run"]
                  for r in pruned)
    finished = [r for r in rows if r["state"] in ("COMPLETE", "PRUNED") and r.get("epochs_run")]
    trained = sum(r["epochs_run"] for r in finished)
    spent = sum(r.get("wall_time_s") or 0 for r in finished)
    return {"pruned": len(pruned), "epochs_skipped": skipped, "epochs_trained": trained,
            "seconds_saved": seconds, "seconds_spent": spent,
            "mean_stop": sum(r["epochs_run"] for r in pruned) / len(pruned)}


def _plots(study: Any, rows: list[dict[str, Any]], out: Path, best: Any) -> tuple[list[Image], list[str]]:
    """Optuna's matplotlib plots of the study (those its trials allow), and notes on the ones skipped."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as vis

    complete = [r for r in rows if r["state"] == "COMPLETE"]
    wanted = [("optimization_history", vis.plot_optimization_history, "each trial's value and the best so far",
               len(complete) >= 1),
              ("intermediate_values", vis.plot_intermediate_values,
               "the metric after every epoch: pruned trials are the curves that stop early",
               any("@" in k for r in rows for k in r)),
              ("param_importances", lambda s: vis.plot_param_importances(s, evaluator=_evaluator()),
               "PED-ANOVA importance (Optuna's): how much each param's values set the best trials apart from the "
               "rest",
               len(complete) >= MIN_FOR_IMPORTANCE),
              ("slice", vis.plot_slice, "the value against each param", len(complete) >= 1)]
    images, notes = [], []
    (out / "plots").mkdir(parents=True, exist_ok=True)
    for name, plot, caption, possible in wanted:
        if not possible:
            notes.append(f"No {name.replace('_', ' ')} plot yet: too few complete trials ({len(complete)}).")
            continue
        path = out / "plots" / f"{name}.png"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ax = plot(study)
                first = ax.flat[0] if hasattr(ax, "flat") else ax
                fig = first.figure
            with atomic_path(path) as tmp:
                fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight")
            plt.close(fig)
        except (ValueError, RuntimeError, ZeroDivisionError) as exc:  # e.g. no param varies yet
            plt.close("all")
            notes.append(f"No {name.replace('_', ' ')} plot: {exc}")
            continue
        images.append(Image(path, f"plots/{name}.png", name.replace("_", " "), caption))
    if best is not None:
        curves = out / "trials" / str(best.number) / "plots" / "curves.png"
        if curves.exists():
            target = out / "plots" / "best_curves.png"
            shutil.copyfile(curves, target)
            images.append(Image(target, "plots/best_curves.png", "best trial's curves",
                                f"trial {best.number}: loss and metrics per epoch"))
    return images, notes


def _evaluator() -> Any:
    """Optuna's PED-ANOVA, named so the report says what it shows (it handles conditional params; fANOVA would
    drop every param one strategy lacks)."""
    from optuna.importance import PedAnovaImportanceEvaluator

    return PedAnovaImportanceEvaluator()


def _importances(study: Any, n_complete: int) -> dict[str, float]:
    from optuna.importance import get_param_importances

    if n_complete < MIN_FOR_IMPORTANCE:
        return {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return get_param_importances(study, evaluator=_evaluator())
    except (ValueError, RuntimeError, ZeroDivisionError):
        return {}


def _trials_table(rows: list[dict[str, Any]], metric: str, descending: bool) -> Table:
    test = "test_" + metric.removeprefix("val_")
    params = list(dict.fromkeys(k for r in rows for k in r if k.startswith("param:")))
    table = Table(["#", "state", metric, "stopped at", *(p.removeprefix("param:") for p in params), test,
                   "wall s", "trainable params", "cache hits"], numeric=frozenset({0, 2, 3, 5 + len(params),
                                                                                   6 + len(params)}))

    def key(r: dict[str, Any]) -> tuple[int, float]:
        v = r.get("value")
        ok = isinstance(v, float) and r["state"] == "COMPLETE"
        return (0 if ok else 1, -(v or 0.0) if ok and descending else (v or 0.0))

    for r in sorted(rows, key=key):
        stopped = f"epoch {r[PRUNED_AT]}" if r.get(PRUNED_AT) else ""
        values = [f"{r[p]:.3g}" if isinstance(r.get(p), float) else str(r.get(p, "")) for p in params]
        table.rows.append([str(r["number"]), r["state"].lower(), fmt(r.get("value")), stopped, *values,
                           fmt(r.get(test)), fmt(r.get("wall_time_s"), 1),
                           str(r.get("trainable_params") or ""),
                           f"{r.get('cache_hits')}/{r.get('cache_entries')}" if r.get("cache_entries") else ""])
        table.row_classes.append("failed" if r["state"] == "FAIL" else "")
    return table


def write_tune_report(study: Any, rows: list[dict[str, Any]], out: Path, *, metric: str, title: str, storage: str,
                      space: Any) -> dict[str, Path]:
    """``report.html`` (self-contained) and ``summary.md`` with the same numbers; plots in ``plots/``."""
    best = best_trial(study)
    states = {s: sum(1 for r in rows if r["state"] == s) for s in ("COMPLETE", "PRUNED", "FAIL", "RUNNING")}
    direction = study.direction.name.lower()
    intro = [f"Study '{study.study_name}' in {storage}: {len(rows)} trials ({states['COMPLETE']} complete, "
             f"{states['PRUNED']} pruned, {states['FAIL']} failed, {states['RUNNING']} running). Trials are chosen "
             f"on {metric} ({direction}), measured on the validation split; every trial uses the same data split "
             f"and seed, so they differ only by their params."]
    warns = []
    if best is not None:
        brow = next(r for r in rows if r["number"] == best.number)
        test = "test_" + metric.removeprefix("val_")
        intro.append(f"Best: trial {best.number} with {metric} = {best.value:.4f}"
                     + (f" ({test} = {brow[test]:.4f})" if isinstance(brow.get(test), float) else "")
                     + f", params {best.params}. best.yaml is its whole config: `headstart fit {out / 'best.yaml'}` "
                       f"reproduces it; `headstart compare {out} --top 3 --seeds 42,43,44` re-runs the top trials "
                       f"over seeds, so a lucky seed is not crowned.")
    else:
        warns.append("No trial has completed yet, so there is no best trial and no best.yaml.")
    if states["FAIL"]:
        errors = sorted({str(r.get("error"))[:200] for r in rows if r["state"] == "FAIL" and r.get("error")})
        warns.append(f"{states['FAIL']} trial(s) failed: " + " | ".join(errors[:3]) + " (logs/trial-<n>.log).")
    saved = _savings(rows)
    sections: list[tuple[str, list[Any]]] = []
    if saved:
        share = saved["epochs_skipped"] / max(1, saved["epochs_skipped"] + saved["epochs_trained"])
        sections.append(("Pruning", [
            f"The pruner stopped {saved['pruned']} trial(s), after {saved['mean_stop']:.1f} epochs on average: "
            f"{saved['epochs_trained']} epochs trained instead of {saved['epochs_trained'] + saved['epochs_skipped']} "
            f"({share:.0%} saved); about {saved['seconds_saved']:.0f} s of training saved (each pruned trial's "
            f"seconds per epoch times the epochs it skipped), against {saved['seconds_spent']:.0f} s spent on all "
            f"finished trials."]))
    importances = _importances(study, states["COMPLETE"])
    if importances:
        table = Table(["param", "importance"], numeric=frozenset({1}))
        table.rows += [[k, f"{v:.3f}"] for k, v in importances.items()]
        sections.append(("Parameter importance (PED-ANOVA)", [table]))
    sections.append(("Trials", [_trials_table(rows, metric, descending=direction == "maximize"),
                                "Every trial is a run directory under trials/<number> (pruned ones keep metrics and "
                                "plots, their weights are dropped unless --keep-pruned-weights); trials.csv has "
                                "the metric after every epoch."]))
    images, notes = _plots(study, rows, out, best)
    sections.append(("Plots", [*images, *notes]))
    sections.append(("Search space", [f"{k}: {v.model_dump(exclude_defaults=True)}" for k, v in space.params.items()]))
    page = Page(title, datetime.now().strftime("%Y-%m-%d %H:%M"), intro, warns, sections)
    atomic_write_text(out / "report.html", render_page_html(page))
    atomic_write_text(out / "summary.md", render_page_markdown(page))
    return {"report.html": out / "report.html", "summary.md": out / "summary.md",
            **{os.path.basename(i.rel): i.path for i in images}}
