"""``headstart inspect``: the layer map and the param-group table, without training."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from headstart.errors import HeadstartError, format_choices
from headstart.train.module import FinetuneModule

if TYPE_CHECKING:
    from headstart.config import RunConfig

__all__ = ["DEFAULT_STEPS_PER_EPOCH", "EpochSteps", "epoch_steps", "format_inspect", "inspect_config",
           "param_group_rows", "train_batches"]

DEFAULT_STEPS_PER_EPOCH = 100  # the LR column's step count when neither the data nor --steps-per-epoch gives one


@dataclass(frozen=True)
class EpochSteps:
    """Optimizer steps of one training epoch and what they come from (the LR column's step count)."""

    steps: int
    n_train: int
    batch_size: int
    accumulate: int
    batches: int  # training batches per epoch, after trainer.limit_train_batches
    limit_train_batches: int | float | None = None

    def describe(self) -> str:
        limit = "" if self.limit_train_batches is None else (
            f", trainer.limit_train_batches={self.limit_train_batches}: {self.batches} batches")
        return (f"{self.steps} optimizer steps per epoch ({self.n_train} training rows, batch size "
                f"{self.batch_size}, accumulate {self.accumulate}{limit})")


def train_batches(n_train: int, batch_size: int, limit_train_batches: int | float | None = None) -> int:
    """Training batches per epoch as Lightning counts them: the loaders keep the last short batch
    (no drop_last), then ``limit_train_batches`` caps them (int: that many, float: that fraction, rounded down)."""
    batches = -(-n_train // batch_size)
    if isinstance(limit_train_batches, bool) or limit_train_batches is None:
        return batches
    if isinstance(limit_train_batches, int):
        return min(batches, limit_train_batches)
    return int(batches * limit_train_batches)


def epoch_steps(cfg: RunConfig, n_train: int) -> EpochSteps:
    """Optimizer steps per epoch of ``cfg`` on ``n_train`` training rows: ``ceil(batches / optim.accumulate)``,
    the count fit builds its LR schedule from (Lightning steps the optimizer on the epoch's last batch too)."""
    limit = cfg.trainer.limit_train_batches
    batches = train_batches(n_train, cfg.data.batch_size, limit)
    steps = max(1, -(-batches // cfg.optim.accumulate))
    return EpochSteps(steps=steps, n_train=n_train, batch_size=cfg.data.batch_size,
                      accumulate=cfg.optim.accumulate, batches=batches, limit_train_batches=limit)


def inspect_config(cfg: RunConfig, steps_per_epoch: int | None = None, verbose: bool = True) -> str:
    """``headstart inspect``: build the model fit would build from ``cfg`` and describe it.

    The training split is read the way fit reads it, so the head has the data's class count and the LR
    column uses fit's optimizer steps per epoch; ``steps_per_epoch`` overrides the latter. When the data
    cannot be read (not there yet, say), the head gets 2 classes and the LR column assumes
    ``steps_per_epoch`` or :data:`DEFAULT_STEPS_PER_EPOCH` steps, and the text says so.
    """
    from headstart.data.text_coverage import coverage_error
    from headstart.experiments.build import build_model
    from headstart.experiments.fit import build_model_for_splits, load_splits
    from headstart.modalities import get_modality

    get_modality(cfg.task).check(cfg, training=False)
    split_seed = cfg.trainer.seed if cfg.data.split_seed is None else cfg.data.split_seed
    splits: Any = None
    try:
        splits = load_splits(cfg, split_seed)
    except (HeadstartError, OSError, ValueError) as exc:  # inspect still shows the model; the note says why
        unreadable = str(exc)
    if splits is None:
        model = build_model(cfg, n_classes=2, verbose=verbose)
        steps = steps_per_epoch or DEFAULT_STEPS_PER_EPOCH
        source = "from --steps-per-epoch" if steps_per_epoch else "assumed; pass --steps-per-epoch N to set it"
        notes = [f"LR column: {steps} optimizer steps per epoch ({source}): the training data could not be "
                 f"read, so neither the step count nor the class count comes from it: {unreadable}",
                 "(head shown for 2 classes; the class count comes from the data at fit time)"]
        return format_inspect(model, cfg.trainer.epochs, steps) + "\n\n" + "\n".join(notes)

    label_map = splits.label_map
    class_names = [str(c) for c in label_map.classes]
    model = build_model_for_splits(cfg, splits, verbose=verbose)
    data = epoch_steps(cfg, len(splits.train))
    if steps_per_epoch:
        lr_line = (f"LR column: {steps_per_epoch} optimizer steps per epoch (from --steps-per-epoch; the data "
                   f"gives {data.describe()})")
    else:
        lr_line = f"LR column: {data.describe()}"
    if getattr(label_map, "kind", "classification") == "classification":
        head = f"{label_map.n_classes} classes from the training split ({format_choices(class_names)})"
    else:
        from headstart.data.targets import describe_targets

        head = f"{describe_targets(label_map)}, from the training split"
    notes = [lr_line, f"Head: {head}"]
    coverage = get_modality(cfg.task).coverage(cfg, splits.train, model.backbone, split_seed)
    if coverage is not None:
        notes.append(coverage.describe())
        problem = coverage_error(coverage, cfg.data.max_unk_rate, str(cfg.backbone.name_or_path or "the default model"))
        if problem:
            notes.append(("Accepted (data.accept_unk): " if cfg.data.accept_unk else "fit would stop: ") + problem)
    return format_inspect(model, cfg.trainer.epochs, steps_per_epoch or data.steps) + "\n\n" + "\n".join(notes)


def param_group_rows(module: FinetuneModule, epochs: int, steps_per_epoch: int) -> list[dict[str, object]]:
    """One row per param group: name, #params, peak LR (after warmup), LR at step 0, wd, trainable."""
    total = max(1, epochs * steps_per_epoch)
    groups, schedule = module.build_schedule(total, steps_per_epoch)
    rows = []
    trainable0 = module.trainable_blocks
    for k, (group, info) in enumerate(zip(groups, schedule.infos, strict=True)):
        n_trainable = sum(p.numel() for p in group["params"] if p.requires_grad)
        if info.is_head:
            status = "yes"
        elif info.block in module.static_frozen:
            status = "frozen"
        elif info.block in trainable0:
            status = "yes" if n_trainable else "frozen"
        else:
            status = "later"  # gradual: unfrozen in a later epoch
        if module.strategy.uses_lora and not info.is_head and n_trainable:
            status = f"lora ({n_trainable:,})"
        rows.append({
            "group": info.name, "params": info.n_params, "lr": schedule.base_lr(info),
            "lr_step0": schedule.lr_at(k, 0, trainable0), "weight_decay": info.weight_decay, "trainable": status,
        })
    return rows


def format_inspect(module: FinetuneModule, epochs: int, steps_per_epoch: int) -> str:
    """The layer map and the param-group table (peak LR and LR at step 0 for ``steps_per_epoch``)."""
    lines = [f"Backbone: {type(module.backbone).__name__}, out_dim={module.backbone.out_dim}",
             f"Strategy: {module.strategy.describe()}", "", "Layer map (input -> output):"]
    for i, (name, block) in enumerate(module._blocks):
        n = sum(p.numel() for p in block.parameters())
        mode = "frozen (eval)" if i in module.static_frozen else "trainable"
        lines.append(f"  {i:>3}  {name:<40} {n:>12,}  {mode}")
    lines += ["", f"Param groups (built once; {epochs} epochs x {steps_per_epoch} steps):"]
    rows = param_group_rows(module, epochs, steps_per_epoch)
    width = max(len(str(r["group"])) for r in rows) + 2
    lines.append(f"  {'group':<{width}}{'#params':>12}  {'lr':>10}  {'lr@step0':>10}  {'wd':>6}  trainable")
    for r in rows:
        lines.append(
            f"  {r['group']!s:<{width}}{r['params']:>12,}  {r['lr']:>10.3g}  {r['lr_step0']:>10.3g}  "
            f"{r['weight_decay']:>6.3g}  {r['trainable']}"
        )
    if module.static_frozen or module.strategy.uses_lora:
        lines.append("  (weights frozen for the whole run are not in the optimizer: no group, no state)")
    trainable, total = module.param_count()
    lines.append(f"\nTrainable parameters: {trainable:,} of {total:,} ({100 * trainable / max(total, 1):.2f}%)")
    return "\n".join(lines)
