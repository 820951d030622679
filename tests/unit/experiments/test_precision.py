"""trainer.precision goes through Lightning: ``auto`` is fp32 on CPU (bf16 autocast is slower on our CPUs) and
bf16 / fp16 mixed on CUDA; an explicit ``bf16-mixed`` trains on CPU; evaluation batches have their own size."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from conftest import tiny_run_config
from headstart.config import load_config
from headstart.experiments.build import resolve_precision
from headstart.experiments.fit import run_fit


def test_auto_is_fp32_on_cpu_and_mixed_on_cuda(monkeypatch) -> None:
    assert resolve_precision("auto", "cpu") == "32-true"
    assert resolve_precision("32") == "32-true"
    assert resolve_precision("16-mixed", "cpu") == "16-mixed"  # explicit values pass through to Lightning
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert resolve_precision("auto", "auto") == "bf16-mixed"
    assert resolve_precision("auto", "cpu") == "32-true"  # accelerator cpu on a GPU machine stays fp32
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert resolve_precision("auto", "gpu") == "16-mixed"


def test_bf16_mixed_trains_a_step_on_cpu(tmp_path: Path, tiny_hf_dir: Path) -> None:
    raw = tiny_run_config(tmp_path, tiny_hf_dir, trainer={"epochs": 1, "precision": "bf16-mixed", "accelerator": "cpu",
                                                          "limit_train_batches": 1})
    raw["data"].update(batch_size=4, eval_batch_size=5)
    summary = run_fit(load_config(None, raw=raw), verbose=False).summary
    assert summary["precision"] == "bf16-mixed"
    assert math.isfinite(summary["val"]["loss"]) and math.isfinite(summary["test"]["loss"])
    rows = (Path(raw["output_dir"]) / "metrics.csv").read_text().splitlines()
    assert rows[1].split(",")[1] == "1"  # one optimizer step
