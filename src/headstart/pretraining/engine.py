"""The run of a self-supervised objective, in fit's files: what every objective shares after its data and loss.

An objective hands :func:`run_objective` a :class:`Prepared` (its :class:`~headstart.pretraining.module.ObjectiveModule`,
the loaders, the modality's data state); the run then goes like ``fit``'s:

run dir (locked, ``--overwrite`` / ``--resume``) -> config.yaml + data_state.json -> Lightning Trainer
(metrics.csv with the loss per epoch, lr_steps.csv, TensorBoard, best.safetensors by the monitored metric,
atomic last.ckpt every epoch, graceful SIGINT) -> best weights scored on val / test ->
``pretrained.safetensors`` + ``pretrained.json`` (encoder weights, architecture record, data state, objective)
-> the encoder rebuilt as ``fit --pretrain`` builds it, loaded strictly from the export and compared with the
trained one on a val batch -> curves + summary.json.

:func:`check_objective_config` is the config check every self-supervised objective shares (the whole encoder
trains, no classifier is loaded, the monitored metrics are the objective's own).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import EarlyStopping
from pytorch_lightning.loggers import TensorBoardLogger

from headstart.backbones import Backbone
from headstart.config import RunConfig, config_to_yaml
from headstart.errors import CheckpointError, ConfigError, RunDirError
from headstart.fileio import atomic_write_text, write_json
from headstart.pretraining.module import ObjectiveModule, to_device
from headstart.pretraining.objectives import Objective, PretrainResult
from headstart.train.checkpoint import read_state_dict, sidecar_path

__all__ = ["Prepared", "SelfSupervisedObjective", "check_objective_config", "run_objective"]

log = logging.getLogger("headstart")


@dataclass
class Prepared:
    """What an objective hands :func:`run_objective`: the module, loaders (train, val, optional test), the data
    state the export carries, one line per split for the console, and facts for summary.json."""

    module: ObjectiveModule
    loaders: dict[str, Any]
    data_state: dict[str, Any] | None
    sizes: dict[str, str]
    facts: dict[str, Any] = field(default_factory=dict)


@dataclass
class _EncoderExport:
    """The view of a trained objective module that ``export_pretrained`` writes: no classifier, encoder only."""

    module: ObjectiveModule

    @property
    def backbone(self) -> Backbone:
        return self.module.backbone

    n_classes = 0
    class_names = ()

    def weights_state(self) -> dict[str, torch.Tensor]:
        return self.module.encoder_state()


class SelfSupervisedObjective(Objective):
    """An objective that is its data and loss (:meth:`prepare`); the run itself is :func:`run_objective`'s."""

    def prepare(self, cfg: RunConfig, split_seed: int, verbose: bool = True) -> Prepared:
        """The module, loaders and data state of ``cfg``'s data carved with ``split_seed``."""
        raise NotImplementedError

    def run(self, cfg: RunConfig, *, overwrite: bool, resume: bool, keep_last: bool,
            verbose: bool) -> PretrainResult:
        return run_objective(cfg, lambda c, seed: self.prepare(c, seed, verbose), overwrite=overwrite, resume=resume,
                             keep_last=keep_last, verbose=verbose)


def check_objective_config(cfg: RunConfig, metrics: dict[str, str]) -> None:
    """Refuse what a self-supervised objective cannot use, all at once, then resolve ``trainer.monitor`` into
    ``cfg``: ``metrics`` maps what the objective logs to its mode (``{"val_loss": "min", ...}``), the first is
    the default monitor."""
    name = cfg.objective.name
    problems = []
    if cfg.strategy.name != "full":
        problems.append(f"strategy '{cfg.strategy.name}' freezes blocks of a classifier being fine-tuned, but "
                        f"{name} pretraining trains the whole encoder: remove strategy (or set it to full)")
    if cfg.pretrain:
        problems.append(f"pretrain (--pretrain) loads a classifier's encoder before fine-tuning; to start {name} "
                        f"from other weights, set backbone.checkpoint instead")
    t, o = cfg.trainer, cfg.optim
    logged = ", ".join(metrics)
    if t.monitor not in metrics and "monitor" in t.model_fields_set:
        problems.append(f"trainer.monitor is '{t.monitor}', but {name} logs {logged}")
    if t.early_stopping is not None and t.early_stopping.monitor not in metrics:
        problems.append(f"trainer.early_stopping.monitor is '{t.early_stopping.monitor}', but {name} logs {logged}")
    if o.scheduler == "plateau" and o.plateau_monitor not in metrics:
        problems.append(f"optim.plateau_monitor is '{o.plateau_monitor}', but {name} logs {logged}")
    default = next(iter(metrics))
    monitor = t.monitor if t.monitor in metrics else default
    if "monitor_mode" in t.model_fields_set and t.monitor_mode != metrics[monitor]:
        problems.append(f"trainer.monitor_mode is '{t.monitor_mode}', but {monitor} is better when "
                        f"{'lower' if metrics[monitor] == 'min' else 'higher'} ({metrics[monitor]})")
    if problems:
        raise ConfigError(f"objective {name} cannot run this config: " + "; ".join(problems) + ". A fine-tuning "
                          f"config reused for {name} usually needs: --set trainer.monitor={default} --set "
                          f"trainer.monitor_mode={metrics[default]} (or remove those keys: {name} then monitors "
                          f"{default}).")
    if (t.monitor, t.monitor_mode) != (monitor, metrics[monitor]):  # written to config.yaml resolved
        log.info("objective %s: trainer.monitor %s (%s) instead of the classifier's default %s.", name, monitor,
                 metrics[monitor], t.monitor)
        t.monitor, t.monitor_mode = monitor, metrics[monitor]


def _one_process(cfg: RunConfig) -> None:
    """The label-free objectives train in one process: their loop has none of fit's rank-0 guards or sharding."""
    from headstart.experiments.build import build_trainer_kwargs
    from headstart.train.distributed import process_world

    world = process_world(build_trainer_kwargs(cfg))[1]
    if world > 1:
        raise ConfigError(
            f"headstart pretrain --objective {cfg.objective.name} trains in one process, but trainer.devices="
            f"{cfg.trainer.devices!r} with trainer.num_nodes={cfg.trainer.num_nodes} would start {world}. Set "
            f"trainer.devices: 1 (--set trainer.devices=1); `headstart fit` and the supervised objective train with "
            f"several processes."
        )


def run_objective(cfg: RunConfig, prepare: Any, *, overwrite: bool, resume: bool, keep_last: bool,
                  verbose: bool) -> PretrainResult:
    """Train ``prepare(cfg, split_seed)``'s module into ``cfg.output_dir`` and export its encoder."""
    from headstart.experiments.build import configure_threads, seed_everything
    from headstart.experiments.rundir import epochs_done, prepare_run_dir, record_failure
    from headstart.modalities import get_modality

    t0 = time.perf_counter()
    modality = get_modality(cfg.task)
    modality.check(cfg)
    _one_process(cfg)
    run, lock = prepare_run_dir(cfg.output_dir, overwrite=overwrite, resume=resume)
    try:
        if lock.note() and verbose:
            print(lock.note())
        done = epochs_done(run)
        if resume and (run / "summary.json").exists() and done >= cfg.trainer.epochs:
            raise RunDirError(f"Nothing to resume in '{run}': the run finished all {done} epochs (summary.json). "
                              f"Raise --epochs above {done} with --resume to train longer, or pass --overwrite.")
        threads = configure_threads(cfg.trainer.threads)
        seed_everything(cfg.trainer.seed)
        split_seed = cfg.trainer.seed if cfg.data.split_seed is None else cfg.data.split_seed
        prepared: Prepared = prepare(cfg, split_seed)
        if verbose:
            print(f"Pretraining objective {cfg.objective.name}: {', '.join(f'{k}={v}' for k, v in prepared.sizes.items())}; "
                  f"torch threads={threads}; run dir {run}")
        if not resume:
            atomic_write_text(run / "config.yaml", config_to_yaml(cfg))
            modality.save_state(run, prepared.data_state, backbone=prepared.module.backbone)
        trainer, callbacks = _train(cfg, run, prepared, resume=resume, verbose=verbose)
        return _finish(cfg, run, prepared, modality, trainer, callbacks, t0, resume=resume, keep_last=keep_last,
                       verbose=verbose, threads=threads, split_seed=split_seed)
    except BaseException as exc:
        record_failure(run, exc)
        raise
    finally:
        lock.release()


def _train(cfg: RunConfig, run: Path, prepared: Prepared, *, resume: bool,
           verbose: bool) -> tuple[pl.Trainer, dict[str, Any]]:
    """Lightning with fit's callbacks; returns the trainer and the callbacks whose records the summary reads."""
    from headstart.experiments.build import EpochSeed, build_trainer_kwargs
    from headstart.experiments.rundir import epochs_done, resume_hint
    from headstart.train.callbacks import (
        AtomicCheckpointIO,
        BestWeights,
        LastCheckpoint,
        MetricsCSV,
        ResumeSamplerEpoch,
    )
    from headstart.train.interrupt import GracefulStop
    from headstart.train.progress import EpochLine, EpochProgressBar, StepLR

    t = cfg.trainer
    module, loaders = prepared.module, prepared.loaders
    sidecar = {"objective": cfg.objective.model_dump(), "blocks": module.block_names,
               "backbone": module.backbone.describe()}
    best = BestWeights(run / "checkpoints", t.monitor, t.monitor_mode, t.save_top_k, sidecar)
    last_path = run / "checkpoints" / "last.ckpt"

    stopper = GracefulStop(lambda trainer: resume_hint(run, epochs_done(run)))
    records = {"best": best, "metrics": MetricsCSV(run / "metrics.csv"), "steps": StepLR(run / "lr_steps.csv")}
    callbacks: list[pl.Callback] = [
        EpochSeed(t.seed), ResumeSamplerEpoch(loaders["train"]), records["metrics"], best,
        LastCheckpoint(last_path), stopper, records["steps"],
        *([EpochLine(t.epochs, t.monitor, t.monitor_mode)] if verbose else []),
        *([EpochProgressBar()] if t.progress_bar else []),
    ]
    if t.early_stopping is not None:
        es = t.early_stopping
        callbacks.append(EarlyStopping(monitor=es.monitor, patience=es.patience, mode=es.mode, min_delta=es.min_delta))
    trainer = pl.Trainer(**build_trainer_kwargs(cfg), callbacks=callbacks, default_root_dir=str(run),
                         logger=TensorBoardLogger(str(run), name="tb", version=""), plugins=[AtomicCheckpointIO()])
    stopper.fit(trainer, module, loaders["train"], loaders["val"], str(last_path) if resume else None,
                "pretraining")
    return trainer, records


def _finish(cfg: RunConfig, run: Path, prepared: Prepared, modality: Any, trainer: pl.Trainer, records: dict[str, Any],
            t0: float, *, resume: bool, keep_last: bool, verbose: bool, threads: int,
            split_seed: int) -> PretrainResult:
    """Best weights -> scores -> export (checked) -> curves -> summary.json; last.ckpt dropped unless kept."""
    from headstart.experiments.fit import release_training_state
    from headstart.experiments.rundir import peak_rss_mb
    from headstart.metrics.plots import plot_curves
    from headstart.train.pretrained import export_pretrained

    train_time = time.perf_counter() - t0
    module, best = prepared.module, records["best"]
    release_training_state(trainer, module)
    best_path = run / "checkpoints" / "best.safetensors"
    if not best_path.exists():
        raise CheckpointError(f"No best checkpoint was written: the monitored metric '{cfg.trainer.monitor}' was never "
                              f"logged. Set trainer.monitor to val_loss (or another metric the objective logs).")
    module.load_state_dict(read_state_dict(best_path, require_sidecar=True), strict=False)
    scores = {split: module.evaluate(prepared.loaders[split]) for split in ("val", "test") if split in prepared.loaders}
    extra = {"task": cfg.task, "backbone_config": cfg.backbone.model_dump(), "normalization": None,
             **modality.export_record(cfg), "data_state": prepared.data_state, "objective": cfg.objective.model_dump()}
    export = export_pretrained(run, _EncoderExport(module), extra)
    check = _check_export(cfg, export, prepared, modality)
    plot_curves(records["metrics"].rows, run / "plots" / "curves.png", best_epoch=best.best_epoch,
                monitor=cfg.trainer.monitor, step_rows=records["steps"].rows)
    summary = {
        "name": cfg.name, "objective": cfg.objective.model_dump(), "best_epoch": best.best_epoch,
        "monitor": cfg.trainer.monitor, "best_value": best.best_value, "epochs_run": trainer.current_epoch,
        "val": scores.get("val", {}), "test": scores.get("test", {}), "sizes": prepared.sizes, **prepared.facts,
        "wall_time_s": round(time.perf_counter() - t0, 2), "train_time_s": round(train_time, 2),
        "total_params": sum(p.numel() for p in module.backbone.parameters()), "peak_rss_mb": round(peak_rss_mb(), 1),
        "seed": cfg.trainer.seed, "split_seed": split_seed, "threads": threads, "resumed": resume,
        "pretrained_export": str(export), "export_max_abs_diff": check,
        "last_checkpoint": "kept" if keep_last else "dropped after success (--keep-last keeps it)",
    }
    write_json(run / "summary.json", summary)
    if not keep_last:
        (run / "checkpoints" / "last.ckpt").unlink(missing_ok=True)
        sidecar_path(run / "checkpoints" / "last.ckpt").unlink(missing_ok=True)
    if verbose:
        print(f"best epoch {best.best_epoch}: {cfg.trainer.monitor} {best.best_value}; val {scores.get('val')}; "
              f"export {export}")
    return PretrainResult(run, summary)


def _check_export(cfg: RunConfig, export: Path, prepared: Prepared, modality: Any) -> float:
    """Rebuild the encoder as ``fit --pretrain`` does (config + data state), load the export strictly and compare
    its features with the trained encoder's on a val batch (DESIGN rule 5)."""
    module = prepared.module
    rebuilt = modality.build_backbone(cfg, prepared.data_state)
    state = {k.removeprefix("backbone."): v for k, v in read_state_dict(export).items()}
    rebuilt.load_state_dict(state, strict=True)
    rebuilt.to(module.device)
    probe = to_device(next(iter(prepared.loaders["val"]))[0], module.device)
    module.eval()
    rebuilt.eval()
    with torch.inference_mode():
        a = module.backbone(probe).float().cpu()
        b = rebuilt(probe).float().cpu()
    diff = float((a - b).abs().max())
    if diff > 1e-5:
        raise CheckpointError(f"The export '{export}' does not reproduce the trained encoder: rebuilt from its record "
                              f"it gives features that differ by {diff:.3g} on a val batch. This is a bug in saving; "
                              f"please report it with the config.")
    return diff

