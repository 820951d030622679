"""``headstart stack``: k-fold out-of-fold predictions of several base configs and a meta-learner on them.

Every base config must describe the same rows (same files, carve fractions, subset, split seed); the
training split is dealt into k stratified, seeded folds once and shared by all bases. Fold model k of each
base trains on the other folds (the fixed validation split picks its best epoch), predicts its held-out
fold and the test split; the meta-learner sees only held-out predictions, and is judged on the test split
against every base (fold-averaged, like the stack's inputs) and their plain average.

``shard="I/N"`` trains only shard I's fold runs (round-robin over bases x folds, see
:mod:`headstart.experiments.shard`) with its own lock and ``stack.shard-I-of-N.json``, and fits no
meta-learner; ``collect=True`` trains nothing and, once every fold run is finished, does what the
unsharded command does after its fold runs.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from headstart.config import RunConfig, load_config
from headstart.data.splits import stratified_kfold
from headstart.errors import ConfigError, DataError, HeadstartError, RunDirError, RunInterrupted
from headstart.experiments.fit import load_splits
from headstart.experiments.jobs import (
    FitJob,
    JobsInterrupted,
    config_digest,
    run_dir_digest,
    run_jobs,
    threads_per_worker,
)
from headstart.experiments.meta import META_LEARNERS, cross_fit, evaluate_stack
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
from headstart.fileio import atomic_path, atomic_write_text, write_json
from headstart.modalities import get_modality

__all__ = ["ROW_KEYS", "STATE_FILE", "StackResult", "load_bases", "run_stack"]

# data keys that decide which rows a run sees: they must agree across the bases of a stack
ROW_KEYS = ("train", "val", "test", "format", "column_names", "text_column", "text_pair_column", "label_column",
            "label_columns", "image_column", "val_fraction", "test_fraction", "train_subset", "mix", "molecules")
STATE_FILE = "stack.json"


@dataclass
class StackResult:
    output_dir: Path
    rows: list[dict[str, Any]]  # empty for a shard: the meta-learners wait for --collect
    files: dict[str, Path]
    shard: Shard | None = None  # set when only this shard's fold runs were trained
    message: str = ""  # a shard's closing words: what ran, and that --collect fits the meta-learners


def load_bases(inputs: Sequence[str | Path], overrides: list[tuple[list[str], Any]] | None = None
               ) -> list[tuple[str, RunConfig]]:
    """Base configs from YAML files or finished run directories (their resolved config.yaml); unique names."""
    from headstart.experiments.rundir import require_run_dir

    bases: list[tuple[str, RunConfig]] = []
    for item in inputs:
        path = Path(item)
        cfg_path = require_run_dir(path) / "config.yaml" if path.is_dir() else path
        cfg = load_config(cfg_path, overrides)
        name = re.sub(r"[^A-Za-z0-9_.-]+", "-", cfg.name if cfg.name != "run" else path.stem).strip("-") or "base"
        taken = {n for n, _ in bases}
        unique, i = name, 2
        while unique in taken:
            unique, i = f"{name}-{i}", i + 1
        bases.append((unique, cfg))
    if len(bases) < 2:
        raise ConfigError(f"stack needs at least two base configs (got {len(bases)}): a stack of one model is that "
                          f"model. Give several configs or run directories.")
    return bases


def _check_same_rows(bases: list[tuple[str, RunConfig]]) -> None:
    first_name, first = bases[0]
    for name, cfg in bases[1:]:
        if cfg.task != first.task:
            raise ConfigError(f"Base '{name}' is a {cfg.task} run but '{first_name}' is {first.task}; a stack "
                              f"combines models of one task on the same rows.")
        diffs = [f"data.{k}: {getattr(first.data, k)!r} vs {getattr(cfg.data, k)!r}" for k in ROW_KEYS
                 if getattr(first.data, k) != getattr(cfg.data, k)]
        if diffs:
            raise ConfigError(f"Base '{name}' reads other rows than '{first_name}' ({'; '.join(diffs)}). Every base "
                              f"of a stack must see the same rows: make these data keys equal.")


def run_stack(
    inputs: Sequence[str | Path],
    *,
    output_dir: str | Path,
    folds: int = 5,
    split_seed: int | None = None,
    meta: str = "lightgbm",
    workers: int = 1,
    threads: int | None = None,
    overrides: list[tuple[list[str], Any]] | None = None,
    embeddings: bool = False,
    verbose: bool = True,
    shard: str | Shard | None = None,
    collect: bool = False,
) -> StackResult:
    """Fold runs of every base (finished ones are reused), OOF assembly, meta-learners, the report.

    ``embeddings``: the meta-learners also get the first base's pretrained (not fine-tuned) encoder features
    of each row, read from the feature cache: they saw no label, so they add no leakage. ``shard="I/N"``:
    only shard I's fold runs, no meta-learner; ``collect=True``: no training, the meta-learners and report once
    every fold run is finished.
    """
    if shard is not None and collect:
        raise ConfigError("--shard and --collect cannot be used together: --shard I/N trains one part of the fold "
                          "runs, --collect trains nothing and fits the meta-learners once every shard has finished. "
                          "Run each shard, then the same command with --collect instead of --shard.")
    part = parse_shard(shard) if shard is not None else None
    if meta not in META_LEARNERS:
        raise ConfigError(f"--meta '{meta}' is not a meta-learner; use one of {', '.join(META_LEARNERS)}.")
    if folds < 2:
        raise ConfigError(f"--folds is {folds}; out-of-fold predictions need at least 2 folds (5 is usual).")
    bases = load_bases(inputs, overrides)
    first = bases[0][1]
    modality = get_modality(first.task)
    split_seed = split_seed if split_seed is not None else (
        first.data.split_seed if first.data.split_seed is not None else first.trainer.seed)
    _check_same_rows(bases)  # and the split seed is pinned for all of them below
    splits = load_splits(first, split_seed)
    if splits.test is None:
        raise ConfigError("stack judges the meta-learner on a test split, but the base configs have none: set "
                          "data.test (a file) or data.test_fraction.")
    kind = splits.label_map.kind
    if kind == "multitask" or (kind == "regression" and splits.label_map.n_classes > 1):
        raise ConfigError(f"stack combines class probabilities or one predicted number; the base configs predict "
                          f"{splits.label_map.n_classes} {kind} targets ({', '.join(map(str, splits.label_map.classes))})"
                          f", which it does not combine. Stack one target at a time, or compare the bases with "
                          f"headstart compare.")
    y_train = modality.labels(splits.train)
    if kind == "regression":
        fold_of = np.random.default_rng(split_seed).permutation(len(y_train)) % folds  # seeded, sizes differ by <= 1
    else:
        counts = np.bincount(y_train, minlength=splits.label_map.n_classes)
        if counts.min() < folds:
            cls = splits.label_map.classes[int(counts.argmin())]
            raise DataError(f"Class {cls!r} has {int(counts.min())} training rows, fewer than --folds {folds}: some "
                            f"fold model would never see it. Use fewer folds or more training rows.")
        fold_of = stratified_kfold(y_train, folds, split_seed)
    row_ids = modality.row_ids(splits.train)
    out = Path(output_dir)
    lock = lock_grid(out, "stack", part, collect)  # one stack (or one shard) per directory; runs lock their own
    try:
        if verbose and lock.note():
            print(lock.note())
        return _run_folds(bases, inputs, splits, fold_of, row_ids, out, folds=folds, split_seed=split_seed,
                          meta=meta, workers=workers, threads=threads, embeddings=embeddings, verbose=verbose,
                          shard=part, collect=collect)
    finally:
        lock.release()


def _run_folds(bases: list[tuple[str, RunConfig]], inputs: Sequence[str | Path], splits: Any, fold_of: np.ndarray,
               row_ids: np.ndarray, out: Path, *, folds: int, split_seed: int, meta: str, workers: int,
               threads: int | None, embeddings: bool, verbose: bool, shard: Shard | None = None,
               collect: bool = False) -> StackResult:
    """``run_stack`` once the stack directory is locked: the fold runs (reused, resumed or run; only ``shard``'s,
    or none with ``collect``), then the meta-learners and the report (not for a shard)."""
    first = bases[0][1]
    modality = get_modality(first.task)
    y_train, y_test = modality.labels(splits.train), modality.labels(splits.test)
    with atomic_path(out / "folds.npz") as tmp, open(tmp, "wb") as fh:
        np.savez(fh, fold=fold_of, label=y_train, row=row_ids)
    state_path = out / (shard.file(STATE_FILE) if shard else STATE_FILE)
    state = read_state(state_path)
    done: dict[str, str] = state.get("runs", {})
    started: dict[str, str] = state.get("started", {})  # runs begun, by digest: a stopped one resumes
    done_any, started_any = _other_records(out, state_path)  # what the other shards (or an unsharded run) did
    per_worker = threads_per_worker(workers, threads)

    jobs: list[FitJob] = []
    unfinished: list[tuple[int, str, str]] = []
    n_runs = len(bases) * folds
    for position, (name, cfg, k) in enumerate((n, c, k) for n, c in bases for k in range(folds)):
        if shard is not None and not shard.owns(position):
            continue
        run_dir = out / "runs" / name / f"fold{k}"
        raw = cfg.model_dump(mode="json")
        raw["output_dir"], raw["name"] = str(run_dir), f"{name}-fold{k}"
        raw["data"]["split_seed"] = split_seed
        raw["trainer"]["progress_bar"] = False
        if per_worker is not None:
            raw["trainer"]["threads"] = per_worker
        digest = config_digest(raw, ",".join(map(str, fold_of.tolist())))
        key = f"{name}/fold{k}"
        holds_run = run_dir_digest(run_dir) == config_digest(raw)  # the directory was made from this config
        if ((done.get(key) == digest or digest in done_any.get(key, ())) and holds_run
                and (run_dir / "predictions" / "holdout.npz").exists()):
            done[key] = digest
            continue
        if collect:
            unfinished.append((position, key, _why_unfinished(run_dir, key, holds_run)))
            continue
        fold_splits = replace(splits, train=modality.take(splits.train, np.flatnonzero(fold_of != k)))
        resume = ((started.get(key) == digest or digest in started_any.get(key, ())) and holds_run
                  and (run_dir / "checkpoints" / "last.ckpt").exists())
        started[key] = digest
        jobs.append(FitJob(key, raw, out / "logs" / f"{name}_fold{k}.log", overwrite=not resume, resume=resume,
                           splits=fold_splits, predict={"holdout": modality.take(splits.train, np.flatnonzero(fold_of == k))},
                           extra={"digest": digest, "fold": k, "run_dir": run_dir}))
    if unfinished:
        raise RunDirError(collect_error("stack", out, STATE_FILE, n_runs, unfinished, {
            "folds": folds, "split_seed": split_seed, "bases": {n: str(p) for (n, _), p in zip(bases, inputs,
                                                                                            strict=True)}}))
    n_mine = n_runs if shard is None else len(range(shard.index - 1, n_runs, shard.count))
    if verbose:
        scope = (f"stack shard {shard.label}: {n_mine} of the {n_runs} fold runs ({len(bases)} bases x {folds} folds)"
                 if shard else f"stack: {len(bases)} bases x {folds} folds = {n_runs} fold runs")
        print(f"{scope} in {out} ({n_mine - len(jobs)} finished before); train={len(y_train)} test={len(y_test)} "
              f"rows, split seed {split_seed}", flush=True)
    own = {"folds": folds, "split_seed": split_seed, "shard": shard.label,
           "bases": {n: str(p) for (n, _), p in zip(bases, inputs, strict=True)}} if shard else {}
    write_json(state_path, {**state, **own, "runs": done, "started": started})
    failed: list[str] = []

    def on_done(job: FitJob, result: dict[str, Any]) -> None:
        if result["status"] == "done":
            done[job.name] = job.extra["digest"]
            k = job.extra["fold"]
            # The run's config.yaml names the data files, not these rows: say which rows it saw.
            write_json(job.extra["run_dir"] / "fold.json", {
                "note": f"fold {k} of a `headstart stack` in {out}: trained on train_rows, predicted holdout_rows; "
                        f"rerunning this config.yaml alone would train on every training row",
                "fold": k, "folds": folds, "split_seed": split_seed,
                "train_rows": row_ids[fold_of != k].tolist(), "holdout_rows": row_ids[fold_of == k].tolist()})
        else:
            failed.append(f"{job.name}: {result['status']} (log {job.log})")
        write_json(state_path, {**state, **own, "runs": done, "started": started})
        if verbose:
            print(f"  {job.name}: {result['status'][:200]}", flush=True)

    where = f"stack shard {shard.label}" if shard else "stack"
    try:
        run_jobs(jobs, workers, on_done)
    except JobsInterrupted as stop:
        raise RunInterrupted(
            f"{where} stopped: {stop.tally('fold runs', n_mine - len(jobs), n_mine)}. Resume: run the same command "
            f"again (finished fold runs are reused, stopped ones continue from their checkpoints/last.ckpt).",
            exit_code=stop.exit_code) from None
    if failed:
        raise HeadstartError(f"{len(failed)} of {n_mine} fold runs{f' of {where}' if shard else ''} failed; the "
                             f"finished ones are kept and a rerun of the same command only runs the rest:\n"
                             + "\n".join(failed))
    if shard is not None:
        mine = [key for p, key in enumerate(f"{n}/fold{k}" for n, _ in bases for k in range(folds)) if shard.owns(p)]
        message = (f"stack shard {shard.label}: its {n_mine} fold runs are finished ({', '.join(mine)}). Once every "
                   f"shard (1/{shard.count} ... {shard.count}/{shard.count}) has finished, run the same command with "
                   f"--collect instead of --shard {shard.label} to fit the meta-learners and write stack.md.")
        return StackResult(out, [], {state_path.name: state_path}, shard=shard, message=message)
    if verbose and collect:
        print(f"stack --collect: all {n_runs} fold runs in {out} are finished; fitting the meta-learners", flush=True)

    oof, test = [], []
    for name, _ in bases:
        o, t = cross_fit(fold_of, lambda k, tr, ho, name=name: _read_fold(out / "runs" / name / f"fold{k}",
                                                                            row_ids[ho], y_test))
        oof.append(o)
        test.append(t)
        with atomic_path(out / "oof" / f"{name}.npz") as tmp, open(tmp, "wb") as fh:
            np.savez(fh, oof=o, test=t, row=row_ids, label=y_train)
    names = [n for n, _ in bases]
    extra = _frozen_embeddings(first, splits, split_seed) if embeddings else {}
    regression = splits.label_map.kind == "regression"
    result = evaluate_stack(names, oof, test, y_train, y_test, splits.label_map.n_classes, seed=split_seed,
                            extra_train=extra.get("train"), extra_test=extra.get("test"), regression=regression)
    report = _report(result["rows"], names, meta, folds, split_seed, len(y_train), len(y_test), bases, regression)
    if embeddings:
        report += (f"\nThe meta-learners also saw the pretrained encoder features of base '{names[0]}' "
                   f"({extra['train'].shape[1]} columns per row).\n")
    atomic_write_text(out / "stack.md", report)
    write_json(state_path, {**state, "runs": done, "started": started, "meta": meta, "folds": folds, "split_seed": split_seed,
                            "bases": {n: str(p) for (n, _), p in zip(bases, inputs, strict=True)},
                            "results": result["rows"]})
    pred = pd.DataFrame({"row": modality.row_ids(splits.test), **splits.label_map.label_columns(y_test)})
    for key, p in result["probas"].items():
        outputs = splits.label_map.output_columns(p)
        pred[f"pred_{key}"] = outputs["prediction"]
    with atomic_path(out / "test_predictions.csv") as tmp:
        pred.to_csv(tmp, index=False)
    return StackResult(out, result["rows"], {"stack.md": out / "stack.md", "stack.json": state_path,
                                             "test_predictions.csv": out / "test_predictions.csv"})


def _other_records(out: Path, own: Path) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """Digests of the fold runs that every other state file (``stack.json``, each shard's) saw finished and
    started, by fold run, so a run done by one shard is not trained again by another."""
    done: dict[str, set[str]] = {}
    started: dict[str, set[str]] = {}
    for path in (out / STATE_FILE, *shard_files(out, STATE_FILE).values()):
        if path != own and path.exists():
            state = read_state(path)
            for key, digest in (state.get("runs") or {}).items():
                done.setdefault(key, set()).add(digest)
            for key, digest in (state.get("started") or {}).items():
                started.setdefault(key, set()).add(digest)
    return done, started


def _why_unfinished(run_dir: Path, key: str, holds_run: bool) -> str:
    """What ``--collect`` says about a fold run that is not finished."""
    if not run_dir.is_dir():
        return "not started"
    holder = lock_holder(run_dir)
    if holder is not None:
        return f"training now ({describe_holder(holder)})"
    if (run_dir / "config.yaml").exists() and not holds_run:
        return "made from another config (a base or --set changed since): its shard trains it again"
    if (run_dir / "checkpoints" / "last.ckpt").exists():
        return f"stopped after {epochs_done(run_dir)} epoch(s); it resumes from checkpoints/last.ckpt"
    log = f"logs/{key.replace('/', '_')}.log"
    return f"started but not finished (failed, or stopped before its first epoch ended; see {log})"


def _frozen_embeddings(cfg: RunConfig, splits: Any, seed: int) -> dict[str, np.ndarray]:
    """Pooled features of ``cfg``'s encoder as loaded before fine-tuning, for the train and test rows."""
    from headstart.cache import pooled_features
    from headstart.experiments.build import seed_everything
    from headstart.experiments.fit import build_model_for_splits
    from headstart.train.pretrained import load_pretrained

    cfg = cfg.model_copy(deep=True)
    modality = get_modality(cfg.task)
    modality.check(cfg)
    seed_everything(seed)
    model = build_model_for_splits(cfg, splits, verbose=False)
    if cfg.pretrain:
        load_pretrained(model, cfg.pretrain, verbose=False, head="reset")
    loaders = modality.loaders(cfg, {"train": splits.train, "test": splits.test}, model.backbone)
    return {split: pooled_features(model, loader, cfg.cache, cfg.data.eval_batch_size)
            for split, loader in loaders.items()}


def _read_fold(run: Path, expected_rows: np.ndarray, y_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A fold run's held-out and test probabilities, checked against the rows it was meant to predict."""
    with np.load(run / "predictions" / "holdout.npz") as h, np.load(run / "predictions" / "test.npz") as t:
        if not np.array_equal(h["row"], expected_rows):
            raise DataError(f"'{run}/predictions/holdout.npz' holds other rows than this fold's held-out rows; the "
                            f"fold run is stale. Delete '{run}' and run stack again.")
        if not np.array_equal(t["label"], y_test, equal_nan=t["label"].dtype.kind == "f"):
            raise DataError(f"'{run}/predictions/test.npz' has other test labels than the stack's test split; "
                            f"delete '{run}' and run stack again.")
        return h["proba"], t["proba"]


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else "–"


def _report(rows: list[dict[str, Any]], names: list[str], meta: str, folds: int, split_seed: int, n_train: int,
            n_test: int, bases: list[tuple[str, RunConfig]], regression: bool = False) -> str:
    if regression:  # (key, column title), the headline first; lower RMSE is better
        columns, headline, unit, scale, sign = [("rmse", "test RMSE"), ("mae", "test MAE"), ("r2", "test R2")], \
            "rmse", "RMSE", 1.0, -1.0
        what = "random folds"
    else:
        binary = "auc" in rows[0]["test"]
        columns = [("acc", "test acc"), ("f1", "test F1 (macro)"), *([("auc", "test AUC")] if binary else [])]
        headline, unit, scale, sign, what = "acc", "accuracy points", 100.0, 1.0, "stratified folds"
    lines = ["# headstart stack", "",
             f"{len(names)} base configs x {folds} {what} (split seed {split_seed}) on {n_train} training "
             f"rows; every number below is on the {n_test}-row test split unless it says OOF. A base model's "
             f"test predictions are the mean of its {folds} fold models (the same inputs the stack gets).", "",
             "| model | " + " | ".join(title for _, title in columns) + f" | OOF {headline} |",
             "|---|" + "---|" * (len(columns) + 1)]
    for r in rows:
        cells = [r["model"], *(_fmt(r["test"].get(key)) for key, _ in columns),
                 _fmt((r.get("oof") or {}).get(headline))]
        lines.append("| " + " | ".join(cells) + " |")
    base_rows = [r for r in rows if r["kind"] == "base"]
    by_oof = max(base_rows, key=lambda r: sign * r["oof"][headline])
    by_test = max(base_rows, key=lambda r: sign * r["test"][headline])
    average = next(r for r in rows if r["kind"] == "average")
    stack = next(r for r in rows if r["model"] == f"stack ({meta})")
    delta = lambda a, b: scale * (a["test"][headline] - b["test"][headline])  # noqa: E731
    lines += ["", f"- Stack ({meta}) vs the best single base chosen on OOF {headline} ({by_oof['model']}): "
                  f"{delta(stack, by_oof):+.4g} {unit} on test.",
              f"- Stack ({meta}) vs the best base on test ({by_test['model']}, an optimistic pick): "
              f"{delta(stack, by_test):+.4g} {unit}.",
              f"- Stack ({meta}) vs the plain average of the bases: {delta(stack, average):+.4g} {unit}."
              + (" (RMSE: negative is better.)" if regression else ""), "",
              "Bases:"]
    lines += [f"- `{n}`: strategy {c.strategy.name}, backbone {c.backbone.type} {c.backbone.name_or_path or ''}, "
              f"lr {c.optim.lr}, epochs {c.trainer.epochs}" for n, c in bases]
    return "\n".join(lines) + "\n"
