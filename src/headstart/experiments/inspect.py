"""``headstart inspect``: the layer map and the param-group table, without training."""

from __future__ import annotations

from headstart.train.module import FinetuneModule

__all__ = ["format_inspect", "param_group_rows"]


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
