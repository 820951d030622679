"""The layer map (detect_blocks, explicit block paths, check_layer_map) and the backbone adapters."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import TinyEncoder
from headstart import ConfigError, FinetuneModule, LayerMapError
from headstart.backbones import (
    BlockGroup,
    HFBackbone,
    PtlsBackbone,
    TorchBackbone,
    as_backbone,
    check_layer_map,
    detect_blocks,
    import_object,
)


def _param_ids(module: nn.Module) -> set[int]:
    return {id(p) for p in module.parameters()}


# ----- detect_blocks ------------------------------------------------------------------------------
def test_detect_blocks_tiny_encoder_stem_blocks_neck(tiny_encoder: TinyEncoder) -> None:
    blocks = detect_blocks(tiny_encoder)
    assert [n for n, _ in blocks] == ["stem", "blocks.0", "blocks.1", "blocks.2", "neck"]
    mods = dict(blocks)
    assert mods["stem"] is tiny_encoder.stem
    assert mods["neck"] is tiny_encoder.norm
    for i in range(3):
        assert mods[f"blocks.{i}"] is tiny_encoder.blocks[i]
    check_layer_map(tiny_encoder, blocks)


class _Head(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))
        self.norm = nn.LayerNorm(4)


class _LooseParams(nn.Module):
    """A loose parameter before the layer list, modules after it, one holding a loose parameter."""

    def __init__(self) -> None:
        super().__init__()
        self.cls = nn.Parameter(torch.zeros(4))
        self.embed = nn.Embedding(10, 4)
        self.layers = nn.ModuleList([nn.Linear(4, 4) for _ in range(3)])
        self.small = nn.ModuleList([nn.Linear(4, 1), nn.Linear(1, 4)])
        self.final = _Head()
        self.out_dim = 4


def test_detect_blocks_groups_loose_params_into_stem_and_neck() -> None:
    model = _LooseParams()
    blocks = detect_blocks(model)
    assert [n for n, _ in blocks] == ["stem", "layers.0", "layers.1", "layers.2", "neck"]
    stem, neck = dict(blocks)["stem"], dict(blocks)["neck"]
    assert isinstance(stem, BlockGroup)
    assert _param_ids(stem) == {id(model.cls), id(model.embed.weight)}
    assert isinstance(neck, BlockGroup) and list(neck.parts) == [model.small, model.final]
    assert _param_ids(neck) == _param_ids(model.small) | _param_ids(model.final)
    check_layer_map(model, blocks)


def test_detect_blocks_explicit_container() -> None:
    model = _LooseParams()
    blocks = detect_blocks(model, container="small")
    assert [n for n, _ in blocks] == ["stem", "small.0", "small.1", "neck"]
    check_layer_map(model, blocks)
    with pytest.raises(LayerMapError) as err:
        detect_blocks(model, container="layer")
    msg = str(err.value)
    assert "'layer' is not a module of _LooseParams" in msg
    assert "Did you mean" in msg and "'layers'" in msg and "'small'" in msg


class _MLPLayers(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(3, 8)
        self.layers = nn.Sequential(
            nn.Dropout(0.5), nn.Linear(8, 8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 8), nn.ReLU()
        )
        self.out_dim = 8

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(self.inp(x))


def test_detect_blocks_parameter_free_children_join_a_block() -> None:
    # Sequential(Linear, ReLU, ...) is common: the activations/dropouts must not become empty blocks
    # (check_layer_map refuses those) and must follow their block's train/eval mode.
    model = _MLPLayers()
    blocks = detect_blocks(model)
    assert [n for n, _ in blocks] == ["stem", "layers.1", "layers.4"]
    check_layer_map(model, blocks)
    first = dict(blocks)["layers.1"]
    assert isinstance(first, BlockGroup)
    assert list(first.parts) == [model.layers[0], model.layers[1], model.layers[2], model.layers[3]]
    # Frozen blocks run in eval mode, their dropouts included; the head still trains.
    module = FinetuneModule(_MLPLayers(), 2, freeze_encoder=True)
    module.train(True)
    assert all(not m.training for m in module.backbone.module.layers)
    assert module.head.training


def test_detect_blocks_root_sequential_and_plain_module() -> None:
    seq = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4))
    blocks = detect_blocks(seq)
    assert [n for n, _ in blocks] == ["0", "2"]
    check_layer_map(seq, blocks)
    gru = nn.GRU(4, 6)
    assert [(n, m) for n, m in detect_blocks(gru)] == [("body", gru)]


# ----- explicit block paths -----------------------------------------------------------------------
def test_explicit_block_paths(tiny_encoder: TinyEncoder) -> None:
    bb = TorchBackbone(tiny_encoder, blocks=["stem", "blocks", "norm"])
    assert bb.block_names() == ["stem", "blocks", "norm"]
    assert dict(bb.blocks())["blocks"] is tiny_encoder.blocks
    check_layer_map(bb, bb.blocks())


def test_bad_block_path_lists_valid_paths(tiny_encoder: TinyEncoder) -> None:
    bb = TorchBackbone(tiny_encoder, blocks=["stem", "blocks.5", "norm"])
    with pytest.raises(LayerMapError) as err:
        bb.blocks()
    msg = str(err.value)
    assert "'blocks.5'" in msg and "TinyEncoder does not have" in msg
    assert "Did you mean" in msg
    assert "Valid module paths include" in msg
    for valid in ("'stem'", "'blocks.0'", "'blocks.2.0'", "'norm'"):
        assert valid in msg


# ----- check_layer_map ----------------------------------------------------------------------------
def test_check_layer_map_param_in_no_block(tiny_encoder: TinyEncoder) -> None:
    with pytest.raises(LayerMapError) as err:
        check_layer_map(tiny_encoder, [("stem", tiny_encoder.stem), ("blocks", tiny_encoder.blocks)])
    msg = str(err.value)
    assert "2 parameter(s) of TinyEncoder are in no block" in msg
    assert "'norm.weight'" in msg and "'norm.bias'" in msg


def test_check_layer_map_param_in_two_blocks(tiny_encoder: TinyEncoder) -> None:
    blocks = [("stem", tiny_encoder.stem), ("body", tiny_encoder.blocks), ("again", tiny_encoder.blocks[1]),
              ("neck", tiny_encoder.norm)]
    with pytest.raises(LayerMapError) as err:
        check_layer_map(tiny_encoder, blocks)
    assert "belongs to two blocks, 'body' and 'again'" in str(err.value)


def test_check_layer_map_empty_block_and_empty_map(tiny_encoder: TinyEncoder) -> None:
    with pytest.raises(LayerMapError, match="Block 'act' of TinyEncoder has no parameters"):
        check_layer_map(tiny_encoder, [("all", tiny_encoder), ("act", nn.GELU())])
    with pytest.raises(LayerMapError, match="layer map of TinyEncoder is empty"):
        check_layer_map(tiny_encoder, [])


# ----- Hugging Face backbone ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def hf_backbone(tiny_hf_dir) -> HFBackbone:
    return HFBackbone(str(tiny_hf_dir), pooling="mean")


def test_hf_backbone_layer_map(hf_backbone: HFBackbone) -> None:
    assert hf_backbone.out_dim == 16
    blocks = hf_backbone.blocks()
    assert [n for n, _ in blocks] == ["embeddings", "encoder.layer.0", "encoder.layer.1"]
    assert dict(blocks)["embeddings"] is hf_backbone.model.embeddings
    check_layer_map(hf_backbone, blocks)
    assert hf_backbone.describe()["blocks"] == ["embeddings", "encoder.layer.0", "encoder.layer.1"]


@pytest.mark.parametrize("pooling", ["mean", "cls", "max"])
def test_hf_pooling_ignores_padding(hf_backbone: HFBackbone, pooling: str) -> None:
    tok = hf_backbone.load_tokenizer()
    short = tok(["a fine day"], return_tensors="pt")
    padded = tok(["a fine day", "a much longer sentence with many more words in it"], padding=True,
                 return_tensors="pt")
    n = short["input_ids"].shape[1]
    assert padded["input_ids"].shape[1] > n and int(padded["attention_mask"][0].sum()) == n
    hf_backbone.eval()
    hf_backbone.pooling = pooling
    try:
        with torch.no_grad():
            a = hf_backbone(dict(short))[0]
            b = hf_backbone(dict(padded))[0]
    finally:
        hf_backbone.pooling = "mean"
    assert a.shape == (16,)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_hf_bad_pooling_is_a_config_error(tiny_hf_dir) -> None:
    with pytest.raises(ConfigError, match="pooling 'sum' is not one of mean, cls, max"):
        HFBackbone(str(tiny_hf_dir), pooling="sum")


# ----- as_backbone --------------------------------------------------------------------------------
def test_as_backbone_picks_the_adapter(hf_backbone: HFBackbone, tiny_encoder: TinyEncoder) -> None:
    from ptls.nn import RnnSeqEncoder, TrxEncoder

    rnn = RnnSeqEncoder(trx_encoder=TrxEncoder(embeddings={"mcc": {"in": 20, "out": 7}},
                                               numeric_values={"amount": "identity"}), hidden_size=6, type="gru")
    ptls_bb = as_backbone(rnn)
    assert type(ptls_bb) is PtlsBackbone and ptls_bb.out_dim == 6
    hf_bb = as_backbone(hf_backbone.model)
    assert type(hf_bb) is HFBackbone and hf_bb.model is hf_backbone.model and hf_bb.out_dim == 16
    torch_bb = as_backbone(tiny_encoder)
    assert type(torch_bb) is TorchBackbone and torch_bb.out_dim == 8
    assert as_backbone(torch_bb) is torch_bb
    assert as_backbone(nn.Linear(3, 5), out_dim=5).out_dim == 5


# ----- TorchBackbone ------------------------------------------------------------------------------
def test_torch_backbone_out_dim_inference_error() -> None:
    with pytest.raises(ConfigError) as err:
        TorchBackbone(nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2)))
    msg = str(err.value)
    assert "Cannot tell the feature size of Sequential" in msg
    assert "out_dim" in msg and "embedding_size" in msg and "Pass out_dim explicitly" in msg


def test_torch_backbone_pools_sequence_outputs() -> None:
    torch.manual_seed(0)
    bb = TorchBackbone.from_import("torch.nn:GRU", {"input_size": 4, "hidden_size": 6, "batch_first": True})
    assert bb.out_dim == 6 and bb.block_names() == ["body"]
    out = bb(torch.randn(3, 5, 4))  # GRU returns (seq [3, 5, 6], h): first element, mean over time
    assert out.shape == (3, 6)


def test_from_import_errors() -> None:
    with pytest.raises(ConfigError, match=r"'collections:OrderedDict' is the class .* not a torch\.nn\.Module subclass"):
        TorchBackbone.from_import("collections:OrderedDict")  # refused before it is called
    with pytest.raises(ConfigError) as err:
        TorchBackbone.from_import("torch.nn:GRU", {"input_size": 4, "hidden_sise": 6})
    msg = str(err.value)
    assert "'torch.nn:GRU' could not be built with backbone.kwargs=" in msg and "hidden_sise" in msg
    with pytest.raises(ConfigError, match=r"has no attribute 'GRUU'\. Did you mean .*'GRU'"):
        import_object("torch.nn:GRUU")
    with pytest.raises(ConfigError, match=r"cannot import module 'no_such_pkg_xyz\.mod'"):
        import_object("no_such_pkg_xyz.mod:Thing")
    with pytest.raises(ConfigError, match=r"not an import path: expected 'package\.module:Name'"):
        import_object("GRU")
    assert import_object("torch.nn.GRU") is nn.GRU
