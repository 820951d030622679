"""The founding user's exact usage: a ptls seq encoder fine-tuned with ``create_finetune_model``."""

from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader

import headstart
from headstart.backbones import PtlsBackbone, check_layer_map

ptls_nn = pytest.importorskip("ptls.nn")
from ptls.data_load.padded_batch import PaddedBatch  # noqa: E402


def _trx_encoder():
    return ptls_nn.TrxEncoder(embeddings={"mcc": {"in": 20, "out": 7}}, numeric_values={"amount": "identity"})


def make_sequences(n: int, seed: int) -> list[tuple[dict[str, torch.Tensor], int]]:
    """Variable-length transaction sequences; class 1 iff mcc 3 appears (about half of them)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        length = int(torch.randint(3, 13, (1,), generator=g))
        mcc = torch.randint(4, 20, (length,), generator=g)
        label = i % 2
        if label:
            pos = torch.randint(0, length, (int(torch.randint(1, 3, (1,), generator=g)),), generator=g)
            mcc[pos] = 3
        else:
            mcc[mcc == 3] = 5
        amount = torch.randn(length, generator=g).abs()
        out.append(({"mcc": mcc, "amount": amount}, label))
    return out


def collate(items: list[tuple[dict[str, torch.Tensor], int]]) -> tuple[PaddedBatch, torch.Tensor]:
    lengths = torch.tensor([len(x["mcc"]) for x, _ in items])
    payload = {k: pad_sequence([x[k] for x, _ in items], batch_first=True, padding_value=0)
               for k in ("mcc", "amount")}
    return PaddedBatch(payload, lengths), torch.tensor([y for _, y in items])


def loaders(batch_size: int = 16):
    g = torch.Generator().manual_seed(0)
    train = DataLoader(make_sequences(64, seed=1), batch_size=batch_size, shuffle=True, generator=g,
                       collate_fn=collate)
    val = DataLoader(make_sequences(32, seed=2), batch_size=32, collate_fn=collate)
    return train, val


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


class Snapshots(pl.Callback):
    """Encoder and head state (parameters and buffers) at the end of each training epoch."""

    def __init__(self) -> None:
        self.encoder: dict[int, dict[str, torch.Tensor]] = {}
        self.head: dict[int, dict[str, torch.Tensor]] = {}
        self.requires_grad: dict[int, bool] = {}

    def on_train_start(self, trainer, pl_module) -> None:
        self.encoder[-1] = _snapshot(pl_module.backbone)
        self.head[-1] = _snapshot(pl_module.head)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        e = trainer.current_epoch
        self.encoder[e] = _snapshot(pl_module.backbone)
        self.head[e] = _snapshot(pl_module.head)
        self.requires_grad[e] = any(p.requires_grad for p in pl_module.backbone.parameters())


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _trainer(max_epochs: int, callbacks: list[pl.Callback]) -> pl.Trainer:
    return pl.Trainer(max_epochs=max_epochs, enable_progress_bar=False, logger=False, enable_checkpointing=False,
                      callbacks=callbacks, enable_model_summary=False, accelerator="cpu")


def test_transformer_seq_encoder_founding_usage() -> None:
    torch.manual_seed(0)
    encoder = ptls_nn.TransformerSeqEncoder(trx_encoder=_trx_encoder(), n_heads=1, n_layers=2, dim_hidden=16)
    train_dl, val_dl = loaders()

    model = headstart.create_finetune_model(seq_encoder=encoder, n_classes=2, head_hidden_dims=[32, 16],
                                            dropout=0.3, lr=1e-3, freeze_epochs=2)
    assert isinstance(model.backbone, PtlsBackbone) and model.backbone.module is encoder
    assert model.block_names == ["stem", "seq_encoder.enc.layers.0", "seq_encoder.enc.layers.1", "neck"]
    check_layer_map(model.backbone, model.backbone.blocks())

    snaps = Snapshots()
    trainer = _trainer(3, [snaps])
    trainer.fit(model, train_dl, val_dl)

    # Epochs 0-1: the encoder is frozen (params and BatchNorm statistics bitwise unchanged), the head trains.
    assert _same(snaps.encoder[-1], snaps.encoder[0]) and _same(snaps.encoder[0], snaps.encoder[1])
    assert not snaps.requires_grad[0] and not snaps.requires_grad[1]
    assert not _same(snaps.head[-1], snaps.head[0])
    assert not _same(snaps.head[0], snaps.head[1])
    # Epoch 2: the whole encoder trains.
    assert snaps.requires_grad[2]
    changed = [k for k, v in snaps.encoder[2].items() if not torch.equal(v, snaps.encoder[1][k])]
    params = dict(model.backbone.named_parameters())
    assert changed
    for name in ("module.trx_encoder.embeddings.mcc.weight", "module.seq_encoder.enc.layers.0.linear1.weight",
                 "module.seq_encoder.enc.layers.1.linear2.weight", "module.seq_encoder.enc.norm.weight"):
        assert name in params and name in changed, name

    metrics = trainer.callback_metrics
    for key in ("train_loss", "train_acc", "val_loss", "val_acc", "val_f1", "val_auc"):
        assert key in metrics, f"{key} not logged; got {sorted(metrics)}"
        assert math.isfinite(float(metrics[key])), key
    assert 0.0 <= float(metrics["val_auc"]) <= 1.0

    emb, labels = model.get_embeddings(val_dl)
    assert emb.shape == (32, encoder.embedding_size) == (32, 8)
    assert labels is not None and labels.shape == (32,)
    assert torch.equal(labels, torch.cat([y for _, y in val_dl]))
    assert torch.isfinite(emb).all()
    # Eval mode: embeddings are deterministic, and get_embeddings leaves the module's mode as it was.
    emb2, _ = model.get_embeddings(val_dl)
    torch.testing.assert_close(emb, emb2)


def test_rnn_seq_encoder_linear_probe_stays_frozen() -> None:
    torch.manual_seed(0)
    encoder = ptls_nn.RnnSeqEncoder(trx_encoder=_trx_encoder(), hidden_size=12, type="gru")
    train_dl, val_dl = loaders()
    model = headstart.create_finetune_model(seq_encoder=encoder, n_classes=2, head_hidden_dims=[16], dropout=0.3,
                                            lr=1e-2, freeze_encoder=True)
    blocks = model.backbone.blocks()
    assert [n for n, _ in blocks] == ["trx_encoder", "seq_encoder"]
    assert blocks[0][1] is encoder.trx_encoder and blocks[1][1] is encoder.seq_encoder
    assert model.backbone.out_dim == 12
    assert not any(p.requires_grad for p in model.backbone.parameters())

    snaps = Snapshots()
    _trainer(2, [snaps]).fit(model, train_dl, val_dl)

    for e in (0, 1):
        assert _same(snaps.encoder[-1], snaps.encoder[e]), f"encoder changed in epoch {e}"
        assert not snaps.requires_grad[e]
    assert not _same(snaps.head[-1], snaps.head[1])
    model.train(True)
    assert model.head.training
    for sub in (*encoder.trx_encoder.modules(), *encoder.seq_encoder.modules()):
        assert not sub.training, f"frozen {type(sub).__name__} left in train mode"

    emb, labels = model.get_embeddings(val_dl)
    assert emb.shape == (32, 12) and labels is not None and labels.shape == (32,)
