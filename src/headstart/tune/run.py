"""``headstart tune``: a strategy-aware search where every trial is an ordinary ``run_fit`` run directory.

config + space -> Optuna study (SQLite in the tune directory, or ``--storage``) -> trials asked one at a
time as workers free up, each a config (base + sampled params, one pinned data split, one seed) trained in
``DIR/trials/<number>/`` with its metric reported after every epoch (the pruner may stop it) -> told back to
the study -> ``trials.csv``, ``best.yaml``, ``report.html`` and ``plots/``.

Rerunning the command continues the study: finished trials stay, trials stopped with an earlier command are
queued again and resume from their ``last.ckpt``, numbering goes on. ``--n-trials`` is the study's total.
"""

from __future__ import annotations

import json
import shutil
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from headstart.config import config_to_yaml, load_config
from headstart.errors import ConfigError, RunDirError, RunInterrupted
from headstart.experiments.jobs import FitJob, JobsInterrupted, config_digest, run_jobs, threads_per_worker
from headstart.experiments.rundir import RunLock
from headstart.fileio import atomic_write_text, write_json
from headstart.metrics.direction import lower_is_better
from headstart.tune.report import best_trial, trial_rows, write_trials_csv, write_tune_report
from headstart.tune.space import SearchSpace, load_space, space_size_note
from headstart.tune.study import (
    SURPLUS,
    PrunerSpec,
    count_toward_budget,
    import_optuna,
    is_surplus,
    make_pruner,
    make_sampler,
    open_storage,
    previous_attempt,
    recover_stale_trials,
    storage_url,
    this_machine,
)
from headstart.tune.trial import PRUNED_AT, TrialLink

__all__ = ["TuneResult", "run_tune"]

STATE_FILE = "tune.json"


@dataclass
class TuneResult:
    output_dir: Path
    study_name: str
    storage: str
    rows: list[dict[str, Any]]
    best: dict[str, Any] | None
    files: dict[str, Path]
    interrupted_before: list[int]  # trials stopped with an earlier command, queued again by this one


def _direction(direction: str | None, metric: str) -> str:
    if direction is None:
        return "minimize" if lower_is_better(metric) else "maximize"
    named = {"max": "maximize", "maximize": "maximize", "min": "minimize", "minimize": "minimize"}
    if direction not in named:
        raise ConfigError(f"--direction '{direction}' is not max or min.")
    return named[direction]


def run_tune(
    config: str | Path,
    space: str | Path | dict[str, Any],
    *,
    n_trials: int,
    timeout: float | None = None,
    metric: str | None = None,
    direction: str | None = None,
    workers: int = 1,
    threads: int | None = None,
    storage: str | None = None,
    study_name: str | None = None,
    output_dir: str | Path | None = None,
    pruner: str = "median",
    pruner_startup: int = 3,
    pruner_warmup: int = 1,
    sampler: str = "tpe",
    keep_pruned_weights: bool = False,
    overrides: list[tuple[list[str], Any]] | None = None,
    verbose: bool = True,
) -> TuneResult:
    """Run (or continue) the study until it holds ``n_trials`` trials or ``timeout`` seconds have passed."""
    optuna = import_optuna()
    if n_trials < 1:
        raise ConfigError(f"--n-trials must be at least 1 (got {n_trials}).")
    base_cfg = load_config(config, overrides)
    metric = metric or base_cfg.trainer.monitor
    if not metric.startswith("val_"):
        raise ConfigError(f"--metric '{metric}' is not a validation metric: trials are chosen on the validation "
                          f"split so the test split stays an honest estimate; use e.g. val_acc, val_f1, val_loss, "
                          f"val_rmse.")
    direction = _direction(direction, metric)
    split_seed = base_cfg.data.split_seed if base_cfg.data.split_seed is not None else base_cfg.trainer.seed
    base = base_cfg.model_dump(mode="json")
    base["data"]["split_seed"] = split_seed  # one pinned split for every trial
    base["trainer"].update(monitor=metric, monitor_mode="min" if direction == "minimize" else "max",
                           progress_bar=False)
    search = load_space(space, base)
    out = Path(output_dir) if output_dir else Path(base_cfg.output_dir).parent / f"{base_cfg.name}-tune"
    if out.exists() and not out.is_dir():
        raise RunDirError(f"The tune directory '{out}' is a file; choose another --output-dir.")
    spec = PrunerSpec(pruner, startup_trials=pruner_startup, warmup_epochs=pruner_warmup,
                      max_epochs=base_cfg.trainer.epochs)
    lock = RunLock(out, "tune directory").acquire()  # one command per directory (trials lock their own)
    try:
        if verbose and lock.note():
            print(lock.note())
        url = storage_url(storage, out)
        store = open_storage(url)
        name = study_name or base_cfg.name
        existing = {s.study_name: s for s in optuna.get_all_study_summaries(store)}
        seed = base_cfg.trainer.seed + (existing[name].n_trials if name in existing else 0)  # no replayed draws
        if storage:  # several machines on one study: each its own stream of draws
            seed += zlib.crc32(this_machine().encode()) % 100_000
        study = optuna.create_study(study_name=name, storage=store, direction=direction, load_if_exists=True,
                                    sampler=make_sampler(sampler, seed), pruner=make_pruner(spec))
        _check_same_study(study, name, url, base, search, metric, direction)
        write_json(out / STATE_FILE, {"config": str(config), "space": search.model_dump(mode="json"),
                                      "metric": metric, "direction": direction, "study": name,
                                      "storage": _redact(url), "split_seed": split_seed, "n_trials": n_trials,
                                      "pruner": spec.__dict__, "sampler": sampler})
        atomic_write_text(out / "base.yaml", config_to_yaml(load_config(None, raw=base)))
        recovered = recover_stale_trials(study, out)
        return _optimize(study, search, base, out, url=url, name=name, metric=metric, n_trials=n_trials,
                         timeout=timeout, workers=workers, threads=threads, spec=spec,
                         keep_pruned_weights=keep_pruned_weights, recovered=recovered, verbose=verbose)
    finally:
        lock.release()


def _redact(url: str) -> str:
    """The storage URL without its password (tune.json and reports are shared)."""
    head, sep, tail = url.partition("://")
    if "@" in tail and ":" in tail.split("@", 1)[0]:
        user = tail.split("@", 1)[0].split(":", 1)[0]
        return f"{head}{sep}{user}:***@{tail.split('@', 1)[1]}"
    return url


def _check_same_study(study: Any, name: str, url: str, base: dict[str, Any], space: SearchSpace, metric: str,
                      direction: str) -> None:
    """A study continues only with the config, space and metric it was made with: mixing two searches in one
    study would make its best trial and its importances meaningless."""
    identity = {"base_config": config_digest(base), "space": config_digest({"trainer": {}, **space.model_dump()}),
                "metric": metric}
    if study.direction.name.lower() != direction:
        raise ConfigError(f"Study '{name}' in {_redact(url)} was made to {study.direction.name.lower()} its metric, "
                          f"not {direction}; pass the same --direction, or a new --study-name / --output-dir.")
    seen = study.user_attrs.get("identity")
    if seen is None:
        study.set_user_attr("identity", identity)
        return
    changed = [k for k in identity if seen.get(k) != identity[k]]
    if changed:
        what = {"base_config": "the config (or its --set overrides)", "space": "the search space",
                "metric": f"the metric (it was {seen.get('metric')})"}
        raise ConfigError(f"Study '{name}' in {_redact(url)} was made with another {' and '.join(what[c] for c in changed)}. "
                          f"A study continues only the search it began; pass a new --study-name or --output-dir "
                          f"to start another one.")


def _optimize(study: Any, search: SearchSpace, base: dict[str, Any], out: Path, *, url: str, name: str, metric: str,
              n_trials: int, timeout: float | None, workers: int, threads: int | None, spec: PrunerSpec,
              keep_pruned_weights: bool, recovered: list[int], verbose: bool) -> TuneResult:
    from optuna.trial import TrialState

    per_worker = threads_per_worker(workers, threads)
    live: dict[int, Any] = {}
    started = time.monotonic()
    stopped_by_timeout = False
    if verbose:
        done = count_toward_budget(study.get_trials(deepcopy=False))
        print(f"tune: study '{name}' ({_redact(url)}), {metric} to {study.direction.name.lower()}; "
              f"{done} of {n_trials} trials before this command"
              + (f", {len(recovered)} stopped earlier and queued again ({recovered})" if recovered else "")
              + (f"; {workers} worker processes x {per_worker} threads" if workers > 1 else "")
              + f"\nspace: {space_size_note(search)}", flush=True)

    def make_job(trial: Any) -> FitJob | None:
        number = trial.number
        run_dir = out / "trials" / str(number)
        raw, params = search.sample(trial, base)
        raw["output_dir"] = str(run_dir)
        raw["name"] = f"{base.get('name', 'run')}-trial{number}"
        if per_worker is not None:
            raw["trainer"]["threads"] = per_worker
        from headstart.experiments.build import build_strategy

        try:
            cfg = load_config(None, raw=raw)
            build_strategy(cfg)
        except ConfigError as exc:
            trial.set_user_attr("error", f"invalid config: {exc}")
            study.tell(trial, state=TrialState.FAIL)
            if verbose:
                print(f"trial {number}: {params} gives an invalid config, skipped: {exc}", flush=True)
            return None
        resume = False
        previous = previous_attempt(study, number)
        if previous is not None:  # a trial stopped with an earlier command: continue its epochs
            old = out / "trials" / str(previous)
            if (old / "checkpoints" / "last.ckpt").exists() and not run_dir.exists():
                old.rename(run_dir)
                atomic_write_text(run_dir / "config.yaml", config_to_yaml(cfg))
                resume = True
        config = cfg.model_dump(mode="json")
        for key, value in (("machine", this_machine()), ("tune_dir", str(out.resolve())), ("config", config),
                           ("retry_of", previous)):
            trial.set_user_attr(key, value)
        live[number] = trial
        # the worker re-attaches with optuna.Trial(study, trial_id); Optuna exposes the id only as _trial_id
        link = TrialLink(url, name, trial._trial_id, number, metric, spec)
        return FitJob(f"trial-{number}", config, out / "logs" / f"trial-{number}.log", overwrite=not resume,
                      resume=resume, extra={"number": number, "params": params}, attach=link.attach)

    def jobs():
        nonlocal stopped_by_timeout
        while True:
            if count_toward_budget(study.get_trials(deepcopy=False)) >= n_trials:
                return
            if timeout is not None and time.monotonic() - started >= timeout:
                stopped_by_timeout = True
                return
            trial = study.ask()
            if is_surplus(study, trial.number, n_trials):  # another machine took the last place meanwhile
                trial.set_user_attr(SURPLUS, True)
                trial.set_user_attr("error", f"surplus: the study already had its {n_trials} trials")
                study.tell(trial, state=TrialState.FAIL)
                return
            job = make_job(trial)
            if job is not None:
                yield job

    def on_done(job: FitJob, result: dict[str, Any]) -> None:
        number = job.extra["number"]
        trial = live.pop(number)
        _tell(study, trial, result, metric, keep_pruned_weights)
        rows = trial_rows(study, metric, out)
        write_trials_csv(rows, out / "trials.csv")
        if verbose:
            row = next(r for r in rows if r["number"] == number)
            shown = (f"{metric}={row['value']:.4f}" if isinstance(row.get("value"), float) else "")
            if row["state"] == "PRUNED":
                shown += f" pruned after epoch {row.get(PRUNED_AT)}"
            elif row["state"] == "FAIL":
                shown = f"failed: {row.get('error', result['status'])}"[:300]
            print(f"trial {number} {json.dumps(job.extra['params'], default=str)}: {shown or row['state']} "
                  f"({time.monotonic() - started:.0f} s elapsed; log {job.log})", flush=True)

    try:
        run_jobs(jobs(), workers, on_done)
    except JobsInterrupted as stop:
        _write_outputs(study, search, out, metric, name, url)
        raise RunInterrupted(
            f"tune stopped: {stop.finished} trials finished in this command, {stop.interrupted} stopped mid-run; "
            f"the study is in {_redact(url)} and trials.csv. Resume: run the same command again (stopped trials "
            f"continue from their checkpoints/last.ckpt, numbering goes on).", exit_code=stop.exit_code) from None
    result = _write_outputs(study, search, out, metric, name, url)
    result.interrupted_before = recovered
    if verbose and stopped_by_timeout:
        print(f"tune: --timeout {timeout:g} s reached; no new trial started.")
    return result


def _tell(study: Any, trial: Any, result: dict[str, Any], metric: str, keep_pruned_weights: bool) -> None:
    """Hand a finished run back to the study: its value, PRUNED (weights dropped unless kept), or FAIL."""
    from optuna.trial import TrialState

    if result["status"] in ("interrupted", "not started"):
        return  # stays RUNNING in the storage: the next command queues it again (and resumes its epochs)
    summary = result.get("summary")
    if result["status"] != "done" or not summary:
        trial.set_user_attr("error", result["status"].removeprefix("failed: "))
        study.tell(trial, state=TrialState.FAIL)
        return
    trial.set_user_attr("result", _result_attrs(summary))
    frozen = next(t for t in study.get_trials(deepcopy=False) if t.number == trial.number)
    if frozen.user_attrs.get(PRUNED_AT) is not None:
        if not keep_pruned_weights:
            _drop_weights(Path(result["run_dir"]))
        study.tell(trial, state=TrialState.PRUNED)
        return
    value = (summary.get("val") or {}).get(metric.removeprefix("val_"))
    if not isinstance(value, (int, float)) or value != value:
        trial.set_user_attr("error", f"the run has no finite {metric} (val metrics: {sorted(summary.get('val', {}))})")
        study.tell(trial, state=TrialState.FAIL)
        return
    study.tell(trial, float(value))


def _result_attrs(summary: dict[str, Any]) -> dict[str, Any]:
    """What trials.csv shows of a run (kept in the study, so every machine's trials are reported)."""
    cache = summary.get("cache") or {}
    entries = cache.get("entries") or {}
    keep = ("best_epoch", "epochs_run", "wall_time_s", "train_time_s", "trainable_params", "total_params",
            "peak_rss_mb")
    return {**{k: summary.get(k) for k in keep},
            "val": summary.get("val") or {}, "test": summary.get("test") or {},
            "cache_used": bool(cache.get("used")), "cache_hits": sum(1 for e in entries.values() if e.get("hit")),
            "cache_entries": len(entries)}


def _drop_weights(run_dir: Path) -> None:
    """A pruned trial keeps its metrics, plots and logs; its weights go (``--keep-pruned-weights`` keeps them)."""
    ckpt = run_dir / "checkpoints"
    if ckpt.is_dir():
        shutil.rmtree(ckpt, ignore_errors=True)
        ckpt.mkdir(exist_ok=True)
        (ckpt / "PRUNED.txt").write_text("This trial was pruned; its weights were dropped (headstart tune "
                                         "--keep-pruned-weights keeps them).\n", encoding="utf-8")


def _write_outputs(study: Any, search: SearchSpace, out: Path, metric: str, name: str, url: str) -> TuneResult:
    rows = trial_rows(study, metric, out)
    write_trials_csv(rows, out / "trials.csv")
    files: dict[str, Path] = {"trials.csv": out / "trials.csv"}
    best = best_trial(study)
    if best is not None:
        files["best.yaml"] = _write_best_yaml(best, out, metric, name)
    files.update(write_tune_report(study, rows, out, metric=metric, title=f"headstart tune: {name}",
                                   storage=_redact(url), space=search))
    best_row = next((r for r in rows if best is not None and r["number"] == best.number), None)
    return TuneResult(out, name, _redact(url), rows, best_row, files, [])


def _write_best_yaml(best: Any, out: Path, metric: str, name: str) -> Path:
    """The best trial's whole config, ready for ``headstart fit`` (same seed and split: the same run)."""
    import yaml

    config = json.loads(json.dumps(best.user_attrs["config"]))
    config["output_dir"] = str((out / "best-run").resolve())
    config["name"] = f"{name}-best"
    header = (f"# Best trial {best.number} of study '{name}': {metric} = {best.value:.6g}.\n"
              f"# Params: {json.dumps(best.params, default=str)}\n"
              f"# headstart fit {out / 'best.yaml'} reproduces it (same seed and data split) into best-run/.\n")
    path = out / "best.yaml"
    atomic_write_text(path, header + yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    return path
