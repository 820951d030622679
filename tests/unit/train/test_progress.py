"""Epoch lines, per-step LRs and the 1-based progress bar: what a person watching a run sees."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

import headstart
from conftest import TinyEncoder, quiet_trainer, tiny_loaders
from headstart.train.callbacks import AtomicCheckpointIO
from headstart.train.progress import EpochLine, EpochProgressBar, StepLR, lr_summary


class GroupLRs:
    """Records the optimizer's param-group LRs after every optimizer step (the reference for StepLR)."""

    def __init__(self) -> None:
        self.by_step: dict[int, list[dict]] = {}

    def __call__(self, trainer) -> None:
        self.by_step[trainer.global_step] = [dict(g) for g in trainer.optimizers[0].param_groups]


def _model(seed: int = 0, **kwargs) -> headstart.FinetuneModule:
    torch.manual_seed(seed)
    kwargs = {"lr": 1e-2, "freeze_epochs": 1, "scheduler_type": "cosine", "warmup_steps": 3, **kwargs}
    return headstart.create_finetune_model(seq_encoder=TinyEncoder(), n_classes=2, **kwargs)


def test_lr_summary_rules() -> None:
    groups = [
        {"name": "block0", "is_head": False, "lr": 1e-5},
        {"name": "block1", "is_head": False, "lr": 2e-5},
        {"name": "head", "is_head": True, "lr": 1e-3},
        {"name": "head/no_decay", "is_head": True, "lr": 1e-3},
        {"name": "margin", "is_head": True, "lr": 5e-2},
    ]
    assert lr_summary(groups) == {"lr_head": 1e-3, "lr_margin": 5e-2, "lr_encoder_max": 2e-5}
    assert lr_summary(groups[:4]) == {"lr_head": 1e-3, "lr_encoder_max": 2e-5}
    assert lr_summary([{"name": "margin/no_decay", "is_head": True, "lr": 0.1}]) == {
        "lr_head": 0.1, "lr_margin": 0.1, "lr_encoder_max": 0.0}
    assert lr_summary([{"lr": 0.3}]) == {"lr_head": 0.3, "lr_encoder_max": 0.3}  # unnamed groups
    assert lr_summary([]) == {}


def test_epoch_line_and_step_lr_over_two_epochs(tmp_path: Path) -> None:
    out = io.StringIO()
    line = EpochLine(total_epochs=2, monitor="val_acc", mode="max", stream=out)
    step_lr = StepLR(tmp_path / "lr_steps.csv")
    reference = GroupLRs()

    class RecordLRs(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            reference(trainer)

    train, val = tiny_loaders()
    trainer = quiet_trainer(2, [line, step_lr, RecordLRs()])
    trainer.fit(_model(), train, val)

    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("epoch 1/2  ") and lines[1].startswith("epoch 2/2  ")
    for text in lines:
        assert "train_loss " in text and "val_loss " in text and "val_acc " in text
        assert " lr " in text and text.endswith(" s")
    assert "(best)" in lines[0]  # the first value is always the best so far
    assert line.best is not None

    # One row per optimizer step, with the LRs the groups held after that step.
    assert trainer.global_step == 8  # 64 samples / batch 16, 2 epochs
    assert [r["step"] for r in step_lr.rows] == list(range(1, 9))
    assert [r["epoch"] for r in step_lr.rows] == [1] * 4 + [2] * 4
    for row in step_lr.rows:
        assert {k: row[k] for k in row if k.startswith("lr_")} == lr_summary(reference.by_step[row["step"]])
    assert step_lr.rows[0]["lr_encoder_max"] == 0.0 and step_lr.rows[-1]["lr_encoder_max"] > 0.0  # unfrozen
    assert step_lr.rows[0]["lr_head"] < step_lr.rows[2]["lr_head"]  # warmup is visible

    with (tmp_path / "lr_steps.csv").open(newline="") as fh:
        on_disk = list(csv.DictReader(fh))
    assert list(on_disk[0]) == ["step", "epoch", "lr_head", "lr_encoder_max"]
    assert StepLR(tmp_path / "lr_steps.csv").rows == step_lr.rows  # floats round-trip exactly
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_step_lr_counts_optimizer_steps_under_accumulation(tmp_path: Path) -> None:
    step_lr = StepLR(tmp_path / "lr_steps.csv")
    train, val = tiny_loaders()
    trainer = quiet_trainer(1, [step_lr], accumulate_grad_batches=2)
    trainer.fit(_model(freeze_epochs=0), train, val)
    assert trainer.global_step == 2
    assert [r["step"] for r in step_lr.rows] == [1, 2]


def test_step_lr_resume_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    train, val = tiny_loaders()
    # Uninterrupted: 3 epochs, a checkpoint after each.
    full = tmp_path / "full" / "lr_steps.csv"
    ckpts = ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="{epoch}", save_top_k=-1, every_n_epochs=1)
    quiet_trainer(3, [StepLR(full), ckpts], enable_checkpointing=True,
                  plugins=[AtomicCheckpointIO()]).fit(_model(), train, val)
    reference = StepLR(full).rows
    assert len(reference) == 12

    # "Interrupted" after epoch 1 (step 4), but the file already holds later steps (written before the
    # crash, or left by the run being repeated): a resume must drop the rows past the restored step.
    resumed = tmp_path / "resumed" / "lr_steps.csv"
    resumed.parent.mkdir()
    resumed.write_text(full.read_text())
    step_lr = StepLR(resumed)
    assert len(step_lr.rows) == 12
    seen_at_start: list[int] = []

    class AtStart(pl.Callback):
        def on_train_start(self, trainer, pl_module) -> None:
            seen_at_start.append(len(step_lr.rows))

    train, val = tiny_loaders()
    trainer = quiet_trainer(3, [step_lr, AtStart()], enable_checkpointing=True)
    trainer.fit(_model(seed=123), train, val, ckpt_path=str(tmp_path / "ckpt" / "epoch=0.ckpt"))
    assert seen_at_start == [4]  # rows for steps 5..12 were dropped before training went on
    assert [r["step"] for r in step_lr.rows] == list(range(1, 13))
    assert [r["epoch"] for r in step_lr.rows] == [r["epoch"] for r in reference]
    for got, want in zip(step_lr.rows, reference, strict=True):
        assert got == pytest.approx(want, rel=1e-12)
    assert StepLR(resumed).rows == step_lr.rows


def test_epoch_line_best_state_round_trips_and_marks_only_improvements() -> None:
    line = EpochLine(total_epochs=5, monitor="val_loss", mode="min", stream=io.StringIO())
    assert line.state_key == "EpochLine{'monitor': 'val_loss', 'mode': 'min'}"
    line.load_state_dict({"best": 0.25})
    assert line.state_dict() == {"best": 0.25}

    sgd = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=3e-4)
    trainer = SimpleNamespace(sanity_checking=False, is_global_zero=True, optimizers=[sgd], current_epoch=3,
                              callback_metrics={"train_loss": torch.tensor(0.5), "val_loss": torch.tensor(0.3)})
    line.on_train_epoch_start(trainer, None)
    line.on_train_epoch_end(trainer, None)  # 0.3 is worse than the restored 0.25
    trainer.callback_metrics = {"train_loss": torch.tensor(0.4), "val_loss": torch.tensor(0.2)}
    trainer.current_epoch = 4
    line.on_train_epoch_end(trainer, None)
    first, second = line.stream.getvalue().splitlines()
    assert first.startswith("epoch 4/5  train_loss 0.5000  val_loss 0.3000  lr 3.00e-04  ")
    assert "(best)" not in first
    assert second.startswith("epoch 5/5  train_loss 0.4000  val_loss 0.2000 (best)  lr 3.00e-04  ")
    assert line.best == pytest.approx(0.2)
    with pytest.raises(ValueError, match="mode"):
        EpochLine(3, "val_acc", mode="maximum")


def test_epoch_line_best_survives_a_checkpoint_resume(tmp_path: Path) -> None:
    train, val = tiny_loaders()
    first = EpochLine(3, "val_loss", mode="min", stream=io.StringIO())
    ckpts = ModelCheckpoint(dirpath=tmp_path, filename="{epoch}", save_top_k=-1, every_n_epochs=1)
    quiet_trainer(1, [first, ckpts], enable_checkpointing=True).fit(_model(), train, val)
    assert first.best is not None

    again = EpochLine(3, "val_loss", mode="min", stream=io.StringIO())
    train, val = tiny_loaders()
    quiet_trainer(1, [again], enable_checkpointing=True).fit(_model(), train, val,
                                                               ckpt_path=str(tmp_path / "epoch=0.ckpt"))
    assert again.best == first.best  # restored from the checkpoint; max_epochs=1 ran no new epoch


def test_epoch_progress_bar_is_one_based(tmp_path: Path, capsys) -> None:
    bar = EpochProgressBar()
    descriptions: list[str] = []

    class Watch(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            descriptions.append(bar.train_progress_bar.desc)

    train, val = tiny_loaders()
    trainer = pl.Trainer(max_epochs=2, callbacks=[bar, Watch()], logger=False, enable_checkpointing=False,
                         enable_model_summary=False, num_sanity_val_steps=0, accelerator="cpu",
                         default_root_dir=str(tmp_path))
    trainer.fit(_model(), train, val)
    assert trainer.progress_bar_callback is bar
    assert sorted(set(d.rstrip(": ") for d in descriptions)) == ["Epoch 1/2", "Epoch 2/2"]
    capsys.readouterr()
