"""Resuming in the middle of a gradual run restores the unfreeze mask and the LRs exactly."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

from conftest import TinyEncoder, make_xy, quiet_trainer
from headstart import FinetuneModule, Strategy
from headstart.data import EpochShuffleSampler
from headstart.experiments.build import EpochSeed
from headstart.train.callbacks import AtomicCheckpointIO


class Recorder(pl.Callback):
    def __init__(self) -> None:
        self.lrs: dict[int, list[float]] = {}
        self.masks: dict[int, list[int]] = {}
        self.requires_grad: dict[int, list[bool]] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == 0:
            e = trainer.current_epoch
            self.masks[e] = sorted(pl_module.trainable_blocks)
            self.requires_grad[e] = [p.requires_grad for p in pl_module.backbone.parameters()]

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.lrs[trainer.global_step - 1] = [g["lr"] for g in trainer.optimizers[0].param_groups]


class StopAfter(pl.Callback):
    """Simulates an interruption: the run (configured for N epochs) stops after ``epochs``."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch + 1 >= self.epochs:
            trainer.should_stop = True


def _setup(seed: int = 0):
    torch.manual_seed(seed)
    model = FinetuneModule(TinyEncoder(), 2, strategy=Strategy("gradual", freeze_epochs=2, unfreeze_every=1),
                           lr=1e-2, encoder_lr_ratio=0.5, layer_decay=0.8, scheduler_type="cosine",
                           warmup_steps=3, dropout=0.2)
    x, y = make_xy(48)
    ds = TensorDataset(x, y)
    train = DataLoader(ds, batch_size=8, sampler=EpochShuffleSampler(len(ds), seed=7))
    val = DataLoader(TensorDataset(*make_xy(16, seed=1)), batch_size=16)
    return model, train, val


def test_resume_mid_gradual_run_is_exact(tmp_path) -> None:
    epochs = 5
    model_a, train, val = _setup()
    rec_a = Recorder()
    quiet_trainer(epochs, [rec_a, EpochSeed(3)]).fit(model_a, train, val)

    model_b, train, val = _setup()
    ckpt = ModelCheckpoint(dirpath=tmp_path, filename="last", save_top_k=0, save_last=True)
    rec_b1 = Recorder()
    quiet_trainer(epochs, [rec_b1, ckpt, EpochSeed(3), StopAfter(3)], enable_checkpointing=True,
                  plugins=[AtomicCheckpointIO()]).fit(model_b, train, val)
    assert (tmp_path / "last.ckpt").exists()

    model_c, train, val = _setup(seed=123)  # different init: everything must come from the checkpoint
    rec_c = Recorder()
    quiet_trainer(epochs, [rec_c, EpochSeed(3)], enable_checkpointing=True).fit(
        model_c, train, val, ckpt_path=str(tmp_path / "last.ckpt"))

    # The mask and requires_grad after the resume equal the uninterrupted run's.
    for e in (3, 4):
        assert rec_c.masks[e] == rec_a.masks[e]
        assert rec_c.requires_grad[e] == rec_a.requires_grad[e]
    assert rec_a.masks[0] == [] and rec_a.masks[2] == [4] and rec_a.masks[3] == [3, 4]
    # LRs at every step, before and after the resume.
    combined = {**rec_b1.lrs, **rec_c.lrs}
    assert sorted(combined) == sorted(rec_a.lrs)
    for step, lrs in rec_a.lrs.items():
        assert combined[step] == lrs, step
    # And the weights end up bitwise identical.
    diffs = {name: float((pa - pc).abs().max()) for (name, pa), (_, pc) in
             zip(model_a.named_parameters(), model_c.named_parameters(), strict=True)}
    assert not any(diffs.values()), diffs
