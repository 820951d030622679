"""The ptls encoder built from ``backbone.sequence``: layer map, padding, strategies, rebuild from its record."""

from __future__ import annotations

import copy
import json

import pytest
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader

from conftest import quiet_trainer
from headstart import FinetuneModule, LayerMapError, LoraSpec, Strategy
from headstart.backbones import (
    BlockGroup,
    PtlsBackbone,
    SequenceEncoderBackbone,
    build_sequence_encoder,
    check_layer_map,
    default_embedding_dim,
    rebuild_sequence_encoder,
)
from headstart.backbones.ptls_build import module_keys
from headstart.config import SequenceEncoderConfig
from headstart.errors import CheckpointError, ConfigError, DataError

pytest.importorskip("ptls.nn")
from ptls.data_load.padded_batch import PaddedBatch

# "type" is also an nn.ModuleDict method: the encoder must still take it as a field name.
CATEGORICAL = {"mcc": 12, "type": 4}
NUMERIC = ["delta", "amount"]
ENCODERS = {
    "gru": dict(encoder="gru"),
    "lstm": dict(encoder="lstm"),
    "gru_bidir": dict(encoder="gru", bidirectional=True),
    "lstm_bidir": dict(encoder="lstm", bidirectional=True),
    "transformer": dict(encoder="transformer", n_heads=2),
}


def _build(name: str, **overrides) -> SequenceEncoderBackbone:
    torch.manual_seed(0)
    spec = SequenceEncoderConfig(**{"hidden_size": 8, "num_layers": 2, "dropout": 0.1, **ENCODERS[name], **overrides})
    return build_sequence_encoder(spec, dict(CATEGORICAL), list(NUMERIC))


def _sequences(lengths: list[int], seed: int = 0) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [{"mcc": torch.randint(2, 12, (n,), generator=g), "type": torch.randint(1, 4, (n,), generator=g),
             "amount": torch.randn(n, generator=g), "delta": torch.rand(n, generator=g)} for n in lengths]


def _batch(seqs: list[dict[str, torch.Tensor]], width: int | None = None) -> PaddedBatch:
    lengths = torch.tensor([len(next(iter(s.values()))) for s in seqs])
    width = width or int(lengths.max())
    payload = {}
    for key in seqs[0]:
        padded = torch.zeros(len(seqs), width, dtype=seqs[0][key].dtype)
        for i, s in enumerate(seqs):
            padded[i, : len(s[key])] = s[key]
        payload[key] = padded
    return PaddedBatch(payload, lengths)


# ----- layer map ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(ENCODERS))
def test_layer_map_names_and_every_parameter_in_one_block(name: str) -> None:
    backbone = _build(name, num_layers=3)
    blocks = backbone.blocks()
    layers = ["layer_0", "layer_1", "layer_2"]
    expected = ["stem", *layers, "neck"] if name == "transformer" else ["stem", *layers]
    assert [n for n, _ in blocks] == expected
    check_layer_map(backbone, blocks)  # every parameter in exactly one block, no empty block
    assert isinstance(backbone, PtlsBackbone)
    stem = dict(blocks)["stem"]
    if name == "transformer":
        seq = backbone.module.seq_encoder
        assert isinstance(stem, BlockGroup)
        assert {id(p) for p in stem.parameters()} >= {id(seq.starter)}
        assert dict(blocks)["neck"] is seq.enc.norm
        assert [b for n, b in blocks if n.startswith("layer_")] == list(seq.enc.layers)
    else:
        assert stem is backbone.module.trx_encoder
        assert [b for n, b in blocks if n.startswith("layer_")] == list(backbone.module.layers)
        assert all(isinstance(b.rnn, nn.GRU if name.startswith("gru") else nn.LSTM) for _, b in blocks[1:])
        assert all(b.rnn.num_layers == 1 for _, b in blocks[1:])
    assert backbone.out_dim == (16 if name.endswith("bidir") else 8)


def test_embedding_widths_default_and_override() -> None:
    backbone = _build("gru", embedding_dims={"mcc": 5})
    embeddings = backbone.module.trx_encoder.embeddings
    assert embeddings["mcc"].embedding_dim == 5
    assert embeddings["type_"].embedding_dim == default_embedding_dim(4) == round(1.6 * 4**0.56)
    assert embeddings["mcc"].num_embeddings == 12
    assert default_embedding_dim(10**6) == 32


def test_field_names_torch_refuses_as_module_keys_still_work() -> None:
    assert module_keys(["a.b", "type", "type_", "mcc"]) == {"a.b": "a_b_", "type": "type__", "type_": "type_",
                                                           "mcc": "mcc"}
    backbone = build_sequence_encoder(SequenceEncoderConfig(hidden_size=4), {"a.b": 5, "keys": 6}, ["float"])
    seq = {"a.b": torch.tensor([2, 3, 4]), "keys": torch.tensor([5, 2, 2]), "float": torch.tensor([0.5, 1.0, 2.0])}
    assert backbone.eval()(_batch([seq])).shape == (1, 4)


# ----- forward ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(ENCODERS))
def test_forward_shape_and_padding_changes_nothing(name: str) -> None:
    backbone = _build(name).eval()
    seqs = _sequences([3, 7, 1, 5])
    with torch.no_grad():
        out = backbone(_batch(seqs))
        padded_more = backbone(_batch(seqs, width=12))
        alone = torch.cat([backbone(_batch([s])) for s in seqs])
    assert out.shape == (4, backbone.out_dim)
    torch.testing.assert_close(padded_more, out, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(alone, out, rtol=1e-5, atol=1e-6)  # no row sees another row's padding


@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_bidirectional_features_are_both_final_states(kind: str) -> None:
    backbone = _build(f"{kind}_bidir", num_layers=1).eval()
    seqs = _sequences([2, 6])
    with torch.no_grad():
        out = backbone(_batch(seqs))
        for i, s in enumerate(seqs):  # the same RNN on the unpadded sequence: final states of both directions
            x = backbone.forward_prefix(_batch([s]), 1)["hidden"]  # the stem's output
            _, h = backbone.module.layers[0].rnn(x)
            h = h[0] if kind == "lstm" else h
            torch.testing.assert_close(out[i], torch.cat([h[0, 0], h[1, 0]]), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["gru_bidir", "transformer"])
def test_split_forward_matches_the_whole_forward(name: str) -> None:
    backbone = _build(name).eval()
    batch = _batch(_sequences([3, 7, 1]))
    with torch.no_grad():
        whole = backbone(batch)
        n = len(backbone.blocks())
        for k in range(1, n):
            assert backbone.can_split(k)
            state = backbone.forward_prefix(batch, k)
            torch.testing.assert_close(backbone.forward_suffix(state, k), whole, rtol=1e-5, atol=1e-6)
    assert not backbone.can_split(n) and not backbone.can_split(0)


def test_missing_field_and_wrong_input_are_data_errors() -> None:
    backbone = _build("gru")
    batch = _batch(_sequences([3]))
    del batch.payload["amount"]
    with pytest.raises(DataError, match=r"lacks the event field\(s\) 'amount'"):
        backbone(batch)
    with pytest.raises(DataError, match="takes a ptls PaddedBatch"):
        backbone(torch.zeros(2, 3))


# ----- errors of the spec -------------------------------------------------------------------------------
def test_spec_errors_say_what_and_how_to_fix() -> None:
    spec = SequenceEncoderConfig(encoder="transformer", hidden_size=10, n_heads=4)
    with pytest.raises(ConfigError, match=r"n_heads=4 does not divide hidden_size=10.*\[1, 2, 5, 10\]"):
        build_sequence_encoder(spec, CATEGORICAL, NUMERIC)
    with pytest.raises(ConfigError, match="bidirectional applies to gru / lstm"):
        build_sequence_encoder(SequenceEncoderConfig(encoder="transformer", hidden_size=8, n_heads=2,
                                                     bidirectional=True), CATEGORICAL, NUMERIC)
    with pytest.raises(ConfigError, match=r"embedding_dims names 'mc'.*Did you mean 'mcc'"):
        build_sequence_encoder(SequenceEncoderConfig(embedding_dims={"mc": 4}), CATEGORICAL, NUMERIC)
    with pytest.raises(DataError, match="at least one event field"):
        build_sequence_encoder(SequenceEncoderConfig(), {}, [])
    with pytest.raises(DataError, match="both categorical and numeric"):
        build_sequence_encoder(SequenceEncoderConfig(), {"amount": 5}, ["amount"])
    with pytest.raises(DataError, match="Vocabulary sizes must be whole numbers >= 2"):
        build_sequence_encoder(SequenceEncoderConfig(), {"mcc": 1}, [])


# ----- strategies through FinetuneModule ----------------------------------------------------------------
STRATEGIES = {
    "full": Strategy("full"),
    "linear_probe": Strategy("linear_probe"),
    "partial_range": Strategy("partial", freeze="0-1"),
    "partial_last": Strategy("partial", train_last=1),
    "gradual": Strategy("gradual", freeze_epochs=1),
    "gradual_every": Strategy("gradual", freeze_epochs=1, unfreeze_every=1),
    # torch's MultiheadAttention reads out_proj.weight itself, so only the feed-forward layers can take LoRA.
    "lora": Strategy("lora", lora=LoraSpec(r=2, alpha=4, dropout=0.0, target_modules=("linear1", "linear2"))),
}


def _loaders() -> DataLoader:
    g = torch.Generator().manual_seed(1)
    lengths = torch.randint(1, 9, (16,), generator=g).tolist()
    items = [(s, i % 2) for i, s in enumerate(_sequences(lengths, seed=2))]
    for s, y in items:
        s["mcc"][0] = 3 if y else 4  # learnable
    return DataLoader(items, batch_size=8, shuffle=False,
                      collate_fn=lambda b: (_batch([s for s, _ in b]), torch.tensor([y for _, y in b])))


class _Snapshots(pl.Callback):
    def __init__(self) -> None:
        self.states: list[dict[str, torch.Tensor]] = []
        self.modes: list[list[bool]] = []

    def _take(self, module: FinetuneModule) -> None:
        self.states.append({k: v.detach().clone() for k, v in module.named_parameters()})

    def on_train_start(self, trainer, pl_module) -> None:
        self._take(pl_module)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        # The model's modules' modes (a BlockGroup is a view made by blocks(): its own flags are not the model's).
        real = {id(m) for m in pl_module.modules()}
        self.modes.append([all(m.training for m in block.modules() if id(m) in real) for _, block in pl_module._blocks])

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._take(pl_module)


@pytest.mark.parametrize("encoder", ["gru", "transformer"])
@pytest.mark.parametrize("name", list(STRATEGIES))
def test_strategy_moves_trainable_and_keeps_frozen(name: str, encoder: str) -> None:
    strategy = STRATEGIES[name]
    if name == "lora" and encoder == "gru":
        with pytest.raises(LayerMapError, match="linear1"):
            FinetuneModule(_build(encoder), 2, strategy=strategy)
        return
    model = FinetuneModule(_build(encoder), 2, strategy=strategy, lr=5e-2, scheduler_type="none", dropout=0.0)
    owner = {id(p): i for i, (_, b) in enumerate(model._blocks) for p in b.parameters()}
    snaps = _Snapshots()
    loader = _loaders()
    quiet_trainer(2, [snaps], limit_train_batches=1, limit_val_batches=1).fit(model, loader, loader)
    n = len(model._blocks)
    params = dict(model.named_parameters())
    for epoch in range(2):
        trainable = strategy.trainable(epoch, n)
        assert snaps.modes[epoch] == [i in trainable for i in range(n)], (name, epoch)
        before, after = snaps.states[epoch], snaps.states[epoch + 1]
        for pname, value in after.items():
            moved = not torch.equal(value, before[pname])
            block = owner.get(id(params[pname]))
            if block is None:
                assert pname.startswith("head.") and moved, pname
                continue
            if name == "lora" and "lora_A" in pname:
                continue  # lora_A moves only once lora_B is non-zero (B starts at 0)
            should = block in trainable and (name != "lora" or "lora_B" in pname)
            assert moved == should, f"{name}/{encoder} epoch {epoch}: {pname} moved={moved}, expected {should}"


def test_rnn_lora_error_names_what_can_take_adapters() -> None:
    with pytest.raises(LayerMapError, match="no Linear layers"):
        FinetuneModule(_build("lstm"), 2, strategy=Strategy("lora"))


def test_lora_adapters_act_in_eval_mode() -> None:
    """torch's transformer inference fast path skips adapters around linear1/linear2; the backbone avoids it."""
    model = FinetuneModule(_build("transformer"), 2, strategy=STRATEGIES["lora"])
    plain = FinetuneModule(_build("transformer"), 2, strategy="full")
    for pname, p in model.backbone.named_parameters():
        if "lora_B" in pname:
            nn.init.normal_(p)
    batch = _batch(_sequences([3, 5]))
    model.eval()
    plain.eval()
    with torch.no_grad():
        assert not torch.allclose(model.backbone(batch), plain.backbone(batch), atol=1e-4)
        state = model.backbone.forward_prefix(batch, 1)
        torch.testing.assert_close(model.backbone.forward_suffix(state, 1), model.backbone(batch))
    assert torch.backends.mha.get_fastpath_enabled()  # the global switch is restored


def test_default_lora_targets_all_train_on_the_transformer() -> None:
    """MultiheadAttention is targeted as a whole: an adapter on its out_proj would never get a gradient."""
    model = FinetuneModule(_build("transformer"), 2, strategy=Strategy("lora", lora=LoraSpec(r=2, dropout=0.0)))
    model.train()
    logits = model(_batch(_sequences([3, 5])))
    logits.sum().backward()
    dead = [n for n, p in model.backbone.named_parameters() if "lora_A" in n and p.grad is None]
    for n, p in model.backbone.named_parameters():
        if "lora_B" in n:
            assert p.grad is not None and p.grad.abs().sum() > 0, f"{n} gets no gradient ({dead})"


# ----- the architecture record --------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["lstm_bidir", "transformer"])
def test_rebuild_from_the_record_gives_the_same_outputs(name: str) -> None:
    backbone = _build(name)
    backbone.train()
    backbone(_batch(_sequences([4, 6, 2])))  # move the numeric batch-norm statistics off their defaults
    record = json.loads(json.dumps(backbone.architecture()))  # the record survives JSON (pretrained.json)
    assert record["type"] == "SequenceEncoderBackbone"
    assert record["fields"] == {"categorical": {"mcc": 12, "type": 4}, "numeric": ["amount", "delta"]}
    assert record["sequence"]["embedding_dims"] == {"mcc": default_embedding_dim(12), "type": default_embedding_dim(4)}
    torch.manual_seed(123)  # other initial weights: only load_state_dict makes them equal
    rebuilt = rebuild_sequence_encoder(record)
    assert rebuilt.architecture() == backbone.architecture()
    assert rebuilt.describe()["blocks"] == backbone.describe()["blocks"]
    rebuilt.load_state_dict(copy.deepcopy(backbone.state_dict()))
    batch = _batch(_sequences([3, 7, 1], seed=5))
    backbone.eval()
    rebuilt.eval()
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(batch), backbone(batch), rtol=0, atol=0)


def test_field_order_does_not_change_the_module() -> None:
    a = build_sequence_encoder(SequenceEncoderConfig(hidden_size=4), {"type": 4, "mcc": 12}, ["amount", "delta"])
    b = build_sequence_encoder(SequenceEncoderConfig(hidden_size=4), {"mcc": 12, "type": 4}, ["delta", "amount"])
    assert a.architecture() == b.architecture()
    assert list(a.state_dict()) == list(b.state_dict())


def test_rebuild_refuses_a_broken_or_different_record() -> None:
    record = _build("gru").architecture()
    with pytest.raises(CheckpointError, match="not usable"):
        rebuild_sequence_encoder({k: v for k, v in record.items() if k != "fields"})
    other = {**record, "layout": {**record["layout"], "pooling": "mean"}}
    with pytest.raises(CheckpointError, match="layout"):
        rebuild_sequence_encoder(other)


def test_user_ptls_transformer_keeps_its_lora_adapters_in_eval_mode() -> None:
    from ptls.nn import TransformerSeqEncoder, TrxEncoder

    torch.manual_seed(0)
    encoder = TransformerSeqEncoder(trx_encoder=TrxEncoder(embeddings={"mcc": {"in": 12, "out": 8}}), n_heads=2,
                                    n_layers=1, dim_hidden=16)
    model = FinetuneModule(encoder, 2, strategy=STRATEGIES["lora"])
    batch = _batch([{"mcc": torch.tensor([2, 3, 4])}, {"mcc": torch.tensor([5])}])
    model.eval()
    with torch.no_grad():
        before = model.backbone(batch)
        for pname, p in model.backbone.named_parameters():
            if "lora_B" in pname:
                nn.init.normal_(p)
        assert not torch.allclose(model.backbone(batch), before, atol=1e-4)


def test_lora_on_a_recurrent_encoder_says_what_to_use_instead() -> None:
    from headstart.errors import LayerMapError

    with pytest.raises(LayerMapError, match=r"recurrent layers .* cannot take LoRA adapters: use strategy partial"):
        FinetuneModule(_build("gru"), 2, strategy=Strategy("lora", lora=LoraSpec(r=2)))
