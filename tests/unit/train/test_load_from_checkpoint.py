"""``FinetuneModule.load_from_checkpoint(path, seq_encoder=encoder)`` rebuilds the trained module from a plain
Lightning checkpoint, and such checkpoints load with ``torch.load(weights_only=True)``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from conftest import TinyEncoder, make_xy, quiet_trainer, tiny_loaders
from headstart import FinetuneModule, Strategy, create_finetune_model
from headstart.errors import ConfigError
from headstart.strategies import LoraSpec


def _mlp_gradual_balanced(encoder: TinyEncoder) -> FinetuneModule:
    """The ptls-style API call; "balanced" weights from numpy labels, numpy scalars and class names."""
    labels = make_xy(64)[1].numpy()
    return create_finetune_model(
        seq_encoder=encoder, n_classes=np.int64(2), head_hidden_dims=(5, 3), dropout=0.3, lr=np.float64(1e-2),
        freeze_epochs=1, activation="relu", optimizer_type="adam", scheduler_type="linear", warmup_steps=1,
        class_weights="balanced", train_labels=labels, label_smoothing=0.1, class_names=np.array(["neg", "pos"]),
        betas=(0.8, 0.99),
    )


def _cosface_partial_focal(encoder: TinyEncoder) -> FinetuneModule:
    """A Strategy dataclass, a margin head, focal loss and class weights given as a tensor."""
    return FinetuneModule(
        encoder, 2, head_type="cosface", margin=0.2, margin_scale=8.0, head_hidden_dims=[6],
        strategy=Strategy("partial", train_last=2, lora=LoraSpec(target_modules=("q", "v"))), lr=1e-2,
        loss="focal", focal_gamma=1.5, class_weights=torch.tensor([1.0, 2.0]), layer_decay=0.8,
    )


def _lazy_balanced(encoder: TinyEncoder) -> FinetuneModule:
    """"balanced" with no labels given: resolved from the training loader at the first step."""
    return FinetuneModule(seq_encoder=encoder, n_classes=2, lr=1e-2, class_weights="balanced")


BUILDERS = [_mlp_gradual_balanced, _cosface_partial_focal, _lazy_balanced]


def _train_and_checkpoint(model: FinetuneModule, root: Path) -> Path:
    """Two optimizer steps with a plain pl.Trainer whose ModelCheckpoint writes the file."""
    train, val = tiny_loaders(n_train=32, batch_size=16)
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=root,
                         callbacks=[ModelCheckpoint(dirpath=root, filename="model")])
    trainer.fit(model, train, val)
    assert trainer.global_step == 2
    return root / "model.ckpt"


@pytest.mark.parametrize("build", BUILDERS, ids=lambda b: b.__name__.strip("_"))
def test_reload_with_a_fresh_encoder_gives_identical_logits(build: Callable, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build(TinyEncoder())
    path = _train_and_checkpoint(model, tmp_path)

    torch.manual_seed(123)  # a fresh encoder: same architecture, other weights
    loaded = FinetuneModule.load_from_checkpoint(path, seq_encoder=TinyEncoder())

    assert loaded.hparams == model.hparams
    assert type(loaded.head) is type(model.head)
    assert loaded.strategy == model.strategy
    assert loaded.class_names == model.class_names == (["neg", "pos"] if build is _mlp_gradual_balanced else
                                                       ["0", "1"])
    assert loaded.optim_args == model.optim_args
    assert loaded.trainable_blocks == model.trainable_blocks
    assert loaded.state_dict().keys() == model.state_dict().keys()
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    probe = make_xy(16, seed=5)[0]
    model.eval()
    loaded.eval()
    with torch.no_grad():
        assert torch.equal(loaded(probe), model(probe))


def test_balanced_weights_are_saved_as_values_not_as_training_labels(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = _lazy_balanced(TinyEncoder())
    assert model.hparams["class_weights"] == "balanced"
    path = _train_and_checkpoint(model, tmp_path)
    saved = torch.load(path, weights_only=True)["hyper_parameters"]
    labels = tiny_loaders(n_train=32)[0].dataset.tensors[1]
    counts = torch.bincount(labels, minlength=2).double()
    assert saved["class_weights"] == pytest.approx((32 / (2 * counts)).tolist())
    assert "train_labels" not in saved and "seq_encoder" not in saved and "backbone" not in saved


@pytest.mark.parametrize("build", BUILDERS, ids=lambda b: b.__name__.strip("_"))
def test_plain_trainer_checkpoint_loads_with_weights_only(build: Callable, tmp_path: Path) -> None:
    torch.manual_seed(0)
    path = _train_and_checkpoint(build(TinyEncoder()), tmp_path)
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    hparams = checkpoint["hyper_parameters"]

    def plain(value) -> bool:
        if isinstance(value, dict):
            return all(type(k) is str and plain(v) for k, v in value.items())
        if isinstance(value, list):
            return all(plain(v) for v in value)
        return value is None or type(value) in (bool, int, float, str)

    assert plain(hparams), hparams
    assert checkpoint["hparams_name"] == "kwargs"


def test_missing_encoder_names_the_argument(tmp_path: Path) -> None:
    torch.manual_seed(0)
    path = _train_and_checkpoint(FinetuneModule(TinyEncoder(), 2), tmp_path)
    with pytest.raises(TypeError, match=r"seq_encoder=.*load_from_checkpoint"):
        FinetuneModule.load_from_checkpoint(path)
    with pytest.raises(TypeError, match="backbone=<module>"):
        FinetuneModule(n_classes=2)


def test_non_plain_argument_is_refused_at_construction() -> None:
    with pytest.raises(ConfigError, match=r"activation=.*cannot store"):
        FinetuneModule(TinyEncoder(), 2, activation=torch.nn.ReLU())


def test_run_checkpoint_resume_still_works_with_hparams(tmp_path: Path) -> None:
    """A checkpoint saved mid-run resumes with the hyper-parameters in it (Lightning reloads them too)."""
    torch.manual_seed(0)
    model = FinetuneModule(TinyEncoder(), 2, strategy=Strategy("gradual", freeze_epochs=1), lr=1e-2)
    train, val = tiny_loaders(n_train=32, batch_size=16)
    quiet_trainer(1, default_root_dir=tmp_path).fit(model, train, val)
    ckpt = tmp_path / "one.ckpt"
    model.trainer.save_checkpoint(ckpt)
    torch.manual_seed(0)
    again = FinetuneModule.load_from_checkpoint(ckpt, backbone=TinyEncoder())
    trainer = quiet_trainer(2, default_root_dir=tmp_path)
    trainer.fit(again, train, val, ckpt_path=ckpt)
    assert trainer.global_step == 4
    assert again.trainable_blocks == frozenset(range(len(again.block_names)))


def test_resume_into_a_module_still_waiting_for_balanced_weights(tmp_path: Path) -> None:
    """A new module with "balanced" and no labels has no criterion yet; the checkpoint's weights build it."""
    torch.manual_seed(0)
    path = _train_and_checkpoint(_lazy_balanced(TinyEncoder()), tmp_path)
    fresh = _lazy_balanced(TinyEncoder())
    assert fresh.criterion is None
    train, val = tiny_loaders(n_train=32, batch_size=16)
    trainer = quiet_trainer(2, default_root_dir=tmp_path)
    trainer.fit(fresh, train, val, ckpt_path=path)
    assert trainer.global_step == 4
    saved = torch.load(path, weights_only=True)["state_dict"]["criterion.weight"]
    assert fresh.criterion is not None and torch.equal(fresh.criterion.weight, saved)


def test_a_ptls_sequence_encoder_round_trips(tmp_path: Path) -> None:
    """The CoLES user's call: create_finetune_model(seq_encoder=<a ptls RnnSeqEncoder>) trained by a plain
    pl.Trainer on PaddedBatches, reloaded with a freshly built encoder: identical logits."""
    from ptls.data_load.padded_batch import PaddedBatch
    from ptls.nn import RnnSeqEncoder, TrxEncoder
    from torch.utils.data import DataLoader

    def encoder() -> torch.nn.Module:
        trx = TrxEncoder(embeddings={"mcc": {"in": 10, "out": 4}}, numeric_values={"amount": "identity"})
        return RnnSeqEncoder(trx_encoder=trx, hidden_size=8, type="gru")

    def batches(seed: int) -> list[tuple[PaddedBatch, torch.Tensor]]:
        g = torch.Generator().manual_seed(seed)
        out = []
        for _ in range(2):
            lengths = torch.randint(1, 7, (8,), generator=g)
            payload = {"mcc": torch.randint(1, 10, (8, 6), generator=g), "amount": torch.rand(8, 6, generator=g)}
            out.append((PaddedBatch(payload, lengths), torch.randint(0, 2, (8,), generator=g)))
        return out

    torch.manual_seed(0)
    model = create_finetune_model(seq_encoder=encoder(), n_classes=2, lr=1e-2, freeze_epochs=1)
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=tmp_path,
                         callbacks=[ModelCheckpoint(dirpath=tmp_path, filename="seq")])
    loader = DataLoader(batches(0), batch_size=None)
    trainer.fit(model, loader, loader)
    torch.manual_seed(1)
    loaded = FinetuneModule.load_from_checkpoint(tmp_path / "seq.ckpt", seq_encoder=encoder())
    probe = batches(7)[0][0]
    model.eval()
    loaded.eval()
    with torch.no_grad():
        assert torch.equal(loaded(probe), model(probe))
