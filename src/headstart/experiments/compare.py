"""``headstart compare``: strategies x seeds on identical splits, answered with a table and a paired test.

The grid is one base config; each cell changes only the strategy (plus the overrides written beside it,
``linear_probe[optim.lr=1e-2]``) and ``trainer.seed``. ``data.split_seed`` is pinned for every cell, so
all runs see the same rows and differences between strategies are paired by seed. Finished cells are
skipped on a rerun (the cell's config is hashed, a changed cell is rerun), interrupted ones resume from
their ``last.ckpt``; frozen-prefix features come from the shared feature cache. ``results.csv`` is
rewritten after every cell, so an interrupted grid still leaves its numbers.

``shard="I/N"`` runs only shard I's cells (see :mod:`headstart.experiments.shard`), with its own lock, state
file (``compare.shard-I-of-N.json``) and partial ``results.shard-I-of-N.csv``; ``collect=True`` trains nothing
and, once every cell's run is finished, writes the grid's results exactly as one unsharded run would.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from headstart.config import apply_overrides, load_config, parse_override
from headstart.errors import ConfigError, RunDirError, RunInterrupted, did_you_mean
from headstart.experiments.jobs import (
    FitJob,
    JobsInterrupted,
    config_digest,
    run_dir_digest,
    run_jobs,
    threads_per_worker,
)
from headstart.experiments.rundir import epochs_done, lock_holder
from headstart.experiments.shard import (
    Shard,
    collect_error,
    describe_holder,
    lock_grid,
    parse_shard,
    read_state,
    shard_files,
)
from headstart.fileio import atomic_path, write_json
from headstart.strategies import format_strategy_spec, parse_strategy_spec

__all__ = [
    "BASE_COLUMNS",
    "CompareResult",
    "StrategyCell",
    "compare_run_dirs",
    "parse_seeds",
    "parse_strategies",
    "resolve_baseline",
    "row_from_run",
    "run_compare",
    "write_results_csv",
]

# results.csv: these first, then every val_* / test_* metric (sorted).
BASE_COLUMNS = ("run", "strategy", "seed", "status", "run_dir", "wall_time_s", "train_time_s",
                "trainable_params", "total_params", "peak_rss_mb", "peak_rss_train_mb", "best_epoch",
                "epochs_run", "cache_used")
STATE_FILE = "compare.json"


@dataclass(frozen=True)
class StrategyCell:
    """One strategy of the grid: its label (as typed), strategy fields and its own config overrides."""

    label: str
    fields: dict[str, Any]
    overrides: tuple[tuple[tuple[str, ...], Any], ...] = ()

    @property
    def slug(self) -> str:
        """A directory-safe name: ``partial:2`` -> ``partial-2``; overrides add a short hash."""
        spec = self.label.split("[", 1)[0]
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", spec).strip("-")
        if self.overrides:
            slug += "-" + hashlib.sha1(self.label.encode()).hexdigest()[:6]
        return slug


@dataclass
class CompareResult:
    output_dir: Path
    rows: list[dict[str, Any]]  # a shard's result: its own cells only
    files: dict[str, Path]
    shard: Shard | None = None  # set when only this shard of the grid ran (no summary or report yet)
    message: str = ""  # a shard's closing words: what ran, and that --collect writes the results
    classic: dict[str, Any] | None = None  # the classic baseline's results.csv row (not among ``rows``)


def _split_top_level(text: str, ranges: bool = False) -> list[str]:
    """Split on commas outside [...] (``a[x=1,y=2],b`` -> two items).

    With ``ranges``, a comma followed by a digit continues a spec that has a ':' argument: ``partial:0-2,5``
    is one block-range list (blocks 0-2 and 5), since no strategy name starts with a digit.
    """
    items, depth, cur = [], 0, ""
    for i, ch in enumerate(text):
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
            if depth < 0:
                raise ConfigError(f"--strategies '{text}': a ']' has no matching '['; write e.g. "
                                  f"linear_probe[optim.lr=1e-2].")
        if ch == "," and depth == 0 and not (ranges and ":" in cur and "[" not in cur
                                             and text[i + 1:].lstrip()[:1].isdigit()):
            items.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if depth:
        raise ConfigError(f"--strategies '{text}': a '[' is never closed; write e.g. linear_probe[optim.lr=1e-2].")
    items.append(cur.strip())
    return [i for i in items if i]


def parse_strategies(text: str | Sequence[str]) -> list[StrategyCell]:
    """``"linear_probe[optim.lr=1e-2],partial:2,full"`` -> cells; brackets hold per-strategy overrides."""
    raw = _split_top_level(text, ranges=True) if isinstance(text, str) else [t.strip() for t in text if t.strip()]
    if not raw:
        raise ConfigError("--strategies is empty: give at least one, e.g. --strategies linear_probe,partial:2,full.")
    cells, seen = [], set()
    for item in raw:
        spec, _, rest = item.partition("[")
        overrides: list[tuple[tuple[str, ...], Any]] = []
        if rest:
            if not rest.endswith("]"):
                raise ConfigError(f"Strategy '{item}': text after ']' is not understood; write "
                                  f"spec[key=value,key=value], e.g. linear_probe[optim.lr=1e-2].")
            for part in _split_top_level(rest[:-1]):
                keys, value = parse_override(part)
                if keys[0] in ("strategy", "output_dir") or keys == ["trainer", "seed"]:
                    raise ConfigError(f"Strategy '{item}' overrides '{'.'.join(keys)}', which compare sets for "
                                      f"every cell (strategy, seed, run directory); remove it from the brackets.")
                overrides.append((tuple(keys), value))
        try:
            fields = parse_strategy_spec(spec.strip())
        except ValueError as exc:
            raise ConfigError(f"Strategy '{item}' in --strategies is not understood: {exc} Separate strategies "
                              f"with commas, e.g. --strategies linear_probe,partial:2,full.") from None
        if item in seen:
            raise ConfigError(f"Strategy '{item}' is listed twice in --strategies; list each once.")
        seen.add(item)
        cells.append(StrategyCell(item, fields, tuple(overrides)))
    slugs = [c.slug for c in cells]
    for c in cells:
        if slugs.count(c.slug) > 1:
            raise ConfigError(f"Strategies {[d.label for d in cells if d.slug == c.slug]} would share the run "
                              f"directory name '{c.slug}'; make their specs differ.")
    return cells


def resolve_baseline(baseline: str | None, labels: list[str]) -> str | None:
    """The grid label ``--baseline`` means: itself, or the one strategy that is ``baseline`` with bracketed
    overrides (``linear_probe`` for ``linear_probe[optim.lr=1e-2]``); two such strategies need the full label."""
    if baseline is None or baseline in labels:
        return baseline
    matches = [label for label in labels if label.split("[", 1)[0].strip() == baseline.strip()]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise ConfigError(f"--baseline '{baseline}' matches {len(matches)} strategies of the grid ({', '.join(matches)}); "
                          f"give the one you mean in full, e.g. --baseline '{matches[0]}'.")
    raise ConfigError(f"--baseline '{baseline}' is not one of the strategies {labels}; pick one of them."
                      f"{did_you_mean(baseline, [label.split('[', 1)[0] for label in labels])}")


def parse_seeds(text: str | Sequence[int]) -> list[int]:
    """``"42,43,44"`` or ``"42-44"`` -> [42, 43, 44] (each once, in order)."""
    if not isinstance(text, str):
        return list(dict.fromkeys(int(s) for s in text))
    seeds: list[int] = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        m = re.fullmatch(r"(\d+)-(\d+)", part)
        if m and int(m[1]) <= int(m[2]):
            seeds += range(int(m[1]), int(m[2]) + 1)
        elif part.isdigit():
            seeds.append(int(part))
        else:
            raise ConfigError(f"--seeds '{text}': '{part}' is not a whole number or a range like 42-44.")
    if not seeds:
        raise ConfigError("--seeds is empty: give e.g. --seeds 42,43,44.")
    return list(dict.fromkeys(seeds))


def _cell_config(base: dict[str, Any], cell: StrategyCell, seed: int, split_seed: int, run_dir: Path,
                 threads: int | None) -> dict[str, Any]:
    raw = json.loads(json.dumps(base))  # deep copy of plain data
    raw["strategy"] = dict(cell.fields)
    raw = apply_overrides(raw, [(list(k), v) for k, v in cell.overrides])
    raw["trainer"]["seed"] = seed
    raw["trainer"]["progress_bar"] = False
    if threads is not None:
        raw["trainer"]["threads"] = threads
    raw["data"]["split_seed"] = split_seed
    raw["output_dir"] = str(run_dir)
    raw["name"] = f"{base.get('name', 'run')}-{cell.slug}-s{seed}"
    from headstart.experiments.build import build_strategy

    try:  # validate now: a bad override fails before hours of other cells
        cfg = load_config(None, raw=raw)
        build_strategy(cfg)
    except ConfigError as exc:
        raise ConfigError(f"Strategy '{cell.label}' gives an invalid config: {exc}") from None
    return cfg.model_dump(mode="json")


def row_from_run(run_dir: Path, strategy: str, seed: Any, status: str = "done", name: str | None = None,
                 relative_to: Path | None = None) -> dict[str, Any]:
    """One results.csv row from a run directory's summary.json (metrics flattened as val_* / test_* / ood_*)."""
    row: dict[str, Any] = {"run": name or run_dir.name, "strategy": strategy, "seed": seed, "status": status}
    try:
        row["run_dir"] = str(run_dir.resolve().relative_to(relative_to.resolve())) if relative_to else str(run_dir)
    except ValueError:
        row["run_dir"] = str(run_dir.resolve())
    summary_path = run_dir / "summary.json"
    if status != "done" or not summary_path.exists():
        return row
    s = json.loads(summary_path.read_text(encoding="utf-8"))
    for key in BASE_COLUMNS[5:]:
        if key == "cache_used":
            row[key] = bool((s.get("cache") or {}).get("used"))
        elif key in s:
            row[key] = s[key]
    for split in ("val", "test"):
        for metric, value in (s.get(split) or {}).items():
            if isinstance(value, (int, float)):
                row[f"{split}_{metric}"] = value
    for score, metrics in (s.get("ood") or {}).items():  # the run's ood section: ood_<score>_<metric>
        for metric, value in (metrics or {}).items():
            if isinstance(value, (int, float)):
                row[f"ood_{score}_{metric}"] = value
    return row


def write_results_csv(rows: list[dict[str, Any]], path: Path) -> None:
    """``rows`` as CSV: BASE_COLUMNS, the metrics (sorted), then ``note`` (what the classic baseline's row is)."""
    trailing = ["note"]
    metrics = sorted({k for r in rows for k in r if k not in BASE_COLUMNS and k not in trailing})
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=[*BASE_COLUMNS, *metrics, *trailing], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def run_compare(
    config: str | Path,
    strategies: str | Sequence[str] | Sequence[StrategyCell],
    seeds: str | Sequence[int],
    *,
    overrides: list[tuple[list[str], Any]] | None = None,
    output_dir: str | Path | None = None,
    split_seed: int | None = None,
    workers: int = 1,
    threads: int | None = None,
    metric: str | None = None,
    baseline: str | None = None,
    verbose: bool = True,
    shard: str | Shard | None = None,
    collect: bool = False,
    classic_baseline: bool = True,
) -> CompareResult:
    """Run (or finish) the grid and write results.csv, summary.md, plots and report.html.

    Rerunning the same command finishes an interrupted grid: finished cells are kept, cells stopped mid-run
    resume from their last finished epoch, changed cells are rerun. ``strategies`` may be cells made elsewhere
    (``headstart compare TUNE_DIR --top K``: a tune's best trials). ``shard="I/N"`` runs only shard I's cells and
    writes no summary; ``collect=True`` runs nothing and writes the results once every cell is finished.
    ``classic_baseline``: also fit the modality's classic baseline (TF-IDF + logistic regression ...) once on the
    grid's split and report it as the ``baseline:<name>`` row (written with the whole grid's results: by an
    unsharded run or ``--collect``, never by a shard)."""
    if shard is not None and collect:
        raise ConfigError("--shard and --collect cannot be used together: --shard I/N trains one part of the grid, "
                          "--collect trains nothing and writes the grid's results once every shard has finished. "
                          "Run each shard, then the same command with --collect instead of --shard.")
    part = parse_shard(shard) if shard is not None else None
    given = not isinstance(strategies, str) and bool(strategies) and all(isinstance(s, StrategyCell)
                                                                           for s in strategies)
    cells = list(strategies) if given else parse_strategies(strategies)  # type: ignore[arg-type]
    seed_list = parse_seeds(seeds)
    baseline = resolve_baseline(baseline, [c.label for c in cells])
    base_cfg = load_config(config, overrides)
    if metric is None:  # what the runs keep their best epoch by, on the test split (val_rmse -> test_rmse)
        metric = "test_" + base_cfg.trainer.monitor.removeprefix("val_")
    split_seed = split_seed if split_seed is not None else (
        base_cfg.data.split_seed if base_cfg.data.split_seed is not None else base_cfg.trainer.seed)
    out = Path(output_dir) if output_dir else Path(base_cfg.output_dir).parent / f"{base_cfg.name}-compare"
    if out.exists() and not out.is_dir():
        raise RunDirError(f"The compare directory '{out}' is a file; choose another --output-dir.")
    base = base_cfg.model_dump(mode="json")
    per_worker = threads_per_worker(workers, threads)
    grid = [(cell, seed, f"{cell.slug}_s{seed}") for cell in cells for seed in seed_list]
    # Every cell's config is validated before anything runs: a bad override fails now, not hours in.
    configs = {name: _cell_config(base, cell, seed, split_seed, out / "runs" / name, per_worker)
               for cell, seed, name in grid}
    lock = lock_grid(out, "compare", part, collect)
    try:
        if verbose and lock.note():
            print(lock.note())
        return _run_grid(config, base_cfg, cells, seed_list, grid, configs, out, split_seed=split_seed,
                         workers=workers, per_worker=per_worker, metric=metric, baseline=baseline, verbose=verbose,
                         shard=part, collect=collect, classic_baseline=classic_baseline)
    finally:
        lock.release()


def _run_grid(config: str | Path, base_cfg: Any, cells: list[StrategyCell], seed_list: list[int],
              grid: list[tuple[StrategyCell, int, str]], configs: dict[str, dict[str, Any]], out: Path, *,
              split_seed: int, workers: int, per_worker: int | None, metric: str, baseline: str | None,
              verbose: bool, shard: Shard | None = None, collect: bool = False,
              classic_baseline: bool = True) -> CompareResult:
    """``run_compare`` once the compare directory is locked: skip, resume or run each cell (of ``shard``), then
    report (the whole grid only: a shard writes its own rows, ``collect`` runs nothing)."""
    labels = [c.label for c in cells]
    state_path = out / (shard.file(STATE_FILE) if shard else STATE_FILE)
    results_path = out / (shard.file("results.csv") if shard else "results.csv")
    state = read_state(state_path)
    done_before: dict[str, Any] = state.get("runs", {})
    others = _other_records(out, state_path)  # what the other shards (or an unsharded run) recorded

    rows: dict[str, dict[str, Any]] = {}
    jobs: list[FitJob] = []
    unfinished: list[tuple[int, str, str]] = []
    mine = [(p, cell, seed, name) for p, (cell, seed, name) in enumerate(grid) if shard is None or shard.owns(p)]
    order = [name for _, _, _, name in mine]
    for position, cell, seed, name in mine:
        run_dir = out / "runs" / name
        cfg = configs[name]
        digest = config_digest(cfg)
        records = [r for r in (done_before.get(name), *others.get(name, ())) if r and r.get("config_sha") == digest]
        holds_cell = run_dir_digest(run_dir) == digest  # the run directory was made from this cell's config
        has_summary = (run_dir / "summary.json").exists()
        if holds_cell and has_summary and any(r.get("status") == "done" for r in records):
            done_before[name] = {"config_sha": digest, "status": "done"}
            rows[name] = row_from_run(run_dir, cell.label, seed, name=name, relative_to=out)
            continue
        if collect:
            unfinished.append((position, name, _why_unfinished(run_dir, name, records, holds_cell, has_summary)))
            continue
        resume = bool(records) and holds_cell and not has_summary and (run_dir / "checkpoints" / "last.ckpt").exists()
        done_before[name] = {"config_sha": digest, "status": "started"}  # a killed run resumes on the rerun
        jobs.append(FitJob(name, cfg, out / "logs" / f"{name}.log", overwrite=not resume, resume=resume,
                           extra={"strategy": cell.label, "seed": seed, "config_sha": digest}))
    if unfinished:
        raise RunDirError(collect_error("compare", out, STATE_FILE, len(grid), unfinished,
                                         {"strategies": labels, "seeds": seed_list, "split_seed": split_seed}))
    state.update({"config": str(config), "strategies": labels, "seeds": seed_list, "split_seed": split_seed,
                  "metric": metric, "baseline": baseline, "runs": done_before})
    if shard is not None:
        state["shard"] = shard.label
    write_json(state_path, state)
    if verbose:
        grid_words = f"{len(cells)} strategies x {len(seed_list)} seeds, split seed {split_seed}"
        if collect:
            print(f"compare --collect: all {len(order)} runs ({grid_words}) in {out} are finished; writing the "
                  f"results", flush=True)
        else:
            scope = (f"compare shard {shard.label}: {len(order)} of the grid's {len(grid)} runs" if shard
                     else f"compare: {len(order)} runs")
            print(f"{scope} ({grid_words}) in {out}; {len(order) - len(jobs)} finished before, {len(jobs)} to run"
                  + (f" on {workers} worker processes x {per_worker} threads" if workers > 1 else ""), flush=True)

    started = time.perf_counter()

    def on_done(job: FitJob, result: dict[str, Any]) -> None:
        strategy, seed = job.extra["strategy"], job.extra["seed"]
        rows[job.name] = row_from_run(Path(job.config["output_dir"]), strategy, seed, result["status"],
                                      name=job.name, relative_to=out)
        status = result["status"] if result["status"] in ("done", "interrupted") else "failed"
        done_before[job.name] = {"config_sha": job.extra["config_sha"], "status": status}
        write_json(state_path, state)
        write_results_csv([rows[n] for n in order if n in rows], results_path)
        if verbose:
            value = rows[job.name].get(metric)
            shown = f"{metric}={value:.4f}" if isinstance(value, float) else result["status"][:200]
            print(f"[{len(rows)}/{len(order)}] {strategy} seed {seed}: {shown} "
                  f"({time.perf_counter() - started:.0f} s elapsed; log {job.log})", flush=True)

    try:
        run_jobs(jobs, workers, on_done)
    except JobsInterrupted as stop:
        raise RunInterrupted(
            f"compare{f' shard {shard.label}' if shard else ''} stopped: "
            f"{stop.tally('runs', len(order) - len(jobs), len(order))}; results so far are in {results_path}. "
            f"Resume: run the same command again (finished runs are skipped, stopped ones continue from their "
            f"checkpoints/last.ckpt).",
            exit_code=stop.exit_code) from None
    ordered = [rows[n] for n in order]
    if shard is not None:
        write_results_csv(ordered, results_path)
        ok = sum(r.get("status") == "done" for r in ordered)
        message = (f"compare shard {shard.label}: {ok} of its {len(order)} runs are finished ({', '.join(order)}); "
                   f"rows in {results_path}. "
                   + (f"{len(order) - ok} failed: see their logs in {out / 'logs'} and run this shard again. "
                      if ok < len(order) else "")
                   + f"Once every shard (1/{shard.count} ... {shard.count}/{shard.count}) has finished, run the same "
                     f"command with --collect instead of --shard {shard.label} to write results.csv, summary.md "
                     f"and report.html.")
        return CompareResult(out, ordered, {results_path.name: results_path}, shard=shard, message=message)
    classic = None
    if classic_baseline:  # once per grid, on the split every cell uses; reused while that split is unchanged
        from headstart.baselines import compare_baseline_row

        classic = compare_baseline_row(base_cfg, split_seed, out, verbose=verbose)
    return _write_grid_report(config, base_cfg, labels, seed_list, ordered, out, split_seed=split_seed,
                              metric=metric, baseline=baseline, classic=classic)


def _write_grid_report(config: str | Path, base_cfg: Any, labels: list[str], seed_list: list[int],
                       ordered: list[dict[str, Any]], out: Path, *, split_seed: int, metric: str,
                       baseline: str | None, classic: dict[str, Any] | None = None) -> CompareResult:
    """The whole grid's results.csv, summary.md, plots and report.html (an unsharded run or ``--collect``);
    ``classic``: the classic baseline's row, written after the strategies' rows."""
    from headstart.experiments.report import write_compare_report

    write_results_csv([*ordered, *([classic] if classic else [])], out / "results.csv")
    notes = [f"Grid: `{config}` with strategies {', '.join(labels)} and seeds {', '.join(map(str, seed_list))}; "
             f"every run uses data split seed {split_seed}, so all runs see identical train/val/test rows."]
    if classic is not None:
        notes.append(f"The classic baseline ({classic['strategy']}) was fitted once on the same split (data split "
                     f"seed {split_seed}); --no-classic-baseline leaves it out.")
    files = write_compare_report(ordered, out, metric=metric, baseline=baseline,
                                 title=f"headstart compare: {base_cfg.name}", notes=notes, classic=classic)
    return CompareResult(out, ordered, {"results.csv": out / "results.csv", **files}, classic=classic)


def _other_records(out: Path, own: Path) -> dict[str, list[dict[str, Any]]]:
    """Run records (name -> records) of every other state file of the directory: the unsharded ``compare.json``
    and each shard's, so a run finished by one is not trained again by another."""
    paths = [out / STATE_FILE, *shard_files(out, STATE_FILE).values()]
    records: dict[str, list[dict[str, Any]]] = {}
    for path in paths:
        if path != own and path.exists():
            for name, record in (read_state(path).get("runs") or {}).items():
                records.setdefault(name, []).append(record)
    return records


def _why_unfinished(run_dir: Path, name: str, records: list[dict[str, Any]], holds_cell: bool,
                    has_summary: bool) -> str:
    """What ``--collect`` says about a run that is not finished."""
    if not run_dir.is_dir():
        return "not started"
    holder = lock_holder(run_dir)
    if holder is not None:
        return f"training now ({describe_holder(holder)})"
    if (run_dir / "config.yaml").exists() and not holds_cell:
        return "made from another config (the grid or its config changed since): its shard trains it again"
    if any(r.get("status") == "failed" for r in records):
        return f"failed (see logs/{name}.log)"
    if (run_dir / "checkpoints" / "last.ckpt").exists() and not has_summary:
        return f"stopped after {epochs_done(run_dir)} epoch(s); it resumes from checkpoints/last.ckpt"
    if has_summary:
        return "wrote summary.json but was never recorded as finished (stopped or failed after it)"
    return "started, but no epoch finished"


def compare_run_dirs(run_dirs: Sequence[str | Path], output_dir: str | Path, *, metric: str = "test_acc",
                     baseline: str | None = None, group_by: str = "strategy") -> CompareResult:
    """Compare finished runs made by hand: grouped by strategy (or run name), paired by seed."""
    from headstart.experiments.report import write_compare_report
    from headstart.experiments.rundir import require_run_dir

    if group_by not in ("strategy", "name"):
        raise ConfigError(f"--group-by '{group_by}' is not known; use strategy or name.")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows, splits = [], set()
    for path in run_dirs:
        run = require_run_dir(path)
        cfg = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8")) or {}
        summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
        label = format_strategy_spec(cfg.get("strategy") or {}) if group_by == "strategy" else cfg.get("name", run.name)
        rows.append(row_from_run(run, label, summary.get("seed"), relative_to=out))
        data = cfg.get("data") or {}
        splits.add((data.get("train"), data.get("test"), summary.get("split_seed", summary.get("seed")),
                    summary.get("n_train"), summary.get("n_test")))
    keys = [(r["strategy"], r["seed"]) for r in rows]
    dupes = sorted({k for k in keys if keys.count(k) > 1}, key=str)
    if dupes:
        raise ConfigError(f"Several runs share a {group_by} and seed: {dupes}; pairs by seed would be ambiguous. "
                          f"Use --group-by name (and give the runs distinct config names) or drop duplicates.")
    notes = [f"Runs given by hand ({len(rows)}), grouped by {group_by} and paired by seed."]
    if len(splits) > 1:
        notes.append("Warning: these runs do not all use the same data (train/test files, split seed or row "
                     "counts differ), so the paired test compares more than the strategy.")
    write_results_csv(rows, out / "results.csv")
    files = write_compare_report(rows, out, metric=metric, baseline=baseline, title="headstart compare (runs)",
                                 notes=notes)
    return CompareResult(out, rows, {"results.csv": out / "results.csv", **files})
