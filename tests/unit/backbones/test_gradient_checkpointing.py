"""``trainer.gradient_checkpointing``: the same loss, gradients and BatchNorm statistics as without it on every kind
of backbone (dropout on, seeded); only the blocks that train are recomputed, and the set follows gradual unfreezing;
the feature cache's suffix path; a whole ``run_fit``; backbones that do not declare support are refused."""

from __future__ import annotations

import copy
import random
from collections.abc import Callable
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from torch import nn

from conftest import TinyEncoder, quiet_trainer, tiny_loaders, tiny_run_config
from headstart import FinetuneModule, Strategy
from headstart.backbones import (
    Backbone,
    HFBackbone,
    PtlsBackbone,
    ResNetBackbone,
    SiameseBackbone,
    TorchBackbone,
    build_sequence_encoder,
)
from headstart.backbones.base import BlockGroup, checkpointed_modules
from headstart.config import SequenceEncoderConfig, load_config
from headstart.errors import ConfigError

Factory = Callable[[], nn.Module]


# ----- helpers ----------------------------------------------------------------------------------------
def _module(factory: Factory, checkpointing: bool, strategy: Strategy | None = None) -> FinetuneModule:
    torch.manual_seed(0)  # the same backbone and head weights with and without checkpointing
    return FinetuneModule(factory(), n_classes=2, head_hidden_dims=[8], dropout=0.1, strategy=strategy,
                          gradient_checkpointing=checkpointing)


def _is_wrapped(module: nn.Module) -> bool:
    return "forward" in module.__dict__


def _block_checkpointed(model: FinetuneModule, block: nn.Module) -> bool:
    """Whether a block is set to recompute: transformers' per-layer flag, else headstart's wrapper."""
    flags = [m.gradient_checkpointing for m in block.modules() if hasattr(type(m), "gradient_checkpointing")]
    if flags:
        return all(flags)
    return all(_is_wrapped(m) for m in checkpointed_modules(block))


def _count_calls(model: FinetuneModule) -> tuple[dict[str, int], list[Any]]:
    """Forward calls of each block's inner modules: a recomputed block runs them twice per step (the block's own
    forward hooks stay outside the checkpoint, so they are counted on the children)."""
    counts: dict[str, int] = {}
    handles = []
    for name, block in model._blocks:
        parts = block.parts if isinstance(block, BlockGroup) else [block]
        inner = [m for part in parts for m in part.modules() if m is not part] or []
        if not inner:
            continue
        counts[name] = 0

        def hook(module, args, output, name=name) -> None:
            counts[name] += 1

        handles += [m.register_forward_hook(hook) for m in inner]
    return counts, handles


def _step(model: FinetuneModule, inputs: Any, labels: torch.Tensor, features: Callable[..., torch.Tensor] | None = None
          ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, int]]:
    counts, handles = _count_calls(model)
    torch.manual_seed(1)  # the same dropout draws in both models
    random.seed(1)  # ptls' positional encoding draws its random start shift from Python's RNG (it is never wrapped)
    feats = (features or model.features)(inputs)
    loss = model._loss(model.head(feats), labels)
    loss.backward()
    for h in handles:
        h.remove()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    return loss.detach(), grads, buffers, counts


def _assert_same_step(factory: Factory, inputs: Any, labels: torch.Tensor, strategy: Strategy | None = None,
                      features: Callable[[FinetuneModule], Callable[..., torch.Tensor]] | None = None
                      ) -> tuple[FinetuneModule, dict[str, int], dict[str, int]]:
    """One training step with and without checkpointing: loss, every gradient and every buffer agree to 1e-5."""
    ref, ck = _module(factory, False, strategy), _module(factory, True, strategy)
    loss_a, grads_a, buf_a, calls_a = _step(ref, inputs, labels, features(ref) if features else None)
    loss_b, grads_b, buf_b, calls_b = _step(ck, inputs, labels, features(ck) if features else None)
    torch.testing.assert_close(loss_b, loss_a, rtol=1e-5, atol=1e-5)
    assert grads_a and grads_a.keys() == grads_b.keys()
    for name in grads_a:
        torch.testing.assert_close(grads_b[name], grads_a[name], rtol=1e-5, atol=1e-5, msg=name)
    assert buf_a.keys() == buf_b.keys()
    for name in buf_a:  # BatchNorm running statistics moved exactly once
        torch.testing.assert_close(buf_b[name], buf_a[name], rtol=1e-5, atol=1e-5, msg=name)
    return ck, calls_a, calls_b


def _assert_only_trainable_recomputed(ck: FinetuneModule, calls_plain: dict[str, int], calls_ck: dict[str, int]
                                      ) -> None:
    trainable = {ck.block_names[i] for i in ck.trainable_blocks}
    assert trainable, "the test needs a block that trains"
    for name, block in ck._blocks:
        assert _block_checkpointed(ck, block) == (name in trainable), name
        if name in calls_ck:
            if name in trainable:
                assert calls_ck[name] > calls_plain[name], f"{name} was not recomputed"
            else:
                assert calls_ck[name] == calls_plain[name], f"frozen {name} was recomputed"


# ----- Hugging Face (transformers' own per-layer switch) ---------------------------------------------------
def _text_batch() -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(1000, 2000, (4, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    mask[3, 4:] = 0
    return ({"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)},
            torch.tensor([0, 1, 1, 0]))


@pytest.mark.parametrize("strategy", [None, Strategy(name="partial", freeze="0-1")], ids=["full", "partial"])
def test_hf_same_loss_and_gradients_and_only_training_layers_checkpointed(tiny_hf_dir, strategy) -> None:
    inputs, labels = _text_batch()
    ck, calls_a, calls_b = _assert_same_step(lambda: HFBackbone(str(tiny_hf_dir)), inputs, labels, strategy)
    layers = ck.backbone.model.encoder.layer
    expected = [True, True] if strategy is None else [False, True]  # partial "0-1": embeddings and layer 0 frozen
    assert [layer.gradient_checkpointing for layer in layers] == expected
    assert all(not _is_wrapped(layer) for layer in layers)  # transformers' switch, not headstart's wrapper
    assert _is_wrapped(ck.backbone.model.embeddings) == (strategy is None)
    _assert_only_trainable_recomputed(ck, calls_a, calls_b)
    assert ck.hparams["gradient_checkpointing"] is True


def test_hf_cached_prefix_suffix_path_is_exact(tiny_hf_dir) -> None:
    """The feature cache feeds the trainable rest from stored hidden states (forward_suffix): same step."""
    inputs, labels = _text_batch()
    cut = 2  # embeddings and layer 0 frozen for the whole run, cached

    def features(model: FinetuneModule) -> Callable[..., torch.Tensor]:
        with torch.no_grad():
            state = model.backbone.forward_prefix(inputs, cut)
        return lambda _: model.features({"cached_hidden": state["hidden"], "attention_mask": state["attention_mask"],
                                         "cache_cut": torch.tensor(cut)})

    ck, calls_a, calls_b = _assert_same_step(lambda: HFBackbone(str(tiny_hf_dir)), inputs, labels,
                                             Strategy(name="partial", freeze="0-1"), features)
    assert ck.block_names == ["embeddings", "encoder.layer.0", "encoder.layer.1"]
    assert calls_b["encoder.layer.1"] > calls_a["encoder.layer.1"]
    # the prefix ran before the step, under no_grad: nothing of it runs (or is recomputed) in the step
    assert calls_b["embeddings"] == calls_a["embeddings"] == calls_b["encoder.layer.0"] == 0


def test_siamese_hf_delegates_to_the_encoder_switch(tiny_hf_dir) -> None:
    a, labels = _text_batch()
    b = {k: v.flip(0) for k, v in a.items()}
    ck, calls_a, calls_b = _assert_same_step(lambda: SiameseBackbone(HFBackbone(str(tiny_hf_dir))),
                                             {"a": a, "b": b}, labels)
    assert all(layer.gradient_checkpointing for layer in ck.backbone.encoder.model.encoder.layer)
    _assert_only_trainable_recomputed(ck, calls_a, calls_b)


# ----- plain-torch ResNet: BatchNorm running statistics -------------------------------------------------
def test_resnet_batchnorm_statistics_update_once_and_frozen_blocks_are_not_recomputed() -> None:
    g = torch.Generator().manual_seed(0)
    images, labels = torch.randn(6, 1, 8, 8, generator=g), torch.tensor([0, 1, 0, 1, 1, 0])
    strategy = Strategy(name="partial", freeze="0-1")  # stem and stage1.0 frozen (eval mode), stage2.0 trains
    ck, calls_a, calls_b = _assert_same_step(lambda: ResNetBackbone((1, 1), (4, 8)), images, labels, strategy)
    _assert_only_trainable_recomputed(ck, calls_a, calls_b)
    assert calls_b["stage2.0"] == 2 * calls_a["stage2.0"]
    # the statistics did move in this step (so "equal" above is a real check), exactly once
    bn = ck.backbone.stages[1][0].bn1
    assert int(bn.num_batches_tracked) == 1 and not torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean))


def test_resnet_full_fine_tuning_is_exact() -> None:
    g = torch.Generator().manual_seed(1)
    images, labels = torch.randn(6, 1, 8, 8, generator=g), torch.tensor([0, 1, 0, 1, 1, 0])
    ck, calls_a, calls_b = _assert_same_step(lambda: ResNetBackbone((2, 1), (4, 8), se=True), images, labels)
    _assert_only_trainable_recomputed(ck, calls_a, calls_b)


# ----- graph encoder (torch-geometric): dropout inside layers, BatchNorm ----------------------------------
def test_graph_encoder_same_step_with_dropout_and_batchnorm() -> None:
    from torch_geometric.data import Batch, Data

    from headstart.backbones.graph import GraphEncoder

    g = torch.Generator().manual_seed(0)
    graphs = []
    for n in (5, 3, 6, 4):
        x = torch.stack([torch.randint(0, s, (n,), generator=g) for s in (7, 3)], dim=1)
        src = torch.arange(1, n)
        dst = torch.stack([torch.randint(0, int(i), (1,), generator=g) for i in src]).view(-1)
        edge_index = torch.stack([torch.cat([src, dst]), torch.cat([dst, src])])
        attr = torch.randint(0, 4, (n - 1, 1), generator=g)
        graphs.append(Data(x=x, edge_index=edge_index, edge_attr=torch.cat([attr, attr]), num_nodes=n))
    batch = Batch.from_data_list(graphs)
    strategy = Strategy(name="partial", freeze="0")
    ck, calls_a, calls_b = _assert_same_step(
        lambda: GraphEncoder((7, 3), (4,), hidden_size=8, num_layers=3, dropout=0.3, norm="batch"), batch,
        torch.tensor([0, 1, 1, 0]), strategy)
    _assert_only_trainable_recomputed(ck, calls_a, calls_b)


# ----- ptls sequence encoders: built from backbone.sequence, and a user's ptls module ------------------------
def _padded_batch(seed: int = 0) -> Any:
    from ptls.data_load.padded_batch import PaddedBatch

    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([3, 7, 1, 5])
    payload = {"mcc": torch.randint(2, 12, (4, 7), generator=g), "amount": torch.randn(4, 7, generator=g)}
    for key in payload:
        for i, n in enumerate(lengths):
            payload[key][i, n:] = 0
    return PaddedBatch(payload, lengths)


@pytest.mark.parametrize("encoder", ["transformer", "gru"])
def test_ptls_built_sequence_encoder_same_step(encoder: str) -> None:
    pytest.importorskip("ptls.nn")
    spec = SequenceEncoderConfig(encoder=encoder, hidden_size=8, num_layers=2, dropout=0.2,
                                 **({"n_heads": 2} if encoder == "transformer" else {}))
    ck, calls_a, calls_b = _assert_same_step(lambda: build_sequence_encoder(spec, {"mcc": 12}, ["amount"]),
                                             _padded_batch(), torch.tensor([0, 1, 1, 0]))
    _assert_only_trainable_recomputed(ck, calls_a, calls_b)


def test_ptls_user_transformer_seq_encoder_same_step() -> None:
    pytest.importorskip("ptls.nn")
    from ptls.nn import TransformerSeqEncoder, TrxEncoder

    def encoder() -> nn.Module:
        trx = TrxEncoder(embeddings={"mcc": {"in": 12, "out": 4}}, numeric_values={"amount": "identity"},
                         use_batch_norm=True, linear_projection_size=8)
        return TransformerSeqEncoder(trx_encoder=trx, n_heads=2, dim_hidden=16, dropout=0.2, n_layers=2)

    ck, calls_a, calls_b = _assert_same_step(lambda: PtlsBackbone(encoder()), _padded_batch(1),
                                             torch.tensor([1, 0, 1, 0]), Strategy(name="partial", freeze="0"))
    assert isinstance(ck.backbone, PtlsBackbone)
    _assert_only_trainable_recomputed(ck, calls_a, calls_b)


# ----- Uni-Mol: pair bias passed between layers ------------------------------------------------------------
def test_unimol_same_step(tmp_path) -> None:
    pytest.importorskip("unimol_tools")
    import numpy as np
    from unimol_weights import write_random_unimol

    from headstart.backbones.unimol import UniMolEncoder
    from headstart.data.conformers import UniMolDataset, collate_unimol

    weights, _ = write_random_unimol(tmp_path / "unimol")
    base = UniMolEncoder(weights)
    ds = UniMolDataset(["CCO", "c1ccccc1", "CC(=O)O"], np.array([0, 1, 0]), dictionary=base.dictionary,
                       cache_dir=tmp_path / "conformers")
    inputs, labels = collate_unimol([ds[i] for i in range(len(ds))], ds.pad_idx)
    ck, calls_a, calls_b = _assert_same_step(lambda: copy.deepcopy(base), inputs, labels,
                                             Strategy(name="partial", train_last=3))
    assert ck.block_names[-3:] == ["layers.13", "layers.14", "neck"]
    _assert_only_trainable_recomputed(ck, calls_a, calls_b)


# ----- any nn.Module (TorchBackbone): gradual unfreezing re-applies the set ------------------------------
def test_gradual_unfreezing_checkpoints_the_blocks_of_each_epoch() -> None:
    seen: list[tuple[list[int], list[str]]] = []

    class Record(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            if batch_idx == 0:
                wrapped = [name for name, block in pl_module._blocks if _block_checkpointed(pl_module, block)]
                seen.append((sorted(pl_module.trainable_blocks), wrapped))

    torch.manual_seed(0)
    model = FinetuneModule(TinyEncoder(), n_classes=2, lr=1e-2, strategy=Strategy(name="gradual", freeze_epochs=1),
                           gradient_checkpointing=True)
    train, val = tiny_loaders()
    quiet_trainer(2, callbacks=[Record()]).fit(model, train, val)
    assert seen[0] == ([], [])  # epoch 1: head only, nothing to recompute
    assert seen[1] == ([0, 1, 2, 3, 4], model.block_names)  # epoch 2: every block trains and is checkpointed
    with torch.no_grad():  # evaluation never recomputes (the wrapper calls the forward directly without autograd)
        model.eval()
        assert model(torch.randn(3, 6)).shape == (3, 2)


def test_tiny_encoder_same_step_with_dropout() -> None:
    x, labels = torch.randn(8, 6), torch.tensor([0, 1] * 4)
    ck, calls_a, calls_b = _assert_same_step(TinyEncoder, x, labels)
    _assert_only_trainable_recomputed(ck, calls_a, calls_b)
    # switching a block off restores its module as it was
    ck.backbone.set_gradient_checkpointing(set())
    assert not any(_is_wrapped(m) for m in ck.backbone.modules())


# ----- support and errors --------------------------------------------------------------------------------
class _OwnAdapter(Backbone):
    """A user adapter that has not declared checkpointing support."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(4, 4)
        self.out_dim = 4

    def blocks(self) -> list[tuple[str, nn.Module]]:
        return [("body", self.body)]

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.body(inputs)


def test_an_adapter_without_declared_support_is_refused_with_the_supported_list() -> None:
    with pytest.raises(ConfigError, match=r"trainer.gradient_checkpointing is not supported by the backbone "
                                          r"_OwnAdapter.*Supported: hf .*resnet, graph, unimol, ptls.*torch.*"
                                          r"Set trainer.gradient_checkpointing: false"):
        FinetuneModule(_OwnAdapter(), n_classes=2, gradient_checkpointing=True)
    FinetuneModule(_OwnAdapter(), n_classes=2)  # without checkpointing it is fine
    with pytest.raises(ConfigError, match="not supported by the backbone SiameseBackbone"):
        FinetuneModule(SiameseBackbone(_OwnAdapter()), n_classes=2, gradient_checkpointing=True)


def test_block_indices_out_of_range_are_refused() -> None:
    from headstart.errors import LayerMapError

    backbone = TorchBackbone(TinyEncoder())
    with pytest.raises(LayerMapError, match=r"Cannot checkpoint block\(s\) \[7\] of TorchBackbone: it has 5 blocks"):
        backbone.set_gradient_checkpointing({7})


# ----- a whole run ---------------------------------------------------------------------------------------
def test_run_fit_with_gradient_checkpointing_gives_the_same_run(tiny_hf_dir, tmp_path) -> None:
    from headstart.experiments.fit import run_fit

    summaries = {}
    for on in (False, True):
        raw = tiny_run_config(tmp_path / str(on), tiny_hf_dir, trainer={"gradient_checkpointing": on, "epochs": 1},
                              strategy={"name": "partial", "freeze": "0"})
        result = run_fit(load_config(None, raw=raw), verbose=False)
        summaries[on] = result.summary
    assert summaries[True]["cache"]["used"] and summaries[True]["cache"]["cut"] == 1  # the cached-prefix path
    assert summaries[True]["val"]["loss"] == pytest.approx(summaries[False]["val"]["loss"], abs=1e-5)
    assert summaries[True]["roundtrip_max_abs_diff"] == 0.0
