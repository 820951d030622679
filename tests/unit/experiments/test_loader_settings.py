"""Loaders pin host memory only when batches go to a GPU (pinning on CPU-only runs costs memory for nothing)."""

from __future__ import annotations

import pytest
import torch

from headstart.config import RunConfig
from headstart.experiments.build import loader_settings


def _cfg(accelerator: str) -> RunConfig:
    return RunConfig.model_validate({"data": {"train": "x.csv"}, "trainer": {"accelerator": accelerator}})


@pytest.mark.parametrize(("cuda", "accelerator", "pinned"), [
    (False, "auto", False), (True, "auto", True), (True, "gpu", True), (True, "cpu", False)])
def test_pin_memory_follows_the_device(monkeypatch: pytest.MonkeyPatch, cuda: bool, accelerator: str,
                                       pinned: bool) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    settings = loader_settings(_cfg(accelerator))
    assert settings["pin_memory"] is pinned and settings["num_workers"] == 0
