"""The human-readable report of ``headstart compare``: which strategy is best, and is the difference real?

A compare grid trains strategies x seeds on identical splits. This module turns its per-run rows (a
results.csv read as dicts) into ``summary.md``, two plots, and one offline ``report.html``: mean ± std per
strategy, paired tests against a baseline on the shared seeds (:mod:`headstart.metrics.paired`), and one
plain sentence per strategy that says how big the difference is and how much to trust it. Only finished
runs enter the numbers; failed ones are listed with their status so nothing silently disappears.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from headstart.errors import ConfigError, DataError, did_you_mean, format_choices
from headstart.experiments.report_html import (
    Cell,
    Image,
    Link,
    ReportContent,
    Table,
    fmt,
    fmt_count,
    fmt_p,
    fmt_signed,
    render_html,
    render_markdown,
)
from headstart.fileio import atomic_path, atomic_write_text
from headstart.metrics.direction import lower_is_better
from headstart.metrics.paired import compare_to_baseline, mean_std

__all__ = ["write_compare_report"]

DPI = 120
ALPHA = 0.05
"""Significance level used in the plain-language reading (no multiple-comparison correction)."""


# ----------------------------------------------------------------------------------------------------
# rows


def _num(value: Any) -> float:
    """A CSV cell or Python value as float; NaN for None, '', 'nan', text and bools."""
    if value is None or isinstance(value, bool):
        return math.nan
    try:
        return float(value.strip()) if isinstance(value, str) else float(value)
    except (TypeError, ValueError):
        return math.nan


def _is_done(row: Mapping[str, Any]) -> bool:
    status = row.get("status")
    return status is None or str(status).strip().lower() in ("", "done")


def _has(rows: Sequence[Mapping[str, Any]], key: str) -> bool:
    return any(math.isfinite(_num(r.get(key))) for r in rows)


def _val_twin(name: str) -> str | None:
    return "val_" + name[len("test_"):] if name.startswith("test_") else None


def _values(rows: Sequence[Mapping[str, Any]], key: str) -> list[float]:
    return [v for v in (_num(r.get(key)) for r in rows) if math.isfinite(v)]


def _mean(rows: Sequence[Mapping[str, Any]], key: str) -> float:
    return mean_std(_values(rows, key))[0]


_lower_is_better = lower_is_better


def _resolve_metrics(done: list[dict[str, Any]], metric: str, extra_metrics: Sequence[str],
                     warns: list[str]) -> tuple[str, list[str]]:
    """The metric to compare and the extra ones to show: ``val_`` twins when no run has a test value."""
    used = metric
    if not _has(done, metric):
        twin = _val_twin(metric)
        if twin is not None and _has(done, twin):
            used = twin
            warns.append(f"No finished run has {metric} (no test split?): the report uses {twin} instead. "
                         f"Validation scores also chose the best epoch, so they are optimistic.")
        else:
            warns.append(f"No finished run has a value for {metric}: there is nothing to compare. Check the "
                         f"runs' status below and the metric name (e.g. test_acc, val_f1).")
    extras = [(_val_twin(m) or m) if used != metric and not _has(done, m) else m for m in extra_metrics]
    return used, [m for m in dict.fromkeys(extras) if m != used and _has(done, m)]


def _href(run_dir: Any, out_dir: Path) -> tuple[str | None, Path | None]:
    """(URL-quoted href relative to ``out_dir``, absolute dir) of a run dir; (None, None) when unknown."""
    if run_dir is None or not str(run_dir).strip():
        return None, None
    path = Path(str(run_dir).strip()).expanduser()
    if not path.is_absolute():
        path = out_dir / path if (out_dir / path).exists() else Path.cwd() / path
    path = path.resolve()
    try:
        rel = Path(os.path.relpath(path, out_dir.resolve())).as_posix()
    except ValueError:  # another drive on Windows: no relative path exists
        return path.as_uri() + "/", path
    # Quoting turns 'partial:2/' into 'partial%3A2/', which a browser would otherwise read as a URL scheme.
    return quote(rel, safe="/") + "/", path


# ----------------------------------------------------------------------------------------------------
# plots


@contextmanager
def _quiet_glyphs() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .*missing from", category=UserWarning)
        yield


def _save(fig: Figure, path: Path) -> None:
    with _quiet_glyphs(), atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)


def _colour(groups: Mapping[str, Any], name: str) -> str:
    """One colour per strategy, the same in every plot (its position in the grid)."""
    return f"C{list(groups).index(name) % 10}"


def _no_data(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="gray")


def _wrap_label(name: str, width: int = 16) -> str:
    """A strategy label over several lines, broken after commas and before '[' (overrides are long)."""
    parts = name.replace("[", "\n[").replace(",", ",\n").split("\n")
    lines: list[str] = []
    for part in parts:
        if lines and len(lines[-1]) + len(part) <= width:
            lines[-1] += part
        else:
            lines.append(part)
    return "\n".join(lines)


def _plot_metric(groups: dict[str, list[dict[str, Any]]], metric: str, baseline: str | None, path: Path,
                 classic: tuple[str, float] | None = None) -> None:
    names = [g for g, runs in groups.items() if _values(runs, metric)]
    fig = Figure(figsize=(max(5.0, 1.1 * len(names) + 2.5), 4.2), layout="constrained")
    ax = fig.add_subplot()
    for i, name in enumerate(names):
        values = _values(groups[name], metric)
        mean, std = mean_std(values)
        colour = _colour(groups, name)
        ax.errorbar([i], [mean], yerr=[std], fmt="o", markersize=9, capsize=7, color=colour, zorder=2)
        jitter = np.linspace(-0.12, 0.12, len(values)) if len(values) > 1 else np.zeros(1)
        ax.scatter(i + 0.22 + jitter, values, s=18, color="0.35", alpha=0.8, zorder=3)
        if name == baseline:
            ax.axhline(mean, color=colour, linestyle="--", linewidth=1, alpha=0.7, label=f"{name} (baseline) mean")
    ax.set_xticks(range(len(names)))
    labels = [_wrap_label(n) + ("\n(baseline)" if n == baseline else "") for n in names]
    ax.set_xticklabels(labels, rotation=30 if len(names) > 4 else 0, ha="right" if len(names) > 4 else "center",
                       fontsize=8 if max(map(len, names), default=0) > 16 else None)
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} by strategy\n(mean ± std; grey dots = seeds)", fontsize=10)
    ax.grid(True, axis="y", alpha=0.3)
    if classic is not None and math.isfinite(classic[1]):
        ax.axhline(classic[1], color="0.2", linestyle=":", linewidth=1.5, label=f"classic baseline: {classic[0]}")
    if names:
        ax.set_xlim(-0.6, len(names) - 0.4)
        if baseline in names or classic is not None:
            ax.legend(fontsize=8, loc="best")
    else:
        _no_data(ax, f"no finished run has {metric}")
    _save(fig, path)


def _scatter_panel(ax: Any, points: list[tuple[str, float, float, float, str]], xlabel: str, ylabel: str) -> None:
    """One labelled point per strategy: (name, x, y mean, y std, colour); log x when x spans over 10x."""
    points = [p for p in points if math.isfinite(p[1]) and math.isfinite(p[2])]
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    if not points:
        _no_data(ax, f"no {xlabel} recorded")
        return
    for name, x, y, std, colour in points:
        ax.errorbar([x], [y], yerr=[std], fmt="o", markersize=8, capsize=5, color=colour)
        ax.annotate(name, (x, y), xytext=(6, 6), textcoords="offset points", fontsize=8)
    xs = [p[1] for p in points]
    if min(xs) > 0 and max(xs) / min(xs) > 10:
        ax.set_xscale("log")
        # Plain labels (20, 50, 1M), at 1-2-5 steps over a short range so a few ticks always show.
        subs = (1.0, 2.0, 5.0) if max(xs) / min(xs) < 300 else (1.0,)
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=subs, numticks=8))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: fmt_count(v)))
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.margins(x=0.5 if len(points) == 1 or max(xs) == min(xs) else 0.15, y=0.15)


def _plot_cost(groups: dict[str, list[dict[str, Any]]], metric: str, cost_key: str, path: Path) -> None:
    names = [g for g, runs in groups.items() if _values(runs, metric)]
    stats = {g: mean_std(_values(groups[g], metric)) for g in names}
    has_params = any(_has(groups[g], "trainable_params") for g in names)
    fig = Figure(figsize=(11.0 if has_params else 6.0, 4.4), layout="constrained")
    axes = list(fig.subplots(1, 2 if has_params else 1, squeeze=False)[0])
    cost_label = "mean wall time (s)" if cost_key == "wall_time_s" else f"mean {cost_key}"
    points = [(g, _mean(groups[g], cost_key), *stats[g], _colour(groups, g)) for g in names]
    _scatter_panel(axes[0], points, cost_label, metric)
    axes[0].set_title(f"{metric} vs cost")
    if has_params:
        points = [(g, _mean(groups[g], "trainable_params"), *stats[g], _colour(groups, g)) for g in names]
        _scatter_panel(axes[1], points, "trainable parameters", metric)
        axes[1].set_title(f"{metric} vs trainable parameters")
    _save(fig, path)


# ----------------------------------------------------------------------------------------------------
# reading


def _finding(entry: dict[str, Any], baseline: str, metric: str, points: bool, n_compared: int) -> str:
    name = entry["group"]
    if entry["n_runs"] == 0:
        return f"{name}: no finished run has a {metric} value, so it cannot be compared."
    if entry["n_pairs"] == 0:
        return f"{name} shares no seed with {baseline}: nothing to pair, so the difference cannot be tested."
    diff, n = entry["mean_diff"], entry["n_pairs"]
    size = f"{abs(diff) * 100:.2f} points" if points else f"{abs(diff):.4g}"
    where = "level with" if diff == 0 else (f"{size} above" if diff > 0 else f"{size} below")
    seeds = f"{n} seed{'s' if n != 1 else ''}"
    stats = (f"t-test p={fmt_p(entry['p_t'])}, Wilcoxon p={fmt_p(entry['p_wilcoxon'])}, "
             f"d_z={fmt_signed(entry['dz'])}, {seeds}")
    text = f"{name} is {where} {baseline} ({stats})."
    p = entry["p_t"]
    if p is None or math.isnan(p):
        return text + " The difference cannot be tested: a paired test needs at least 2 shared seeds."
    few = f" With only {n} paired seeds the test has almost no power: run more seeds." if n < 3 else ""
    if math.isinf(entry["t"]):
        return text + (" Every seed moved by exactly the same amount, so the t-test's p=0 is degenerate; "
                       "the Wilcoxon p is the honest one here.") + few
    if few:
        return text + few
    if p < ALPHA and diff != 0:
        better = (diff < 0) == _lower_is_better(metric)
        verdict = "better" if better else "worse"
        text += f" Unlikely to be seed noise at the {ALPHA:g} level: {verdict} than {baseline} on these splits."
        if n_compared > 2:
            text += f" (One of {n_compared} uncorrected comparisons.)"
        return text
    return text + f" Not distinguishable from seed-to-seed noise with {seeds}."


def _paired_notes(compared: list[dict[str, Any]], groups: dict[str, list[dict[str, Any]]], usable: list[str],
                  metric: str) -> list[str]:
    notes: list[str] = []
    if any(e["n_pairs"] and e["n_pairs"] <= 5 for e in compared):
        notes.append("With 5 or fewer pairs the Wilcoxon test cannot reach p < 0.05 (its smallest two-sided "
                     "p is 2/2^n): read it as a sign check, and lean on the t-test and d_z.")
    if compared:
        notes.append("d_z = mean difference / std of the differences; |d_z| above ~0.8 is a large effect "
                     "relative to seed noise. No correction for multiple comparisons.")
    if len(usable) > 1:
        sign = -1.0 if _lower_is_better(metric) else 1.0
        best = max(usable, key=lambda g: sign * _mean(groups[g], metric))
        notes.append(f"Best mean {metric}: {best} ({fmt(_mean(groups[best], metric))}).")
    return notes


# ----------------------------------------------------------------------------------------------------
# tables


def _summary_table(groups: dict[str, list[dict[str, Any]]], failed: dict[str, int], metrics: list[str],
                   baseline: str | None) -> Table:
    table = Table(["strategy", "runs", "failed", *(f"{m} (mean ± std)" for m in metrics), "wall time (s)",
                   "trainable params", "peak RSS (MiB)"])
    table.numeric = frozenset(range(1, len(table.headers)))
    for name, runs in groups.items():
        cells: list[Cell] = [name, str(len(runs)), str(failed.get(name, 0))]
        for m in metrics:
            values = _values(runs, m)
            mean, std = mean_std(values)
            cells.append(f"{fmt(mean)} ± {fmt(std)}" if values else "n/a")
        trainable, total = _mean(runs, "trainable_params"), _mean(runs, "total_params")
        share = f" ({100 * trainable / total:.3g}%)" if math.isfinite(total) and total > 0 else ""
        cells += [fmt(_mean(runs, "wall_time_s"), 1), fmt_count(trainable) + share,
                  fmt(_mean(runs, "peak_rss_mb"), 0)]
        table.rows.append(cells)
        table.row_classes.append("baseline" if name == baseline else "")
    return table


def _classic_cells(classic: Mapping[str, Any], metrics: list[str], width: int) -> list[Cell]:
    """The classic baseline's line of the strategies table: one fit, so values without ± std."""
    done = _is_done(classic)
    cells: list[Cell] = [f"{classic['strategy']} (classic)", "1" if done else "0", "0"]
    cells += [fmt(_num(classic.get(m))) if done else "n/a" for m in metrics]
    cells += [fmt(_num(classic.get("wall_time_s")), 1), "n/a", "n/a"]
    return cells[:width]


def _classic_lines(classic: Mapping[str, Any], groups: dict[str, list[dict[str, Any]]], usable: list[str],
                   metric: str) -> tuple[str, list[str]]:
    """(the verdict sentence, the classic section's lines) of a classic baseline row."""
    from headstart.baselines.run import baseline_label, verdict

    label = baseline_label(str(classic["strategy"]))
    if not _is_done(classic):
        why = str(classic.get("note") or classic.get("status")).removeprefix("classic baseline skipped: ")
        return f"The classic baseline ({label}) did not run: {why}", [why]
    sentence = verdict(label, classic.get(metric), {g: _mean(groups[g], metric) for g in usable}, metric)
    lines = [sentence, str(classic.get("note") or label),
             "It is fitted once (no seeds), on the training rows every strategy trains on; its settings are chosen on "
             "the validation rows and its metrics come from the same code as the strategies' runs."]
    return sentence, lines


def _paired_table(entries: list[dict[str, Any]], points: bool) -> Table:
    table = Table(["strategy", "n pairs", "mean diff", "t-test p", "Wilcoxon p", "Cohen's d_z", "seeds"],
                  numeric=frozenset(range(1, 6)))
    for e in entries:
        if e["is_baseline"]:
            continue
        diff = e["mean_diff"]
        shown = fmt_signed(diff, 4)
        if points and diff is not None and math.isfinite(diff):
            shown += f" ({diff * 100:+.2f} pts)"
        table.rows.append([e["group"], str(e["n_pairs"]), shown, fmt_p(e["p_t"]), fmt_p(e["p_wilcoxon"]),
                           fmt_signed(e["dz"]), ", ".join(str(s) for s in e["seeds"])])
    return table


def _runs_table(rows: list[dict[str, Any]], metrics: list[str], out_dir: Path) -> Table:
    table = Table(["run", "strategy", "seed", *metrics, "wall time (s)", "status", "files"],
                  numeric=frozenset(range(3, 4 + len(metrics))))
    for row in rows:
        name = str(row.get("run") or row.get("strategy") or "?")
        href, path = _href(row.get("run_dir"), out_dir)
        files: list[str | Link] = []
        if href is not None and path is not None:
            files += [Link(rel, href + rel) for rel in ("summary.json", "plots/curves.png") if (path / rel).is_file()]
        run_cell: Cell = Link(name, href) if href is not None else name
        status = str(row.get("status") or "done")
        table.rows.append([run_cell, str(row.get("strategy", "")), str(row.get("seed", "")),
                           *(fmt(_num(row.get(m))) for m in metrics), fmt(_num(row.get("wall_time_s")), 1),
                           status, tuple(files)])
        table.row_classes.append("" if _is_done(row) else "failed")
    return table


# ----------------------------------------------------------------------------------------------------
# entry point


def write_compare_report(
    rows: Sequence[Mapping[str, Any]],
    out_dir: str | os.PathLike[str],
    *,
    metric: str = "test_acc",
    baseline: str | None = None,
    title: str = "headstart compare",
    cost_key: str = "wall_time_s",
    extra_metrics: Sequence[str] = ("test_f1",),
    notes: Sequence[str] = (),
    classic: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """Write summary.md, report.html and plots/*.png for a compare grid into ``out_dir``.

    ``rows`` holds one dict per run (``run``, ``strategy``, ``seed``, ``status``, ``run_dir``, timings,
    parameter counts and ``val_*``/``test_*`` metrics; CSV strings are fine). Runs whose status is not
    "done" are only listed. When no run has ``metric`` (no test split), its ``val_`` twin is used and the
    report says so. ``baseline`` defaults to "full" when present, else the first strategy. ``classic``: the
    classic baseline's row (``strategy`` ``baseline:<name>``; also taken from ``rows``, as results.csv holds
    it): shown beside the strategies, outside the paired tests, with a sentence saying whether it wins. Returns
    the written files by name: summary_md, report_html, metric_by_strategy, cost_vs_quality.
    """
    from headstart.baselines.run import CLASSIC_PREFIX

    out_dir = Path(out_dir)
    all_rows: list[dict[str, Any]] = []
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise DataError(f"write_compare_report: row {i} is a {type(row).__name__}, expected a dict per run.")
        if str(row.get("strategy") or "").startswith(CLASSIC_PREFIX):
            classic = classic or row
            continue
        all_rows.append({**row, "strategy": str(row.get("strategy") or "(no strategy)")})
    done = [r for r in all_rows if _is_done(r)]
    warns: list[str] = []

    # OOD scores of the runs (an ood section in their config): each score's AUROC and FPR95 are shown too
    ood = sorted({k for r in done for k in r if k.startswith("ood_") and k.endswith(("_auroc", "_fpr95"))})
    used, extras = _resolve_metrics(done, metric, [*extra_metrics, *ood], warns)
    order = list(dict.fromkeys(r["strategy"] for r in all_rows))
    groups = {g: [r for r in done if r["strategy"] == g] for g in order}
    failed = {g: sum(1 for r in all_rows if r["strategy"] == g and not _is_done(r)) for g in order}
    usable = [g for g in order if _has(groups[g], used)]
    if baseline is not None and baseline not in order:
        raise ConfigError(
            f"write_compare_report: baseline {baseline!r} is not a strategy of this grid "
            f"({format_choices(order)}).{did_you_mean(baseline, order)} Pass one of them, or leave it unset "
            f"to use 'full' (or the first strategy)."
        )
    if baseline is None:
        baseline = "full" if "full" in usable else (usable[0] if usable else None)
    if baseline is not None and baseline not in usable and usable:
        warns.append(f"The baseline {baseline} has no finished run with {used}: no paired test is possible.")

    ran = baseline is not None and any(r["strategy"] == baseline for r in done)
    entries = compare_to_baseline(done, used, str(baseline)) if ran else []
    points = bool(_values(done, used)) and not _lower_is_better(used) and all(0 <= v <= 1 for v in _values(done, used))
    compared = [e for e in entries if not e["is_baseline"]]
    findings = []
    if baseline in usable:
        findings = [_finding(e, str(baseline), used, points, len(compared)) for e in compared]

    n_done = len(done)
    intro = [f"Metric: {used} ({'lower' if _lower_is_better(used) else 'higher'} is better); baseline: {baseline}; "
             f"{len(order)} strategies, {n_done} finished run(s), {len(all_rows) - n_done} failed."]
    classic_section: list[str] = []
    if classic is not None:
        sentence, classic_section = _classic_lines(classic, groups, usable, used)
        intro.append(sentence)

    plots_dir = out_dir / "plots"
    metric_png, cost_png = plots_dir / "metric_by_strategy.png", plots_dir / "cost_vs_quality.png"
    classic_line = None
    if classic is not None and _is_done(classic):
        classic_line = (str(classic["strategy"]), _num(classic.get(used)))
    _plot_metric(groups, used, baseline, metric_png, classic_line)
    _plot_cost(groups, used, cost_key, cost_png)
    images = [
        Image(metric_png, "plots/metric_by_strategy.png",
              f"{used} per strategy: mean with std error bars and one dot per seed",
              f"{used} by strategy (mean ± std over seeds; dots are individual seeds)."),
        Image(cost_png, "plots/cost_vs_quality.png",
              f"mean {used} against mean {cost_key} and trainable parameters, one point per strategy",
              f"Quality vs cost: mean {used} (± std) against mean {cost_key} and trainable parameters."),
    ]

    summary = _summary_table(groups, failed, [used, *extras], baseline)
    if classic is not None:
        summary.rows.append(_classic_cells(classic, [used, *extras], len(summary.headers)))
        summary.row_classes.append("classic")
    content = ReportContent(
        title=title,
        created=datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        intro=intro,
        warnings=warns,
        summary=summary,
        paired_heading=f"Paired tests against {baseline} (same seeds, same splits)",
        paired=_paired_table(entries, points),
        paired_notes=_paired_notes(compared, groups, usable, used),
        findings=findings,
        notes=[str(n) for n in notes],
        runs=_runs_table(all_rows, [used, *extras], out_dir),
        images=images,
        classic=classic_section,
    )
    summary_md, report_html = out_dir / "summary.md", out_dir / "report.html"
    atomic_write_text(summary_md, render_markdown(content))
    atomic_write_text(report_html, render_html(content))
    return {"summary_md": summary_md, "report_html": report_html, "metric_by_strategy": metric_png,
            "cost_vs_quality": cost_png}
