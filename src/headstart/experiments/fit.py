"""``headstart fit``: one readable path from a config to a finished run directory.

config -> run dir -> data + label map -> backbone + tokenizer -> model (+ pretrained encoder) ->
Lightning Trainer (metrics.csv, TensorBoard, best/top-k safetensors, last.ckpt after every epoch) ->
best weights evaluated on val/test -> reload round-trip check -> plots + summary.json.

The run directory is locked for the run's life (one writer); SIGINT / SIGTERM stop at a batch boundary
with the last finished epoch saved; a finished run drops its training state (last.ckpt) unless
``keep_last``.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import EarlyStopping
from pytorch_lightning.loggers import TensorBoardLogger

from headstart.cache import format_bytes, plan_cache
from headstart.config import RunConfig, config_to_yaml
from headstart.data.targets import describe_targets
from headstart.data.text_coverage import coverage_error
from headstart.errors import CheckpointError, ConfigError, DataError, RunDirError
from headstart.experiments.build import (
    EpochSeed,
    build_cached_loaders,
    build_configured_backbone,
    build_model,
    build_trainer_kwargs,
    configure_threads,
    seed_everything,
)
from headstart.experiments.inspect import format_inspect, train_batches
from headstart.experiments.rundir import (
    epochs_done,
    peak_rss_mb,
    prepare_run_dir,
    record_failure,
    resume_hint,
    trim_heap,
)
from headstart.fileio import atomic_path, atomic_write_text, write_json
from headstart.metrics.plots import plot_curves
from headstart.modalities import Modality, get_modality
from headstart.train.callbacks import (
    AtomicCheckpointIO,
    BestWeights,
    LastCheckpoint,
    MetricsCSV,
    ResumeSamplerEpoch,
)
from headstart.train.checkpoint import FROZEN_WEIGHTS, read_state_dict, sidecar_path
from headstart.train.distributed import RankConsistency, process_world, shard_loader
from headstart.train.interrupt import GracefulStop
from headstart.train.pretrained import export_pretrained as export_pretrained_weights
from headstart.train.pretrained import load_pretrained
from headstart.train.progress import EpochLine, EpochProgressBar, StepLR
from headstart.train.weight_store import default_weights_dir, store_frozen_weights

__all__ = [
    "FitResult", "build_model_for_splits", "format_cache_info", "load_splits", "run_fit",
    "save_predictions",
]

log = logging.getLogger("headstart")


@dataclass
class FitResult:
    run_dir: Path
    summary: dict[str, Any]  # empty on ranks other than 0 of a multi-process run (rank 0 writes the results)
    rank: int = 0


def run_fit(
    cfg: RunConfig,
    *,
    overwrite: bool = False,
    resume: bool = False,
    verbose: bool = True,
    callbacks: list[pl.Callback] | None = None,
    export_pretrained: bool = False,
    splits: Any = None,
    predict: dict[str, Any] | None = None,
    keep_last: bool = False,
    resume_how: str = "run the same command with --resume",
    one_process: bool = False,
    classic_baseline: bool = False,
) -> FitResult:
    """Train ``cfg`` into its run directory; ``callbacks`` are extra Lightning callbacks (timers, probes).

    ``export_pretrained`` (``headstart pretrain``): also write the best weights as ``pretrained.safetensors``
    with their architecture record, for ``fit --pretrain`` on another dataset. ``splits`` (as the modality's
    ``load_splits`` returns them) replaces reading ``cfg.data``: headstart stack trains fold models so.
    ``predict`` adds named row sets (in the splits' form) that the best weights predict:
    like val and test, their class probabilities go to ``predictions/<name>.npz`` (through the feature
    cache where the run uses it). ``keep_last``: keep ``checkpoints/last.ckpt`` (weights + optimizer state) after
    the run finishes; by default it is deleted then, since ``best.safetensors`` holds the weights.
    ``resume_how``: what an interrupted run's message tells the user to do (compare / stack: rerun them).
    ``one_process``: refuse a config that would train with several processes (compare / stack / tune workers:
    Lightning's launcher would re-run their whole command).
    ``classic_baseline`` (``fit --baseline``): also fit the modality's classic baseline on the same split
    (``baseline.json``, summary.json ``classic_baseline``, a console line saying which wins).
    """
    t0 = time.perf_counter()
    modality = get_modality(cfg.task)
    modality.check(cfg)
    rank, world, local = process_world(build_trainer_kwargs(cfg))
    if one_process and world > 1:
        t = cfg.trainer
        raise ConfigError(
            f"trainer.devices={t.devices!r} with trainer.num_nodes={t.num_nodes} would train each run with {world} "
            f"processes, but compare, stack and tune run every configuration in one process (--workers runs several "
            f"side by side). Set trainer.devices: 1 (--set trainer.devices=1), or spread the grid over machines: "
            f"--shard I/N (compare, stack) or one --storage database (tune)."
        )
    if rank != 0:  # another process of a multi-process run: rank 0 owns (locks, prepares, writes) the directory
        return _run_locked(cfg, Path(cfg.output_dir), t0, modality, resume=resume, verbose=False,
                           callbacks=callbacks, export_pretrained=export_pretrained, splits=splits, predict=predict,
                           keep_last=keep_last, lock_note=None, resume_how=resume_how, world=(rank, world, local))
    run, lock = prepare_run_dir(cfg.output_dir, overwrite=overwrite, resume=resume)
    try:
        return _run_locked(cfg, run, t0, modality, resume=resume, verbose=verbose, callbacks=callbacks,
                           export_pretrained=export_pretrained, splits=splits, predict=predict, keep_last=keep_last,
                           lock_note=lock.note(), resume_how=resume_how, world=(rank, world, local),
                           classic_baseline=classic_baseline)
    except BaseException as exc:
        record_failure(run, exc, resume_how)
        raise
    finally:
        lock.release()


def _run_locked(cfg: RunConfig, run: Path, t0: float, modality: Modality, *, resume: bool, verbose: bool,
                callbacks: list[pl.Callback] | None, export_pretrained: bool, splits: Any,
                predict: dict[str, Any] | None, keep_last: bool, lock_note: str | None,
                resume_how: str, world: tuple[int, int, int], classic_baseline: bool = False) -> FitResult:
    """``run_fit`` once ``run`` is locked and prepared (on rank 0; other ranks only train, see
    headstart.train.distributed)."""
    rank, n_proc, local_procs = world
    writer = rank == 0
    if lock_note and verbose:
        print(lock_note)
    done = epochs_done(run) if writer else 0
    if writer and resume and (run / "summary.json").exists() and done >= cfg.trainer.epochs:
        raise RunDirError(
            f"Nothing to resume in '{run}': the run finished all {done} epochs (summary.json). Raise --epochs "
            f"(trainer.epochs) above {done} with --resume to train longer, or pass --overwrite to train again."
        )
    threads = configure_threads(cfg.trainer.threads, local_procs)
    if n_proc > 1:
        os.environ["OMP_NUM_THREADS"] = str(threads)  # Lightning's launcher keeps it (and the children inherit it)
    seed_everything(cfg.trainer.seed)

    # Data and label map (seeded splits: the same config always gives the same rows).
    d = cfg.data
    split_seed = cfg.trainer.seed if d.split_seed is None else d.split_seed
    if splits is None:
        splits = load_splits(cfg, split_seed)
    label_map = splits.label_map
    class_names = [str(c) for c in label_map.classes]

    # Model: backbone (+ its tokenizer), head, strategy; the pretrained encoder if asked.
    model = build_model_for_splits(cfg, splits, verbose=verbose)
    data_state = modality.data_state(splits)
    pretrain_report = load_pretrained(model, cfg.pretrain, verbose=verbose, head=cfg.pretrain_head,
                                      targets=_targets(cfg)) if cfg.pretrain else None
    parts = {"train": splits.train, "val": splits.val, "test": splits.test, **(predict or {})}
    if predict and set(predict) & {"train", "val", "test"}:
        raise ConfigError(f"predict names {sorted(set(predict) & {'train', 'val', 'test'})} clash with the run's "
                          f"own splits; use other names.")
    coverage = modality.coverage(cfg, splits.train, model.backbone, split_seed)  # before any training time
    if coverage is not None:
        if verbose:
            print(coverage.describe())
        problem = coverage_error(coverage, d.max_unk_rate, str(cfg.backbone.name_or_path or "the default model"))
        if problem and not d.accept_unk:
            raise DataError(problem)
    loaders = modality.loaders(cfg, parts, model.backbone)
    # Lightning's count: the loader's batches, capped by trainer.limit_train_batches, per optimizer step.
    batches = train_batches(len(loaders["train"]), 1, cfg.trainer.limit_train_batches)
    steps_per_epoch = max(1, -(-batches // cfg.optim.accumulate))
    trainer_kwargs = build_trainer_kwargs(cfg)
    if n_proc > 1 and trainer_kwargs["strategy"] in ("auto", "ddp") and _trainable_set_changes(model, cfg):
        # DDP synchronises the parameters that require gradients when it wraps the model; blocks unfrozen later
        # (gradual) must be registered then too, and may be unused in the epochs before (the reducer skips them).
        trainer_kwargs["strategy"] = "ddp_find_unused_parameters_true"
        model.ddp_register_all = True

    # Frozen prefix: computed once (or found by content key) and trained on, where that is exact.
    fit_loaders, cache_info = loaders, {"used": False, "reason": "turned off (--no-cache / cache.enabled: false)"}
    blocker = modality.cache_blocker(cfg, loaders) if cfg.cache.enabled else None
    if blocker is not None:
        cache_info["reason"] = blocker
    elif cfg.cache.enabled:
        plan, why = plan_cache(model, cfg.trainer.epochs)
        if plan is None:
            cache_info["reason"] = why
        else:
            fit_loaders, cache_info = build_cached_loaders(cfg, model, loaders, plan, trainer_kwargs["precision"])
    if verbose:
        print(format_inspect(model, cfg.trainer.epochs, steps_per_epoch))
        sizes = {k: modality.describe_split(v) for k, v in (("train", splits.train), ("val", splits.val),
                                                            ("test", splits.test)) if v is not None}
        print(f"\nData: {', '.join(f'{k}={v}' for k, v in sizes.items())}, {describe_targets(label_map)}; "
              f"torch threads={threads}; run dir {run}")
        print(format_cache_info(cache_info))

    if writer and not resume:
        atomic_write_text(run / "config.yaml", config_to_yaml(cfg))
        label_map.to_json(run / "labels.json")
        modality.save_state(run, data_state, backbone=model.backbone)
        modality.write_splits(run, splits)

    # Weights no step can change (linear probe / partial prefix / LoRA base) are written once, not per epoch,
    # and shared on disk by every run with the same ones (a hard link into the weights store).
    frozen_names = model.static_weight_names()
    frozen_storage = None
    if frozen_names:
        frozen_path = run / "checkpoints" / FROZEN_WEIGHTS
        # Rank 0 writes them; another rank only reads them back when resuming (model.frozen_weights_file).
        if writer and not (resume and frozen_path.exists()):
            state = model.weights_state()
            frozen_storage = store_frozen_weights({k: state[k] for k in frozen_names}, frozen_path,
                                                  default_weights_dir(cfg.cache.dir))
        elif writer:  # written by the interrupted run: its sidecar says whether it sits in the store
            side = sidecar_path(frozen_path)
            frozen_storage = "shared" if side.exists() and "store" in json.loads(side.read_text()) else "copy"
        model.frozen_weights_file = frozen_path

    # Train.
    sidecar = {"strategy": model.strategy.describe(), "classes": label_map.classes,
               "blocks": model.block_names, "backbone": model.backbone.describe()}
    best = BestWeights(run / "checkpoints", cfg.trainer.monitor, cfg.trainer.monitor_mode, cfg.trainer.save_top_k,
                       sidecar)
    metrics_csv = MetricsCSV(run / "metrics.csv")
    step_lr = StepLR(run / "lr_steps.csv")
    train_loaders = fit_loaders
    if n_proc > 1:  # each rank its piece of every global batch (validation: gathered back in the module)
        train_loaders = {k: shard_loader(fit_loaders[k], rank, n_proc) for k in ("train", "val")}
    last_path = run / "checkpoints" / "last.ckpt"
    stopper = GracefulStop(lambda trainer: resume_hint(run, epochs_done(run), resume_how))
    all_callbacks: list[pl.Callback] = [
        EpochSeed(cfg.trainer.seed), ResumeSamplerEpoch(train_loaders["train"]), metrics_csv, best,
        LastCheckpoint(last_path), stopper, step_lr, RankConsistency(),
        *([EpochLine(cfg.trainer.epochs, cfg.trainer.monitor, cfg.trainer.monitor_mode)] if verbose else []),
        *([EpochProgressBar()] if cfg.trainer.progress_bar else []),
        *(callbacks or []),
    ]
    es = cfg.trainer.early_stopping
    if es is not None:
        all_callbacks.append(
            EarlyStopping(monitor=es.monitor, patience=es.patience, mode=es.mode, min_delta=es.min_delta)
        )
    trainer = pl.Trainer(
        **trainer_kwargs, callbacks=all_callbacks, default_root_dir=str(run),
        logger=TensorBoardLogger(str(run), name="tb", version=""), plugins=[AtomicCheckpointIO()],
    )
    stopper.fit(trainer, model, train_loaders["train"], train_loaders["val"], str(last_path) if resume else None,
                "training")
    train_time = time.perf_counter() - t0
    rss_train = peak_rss_mb()
    release_training_state(trainer, model)
    if not writer:  # rank 0 evaluates the best weights and writes the results
        return FitResult(run, {}, rank=rank)

    # Evaluate the best epoch's weights on val and test.
    best_path = run / "checkpoints" / "best.safetensors"
    if not best_path.exists():
        raise CheckpointError(
            f"No best checkpoint was written: the monitored metric '{cfg.trainer.monitor}' was never logged. "
            f"Set trainer.monitor to one of val_loss, val_acc, val_f1 (or val_auc for binary tasks)."
        )
    model.load_state_dict(read_state_dict(best_path, require_sidecar=True), strict=False)
    results: dict[str, dict[str, float]] = {}
    outputs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for split in ("val", "test", *(predict or {})):
        if split not in fit_loaders:
            continue
        logits, labels = model.predict_logits(fit_loaders[split])
        proba = model.decode(logits).numpy()  # probabilities, or numbers in the data's unit for regression
        save_predictions(run / "predictions" / f"{split}.npz", proba, labels, modality.row_ids(parts[split]))
        if split in ("val", "test"):
            results[split] = model.target.metrics(labels.numpy(), proba)
            outputs[split] = (labels.numpy(), proba)

    roundtrip = verify_roundtrip(run, model, loaders["val"])
    plot_curves(metrics_csv.rows, run / "plots" / "curves.png", best_epoch=best.best_epoch,
                monitor=cfg.trainer.monitor, step_rows=step_lr.rows)
    plot_split = "test" if "test" in outputs else "val"
    split_plot = model.target.plot(run / "plots", plot_split, *outputs[plot_split], class_names, best.best_epoch)
    trainable, total = model.param_count()
    summary = {
        "name": cfg.name,
        "best_epoch": best.best_epoch,
        "monitor": cfg.trainer.monitor,
        "best_value": best.best_value,
        "epochs_run": trainer.current_epoch,
        "val": results.get("val", {}),
        "test": results.get("test", {}),
        "plot_split": plot_split,  # the split of the confusion / predicted-vs-true plot
        "target_plot": split_plot,
        "wall_time_s": round(time.perf_counter() - t0, 2),
        "train_time_s": round(train_time, 2),
        "trainable_params": trainable,
        "total_params": total,
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "peak_rss_train_mb": round(rss_train, 1),
        "strategy": model.strategy.describe(),
        "seed": cfg.trainer.seed,
        "split_seed": split_seed,
        "n_train": len(splits.train),
        "n_val": len(splits.val),
        "n_test": 0 if splits.test is None else len(splits.test),
        "n_train_mixed_in": getattr(splits, "mixed_rows", 0),  # rows of data.mix (dataset A) in train
        "classes": label_map.classes,
        "target_kind": label_map.kind,
        "precision": trainer_kwargs["precision"],
        "threads": threads,
        "processes": n_proc,  # DDP world size (trainer.devices x trainer.num_nodes)
        "processes_before_resume": model.resumed_world_size,
        "roundtrip_max_abs_diff": roundtrip,
        "resumed": resume,
        "cache": cache_info,
        "tokenizer": None if coverage is None else coverage.to_dict(),  # unknown-token and truncation rates
        "pretrain": None if pretrain_report is None else {
            "source": pretrain_report.source, "head_loaded": pretrain_report.head_loaded,
            "backbone_keys_loaded": len(pretrain_report.backbone.matched),
            "backbone_keys_missing": len(pretrain_report.backbone.missing), "notes": pretrain_report.notes},
    }
    if export_pretrained:
        summary["pretrained_export"] = str(export_pretrained_weights(
            run, model, {"task": cfg.task, "targets": _targets(cfg), "backbone_config": cfg.backbone.model_dump(),
                         "normalization": None,
                         **modality.export_record(cfg), "data_state": data_state}))
    summary["frozen_weights"] = frozen_storage
    summary["last_checkpoint"] = "kept" if keep_last else "dropped after success (--keep-last keeps it)"
    write_json(run / "summary.json", summary)
    if cfg.ood is not None:  # scored on the best weights just saved, as `headstart evaluate --ood` would
        summary["ood"] = score_ood(run, cfg)
        write_json(run / "summary.json", summary)
    if not keep_last:  # the weights are in best.safetensors; the optimizer state only serves --resume
        last_path.unlink(missing_ok=True)
        sidecar_path(last_path).unlink(missing_ok=True)
    if verbose:
        print(json.dumps({k: summary[k] for k in ("best_epoch", "val", "test", "wall_time_s")}, indent=2))
        print(f"Kept: checkpoints/best.safetensors (epoch {best.best_epoch})"
              + (", checkpoints/last.ckpt (--keep-last)" if keep_last else "; last.ckpt dropped (--keep-last "
                 "keeps the training state)"))
    if classic_baseline:  # the modality's classic model on the same rows (headstart.baselines)
        from headstart.baselines import fit_run_baseline

        summary["classic_baseline"] = fit_run_baseline(cfg, splits, run, summary, verbose=verbose)
        write_json(run / "summary.json", summary)
    return FitResult(run, summary)


def _trainable_set_changes(model: Any, cfg: RunConfig) -> bool:
    """Whether some block trains in a later epoch but not in the first (gradual unfreezing)."""
    n, names = len(model.block_names), list(model.block_names)
    first = model.strategy.trainable(0, n, names)
    return any(model.strategy.trainable(e, n, names) != first for e in range(1, cfg.trainer.epochs))


def build_model_for_splits(cfg: RunConfig, splits: Any, verbose: bool = True) -> Any:
    """The model fit trains on ``splits``: what the training split decides (pairs, channels, normalisation,
    vocabularies) settled into ``cfg`` by the modality, the head sized by the label map, class weights from
    the training labels."""
    modality = get_modality(cfg.task)
    modality.settle(cfg, splits)
    label_map = splits.label_map
    backbone = build_configured_backbone(cfg, modality.data_state(splits), verbose=verbose)
    return build_model(cfg, label_map.n_classes, [str(c) for c in label_map.classes],
                       modality.labels(splits.train), backbone=backbone, verbose=verbose, target=label_map.spec())


def _targets(cfg: RunConfig) -> list[str]:
    """The label column(s) a run learns (recorded in pretrained exports; compared before reusing a head)."""
    return list(cfg.data.label_columns or [cfg.data.label_column])


def score_ood(run: Path, cfg: RunConfig) -> dict[str, dict[str, float]]:
    """``cfg.ood``'s report of the finished run (``{score: {auroc, aupr_out, aupr_in, fpr95}}``; files in ood/)."""
    from headstart.experiments.ood_eval import evaluate_ood

    o = cfg.ood
    assert o is not None
    id_data, ood_data = (o.id_data, o.ood_data) if o.id_data else (run / "splits" / "id_test.csv",
                                                                  run / "splits" / "test.csv")
    return evaluate_ood(run, id_data, ood_data, temperature=o.temperature, ridge=o.ridge)["metrics"]


def load_splits(cfg: RunConfig, split_seed: int) -> Any:
    """The train / val / (test) rows and label map ``cfg.data`` describes, carved with ``split_seed``."""
    return get_modality(cfg.task).load_splits(cfg, split_seed)


def save_predictions(path: Path, proba: np.ndarray, labels: torch.Tensor | None, row: np.ndarray) -> None:
    """Class probabilities (regression: predicted numbers, in ``proba`` too) of one split in row order (``row``:
    each row's id in its source), written atomically: what ensembles and paired tests of several runs are built
    from. Labels keep their kind: class indices as int64, numbers / task labels (NaN = missing) as float32."""
    payload = {"proba": proba.astype(np.float32), "row": row.astype(np.int64)}
    if labels is not None:
        y = labels.numpy()
        payload["label"] = y.astype(np.int64) if np.issubdtype(y.dtype, np.integer) else y.astype(np.float32)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **payload)


def release_training_state(trainer: pl.Trainer, model: torch.nn.Module) -> None:
    """Drop the optimizer state and gradients (3x the trainable weights for Adam) once training is over,
    and hand the freed heap back to the OS, so evaluation and the reload check do not raise the peak."""
    for optimizer in trainer.optimizers:
        optimizer.state.clear()
    trainer.strategy.optimizers = []
    model.zero_grad(set_to_none=True)
    gc.collect()
    trim_heap()


def verify_roundtrip(run: Path, model: torch.nn.Module, loader: Any) -> float:
    """Reload the run from disk and check it gives the same logits on a probe batch (DESIGN rule 5)."""
    from headstart.experiments.inference import load_run
    from headstart.train.batches import split_batch, to_device

    loaded = load_run(run, verbose=False)
    batch = next(iter(loader))
    inputs, _ = split_batch(batch)
    model.eval()
    loaded.model.eval()
    with torch.inference_mode():
        a = model(to_device(inputs, model.device)).float().cpu()
        b = loaded.model(inputs).float().cpu()
    diff = float((a - b).abs().max())
    if not torch.equal(a, b) and diff > 1e-5:
        raise CheckpointError(
            f"Saved run '{run}' does not reproduce the trained model: reloaded logits differ by {diff:.3g} on a "
            f"probe batch. This is a bug in saving; please report it with the config."
        )
    return diff


def format_cache_info(info: dict[str, Any]) -> str:
    """One paragraph for the console: what was cached, hit or built, how big, where."""
    if not info.get("used"):
        return f"Feature cache: not used ({info.get('reason', 'off')})."
    parts = []
    for split, e in info["entries"].items():
        state = "reused" if e["hit"] else f"built in {e['seconds']:.1f} s"
        parts.append(f"{split} {state} ({e['rows']} rows, {format_bytes(e['bytes'])})")
    total = sum(e["bytes"] for e in info["entries"].values())
    return (f"Feature cache: {info['plan']}; " + "; ".join(parts) + f". {format_bytes(total)} in {info['dir']} "
            f"(`headstart cache ls|clear`; --no-cache turns it off).")

