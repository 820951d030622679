"""The training loop reads nothing back to the host per step (no ``.item()`` per step or per tensor)."""

from __future__ import annotations

import pytest
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
