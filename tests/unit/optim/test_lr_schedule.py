"""The LR in optimizer.param_groups equals the documented formula (DESIGN rule 2)."""

from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl

from conftest import TinyEncoder, quiet_trainer, tiny_loaders
from headstart import FinetuneModule, Strategy
from headstart.optim import GroupInfo, LRSchedule, PlateauState


def reference_lr(*, lr, enc_lr, decay, n_blocks, block, is_head, step, warmup, total, kind, min_ratio=0.0,
                 trainable=True, plateau=1.0):
    """The formula from headstart.optim.schedule's docstring, written out independently."""
    base = lr if is_head else enc_lr * decay ** (n_blocks - 1 - block)
    if step < warmup:
        s = (step + 1) / warmup
    elif kind in ("none", "plateau"):
        s = 1.0
    else:
        q = min(1.0, (step - warmup) / max(1, total - warmup))
        shape = 0.5 * (1 + math.cos(math.pi * q)) if kind == "cosine" else 1 - q
        s = min_ratio + (1 - min_ratio) * shape
    mask = 1.0 if (is_head or trainable) else 0.0
    return base * s * mask * (plateau if kind == "plateau" else 1.0)


def _infos(n_blocks: int) -> list[GroupInfo]:
    infos = [GroupInfo(f"{i}:b", i, False, 0.01, 10) for i in range(n_blocks)]
    return [*infos, GroupInfo("head", n_blocks, True, 0.01, 4)]


@pytest.mark.parametrize("kind", ["cosine", "linear", "none"])
def test_formula_at_several_steps(kind: str) -> None:
    n, total, warmup = 4, 50, 5
    sched = LRSchedule(_infos(n), lr=1e-3, n_blocks=n, total_steps=total, warmup_steps=warmup, scheduler=kind,
                       encoder_lr_ratio=0.1, layer_decay=0.8, min_lr_ratio=0.05)
    for step in (0, 1, 4, 5, 6, 20, 37, 49):
        for k, info in enumerate(sched.infos):
            trainable = {0, 2, 3}
            want = reference_lr(lr=1e-3, enc_lr=1e-4, decay=0.8, n_blocks=n, block=info.block, is_head=info.is_head,
                                step=step, warmup=warmup, total=total, kind=kind, min_ratio=0.05,
                                trainable=info.block in trainable)
            assert sched.lr_at(k, step, trainable) == pytest.approx(want, rel=1e-12, abs=0.0)


def test_absolute_encoder_lr_overrides_ratio_and_top_block_gets_it() -> None:
    sched = LRSchedule(_infos(3), lr=1e-3, n_blocks=3, total_steps=10, scheduler="none", encoder_lr=2e-5,
                       encoder_lr_ratio=0.5, layer_decay=0.5)
    assert sched.base_lr(sched.infos[2]) == pytest.approx(2e-5)
    assert sched.base_lr(sched.infos[1]) == pytest.approx(1e-5)
    assert sched.base_lr(sched.infos[0]) == pytest.approx(5e-6)
    assert sched.base_lr(sched.infos[3]) == pytest.approx(1e-3)


def test_plateau_reduces_after_patience_and_resumes_exactly() -> None:
    sched = LRSchedule(_infos(2), lr=1e-3, n_blocks=2, total_steps=10, scheduler="plateau",
                       plateau=PlateauState(factor=0.5, patience=1, mode="min"))
    assert not sched.on_validation(1.0)
    assert not sched.on_validation(0.9)  # better
    assert not sched.on_validation(0.95)  # bad 1 (== patience, not yet)
    assert sched.on_validation(0.95)  # bad 2 > patience: reduce
    assert sched.lr_at(2, 3, {0, 1}) == pytest.approx(5e-4)
    state = sched.state_dict()
    fresh = LRSchedule(_infos(2), lr=1e-3, n_blocks=2, total_steps=10, scheduler="plateau",
                       plateau=PlateauState(factor=0.5, patience=1, mode="min"))
    fresh.load_state_dict(state)
    assert fresh.lr_at(0, 3, {0, 1}) == sched.lr_at(0, 3, {0, 1})


class LRRecorder(pl.Callback):
    def __init__(self) -> None:
        self.rows: list[tuple[int, int, list[float], int]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        groups = trainer.optimizers[0].param_groups
        self.rows.append((trainer.global_step - 1, trainer.current_epoch, [g["lr"] for g in groups], len(groups)))


@pytest.mark.parametrize(
    ("strategy", "kind", "decay", "ratio"),
    [
        (Strategy("full"), "cosine", 0.7, 0.1),
        (Strategy("gradual", freeze_epochs=1, unfreeze_every=1), "linear", 0.9, 0.5),
        (Strategy("partial", train_last=2), "cosine", 1.0, 0.3),
    ],
)
def test_optimizer_groups_follow_formula_during_a_real_run(strategy, kind, decay, ratio) -> None:
    train, val = tiny_loaders(n_train=64, batch_size=16)
    epochs, warmup = 4, 3
    model = FinetuneModule(TinyEncoder(), 2, strategy=strategy, lr=1e-2, encoder_lr_ratio=ratio, layer_decay=decay,
                           scheduler_type=kind, warmup_steps=warmup, min_lr_ratio=0.0)
    rec = LRRecorder()
    quiet_trainer(epochs, [rec]).fit(model, train, val)
    total = epochs * len(train)
    n = len(model.block_names)
    infos = model.group_infos
    assert {r[3] for r in rec.rows} == {len(infos)}, "the number of param groups changed during the run"
    for step, epoch, lrs, _ in rec.rows:
        trainable = strategy.trainable(epoch, n)
        for info, got in zip(infos, lrs, strict=True):
            want = reference_lr(lr=1e-2, enc_lr=1e-2 * ratio, decay=decay, n_blocks=n, block=info.block,
                                is_head=info.is_head, step=step, warmup=warmup, total=total, kind=kind,
                                trainable=info.block in trainable)
            assert got == pytest.approx(want, rel=1e-12, abs=0.0), (step, epoch, info.name)
    assert len(rec.rows) == total


def test_gradient_accumulation_counts_optimizer_steps() -> None:
    train, val = tiny_loaders(n_train=64, batch_size=8)  # 8 batches/epoch, accumulate 4 -> 2 steps/epoch
    model = FinetuneModule(TinyEncoder(), 2, lr=1e-2, scheduler_type="linear", warmup_steps=0)
    trainer = quiet_trainer(3, accumulate_grad_batches=4)
    trainer.fit(model, train, val)
    assert trainer.global_step == 6
    assert model.schedule is not None and model.schedule.total_steps == 6


class EpochLR(pl.Callback):
    def __init__(self) -> None:
        self.first_lr: dict[int, list[float]] = {}
        self.val_loss: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx == 0:
            self.first_lr[trainer.current_epoch] = [g["lr"] for g in trainer.optimizers[0].param_groups]

    def on_validation_end(self, trainer, pl_module) -> None:
        self.val_loss.append(float(trainer.callback_metrics["val_loss"]))


def test_plateau_in_a_real_run_follows_the_validation_history() -> None:
    train, val = tiny_loaders(n_train=64, batch_size=16)
    model = FinetuneModule(TinyEncoder(), 2, lr=0.5, scheduler_type="plateau", plateau_factor=0.5,
                           plateau_patience=0, plateau_monitor="val_loss", encoder_lr_ratio=0.1)
    rec = EpochLR()
    quiet_trainer(6, [rec]).fit(model, train, val)
    scale, best, bad = 1.0, None, 0
    for epoch in range(6):
        for info, got in zip(model.group_infos, rec.first_lr[epoch], strict=True):
            base = 0.5 if info.is_head else 0.05
            assert got == pytest.approx(base * scale, rel=1e-12), (epoch, info.name)
        value = rec.val_loss[epoch]  # the validation at the end of this epoch sets the next epoch's scale
        if best is None or value < best - 1e-4:
            best, bad = value, 0
        else:
            bad += 1
            if bad > 0:
                scale, bad = scale * 0.5, 0
    assert min(rec.first_lr[5]) < min(rec.first_lr[0]) or scale == 1.0
    assert any(rec.first_lr[e] != rec.first_lr[0] for e in range(6)), "no plateau reduction happened"
