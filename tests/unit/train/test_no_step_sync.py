"""The training loop reads nothing back to the host per step, and its epoch means stay exact."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch

from conftest import TinyEncoder, quiet_trainer, tiny_loaders
from headstart.train.module import FinetuneModule


def test_training_steps_do_not_call_item(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    original = torch.Tensor.item

    def counting_item(self: torch.Tensor):
        calls["n"] += 1
        return original(self)

    train, val = tiny_loaders(n_train=320, batch_size=16)  # 20 steps
    model = FinetuneModule(TinyEncoder(), 2, lr=1e-2)
    trainer = quiet_trainer(1, log_every_n_steps=50)
    monkeypatch.setattr(torch.Tensor, "item", counting_item)
    trainer.fit(model, train, val)
    assert trainer.global_step == 20
    # a handful at epoch end (metrics, checkpoint bookkeeping); per-step reads would give >= 20,
    # and the per-tensor AdamW loop 20 x n_tensors
    assert calls["n"] < 20, calls


class _StepLosses(pl.Callback):
    """Per-step losses and batch sizes, and train_loss/train_acc as callbacks see them at epoch end."""

    def __init__(self) -> None:
        self.steps: list[tuple[float, int]] = []
        self.epoch_end: list[tuple[float, float]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.steps.append((float(outputs["loss"]), int(batch[1].numel())))

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        m = trainer.callback_metrics
        self.epoch_end.append((float(m["train_loss"]), float(m["train_acc"])))


@pytest.mark.parametrize("limit", [None, 3])
def test_epoch_train_loss_is_the_sample_weighted_mean_of_the_steps(limit: int | None) -> None:
    train, val = tiny_loaders(n_train=70, batch_size=16)  # 4 full batches and one of 6
    probe = _StepLosses()
    kwargs = {} if limit is None else {"limit_train_batches": limit}
    trainer = quiet_trainer(2, callbacks=[probe], **kwargs)
    trainer.fit(FinetuneModule(TinyEncoder(), 2, lr=1e-2), train, val)
    per_epoch = len(probe.steps) // 2
    assert per_epoch == (limit or 5)
    for epoch in range(2):
        rows = probe.steps[epoch * per_epoch:(epoch + 1) * per_epoch]
        expected = sum(loss * n for loss, n in rows) / sum(n for _, n in rows)
        # callbacks see this epoch's value in on_train_epoch_end, not the previous epoch's
        assert probe.epoch_end[epoch][0] == pytest.approx(expected, rel=1e-6)
        assert 0.0 <= probe.epoch_end[epoch][1] <= 1.0
