"""Plain-torch ResNet: shapes for any input size, a complete layer map, frozen blocks that really stay
frozen (BatchNorm statistics included); Siamese pairs: fusion shapes and symmetry."""

from __future__ import annotations

import pytest
import torch

from headstart import FinetuneModule, Strategy
from headstart.backbones import check_layer_map
from headstart.backbones.resnet import ResNetBackbone
from headstart.backbones.siamese import FUSION_OPS, PairFusion, SiameseBackbone
from headstart.errors import ConfigError


@pytest.mark.parametrize(("shape", "channels"), [((28, 28), 1), ((32, 64), 3), ((5, 7), 1)])
def test_any_input_size_and_channel_count(shape: tuple[int, int], channels: int) -> None:
    net = ResNetBackbone((1, 2), (8, 12), in_channels=channels, se=True)
    assert net(torch.randn(3, channels, *shape)).shape == (3, 12)
    check_layer_map(net, net.blocks())
    assert net.block_names() == ["stem", "stage1.0", "stage2.0", "stage2.1"]


def test_presets_and_errors() -> None:
    assert ResNetBackbone.from_preset("resnet8").out_dim == 64
    with pytest.raises(ConfigError) as err:
        ResNetBackbone.from_preset("resnet9")
    assert "did you mean" in str(err.value).lower() and "resnet8" in str(err.value)
    with pytest.raises(ConfigError, match="same length"):
        ResNetBackbone((1, 1), (8,))
    with pytest.raises(ValueError, match=r"expects images \[batch, 1, height, width\], got shape \(2, 3, 8, 8\)"):
        ResNetBackbone((1,), (4,), in_channels=1)(torch.randn(2, 3, 8, 8))


def test_partial_freeze_keeps_frozen_blocks_and_their_bn_statistics() -> None:
    torch.manual_seed(0)
    net = ResNetBackbone((1, 1), (8, 8), in_channels=1)
    model = FinetuneModule(net, 3, strategy=Strategy("partial", train_last=1), lr=1e-2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model.train()
    for _ in range(3):
        x, y = torch.randn(8, 1, 12, 12), torch.randint(0, 3, (8,))
        torch.nn.functional.cross_entropy(model({"pixel_values": x}), y).backward()
        opt.step()
        opt.zero_grad()
    after = model.state_dict()
    frozen = [k for k in before if k.startswith(("backbone.stem.", "backbone.stages.0."))]
    trained = [k for k in before if k.startswith("backbone.stages.1.") and k.endswith("weight")]
    assert any("running_mean" in k for k in frozen)
    assert all(torch.equal(before[k], after[k]) for k in frozen)  # weights and BN running stats
    assert all(not torch.equal(before[k], after[k]) for k in trained)


@pytest.mark.parametrize(("ops", "dim"), [(["concat"], 8), (["diff", "absdiff"], 8), (["product", "cosine", "l2"], 6),
                                          (list(FUSION_OPS), 11)])
def test_fusion_shapes(ops: list[str], dim: int) -> None:
    fusion = PairFusion(dim, ops)
    width = {"concat": 2 * dim, "diff": dim, "absdiff": dim, "product": dim, "cosine": 1, "l2": 1}
    assert fusion.out_dim == sum(width[o] for o in ops)
    assert fusion(torch.randn(4, dim), torch.randn(4, dim)).shape == (4, fusion.out_dim)


def test_symmetric_ops_are_symmetric_and_ordered_ones_are_not() -> None:
    a, b = torch.randn(5, 6), torch.randn(5, 6)
    for op in ("absdiff", "product", "cosine", "l2"):
        f = PairFusion(6, [op])
        torch.testing.assert_close(f(a, b), f(b, a))
    for op in ("concat", "diff"):
        f = PairFusion(6, [op])
        assert not torch.allclose(f(a, b), f(b, a))
    torch.testing.assert_close(PairFusion(6, ["l2"])(a, b).squeeze(1), (a - b).norm(dim=1))
    torch.testing.assert_close(PairFusion(6, ["cosine"])(a, a).squeeze(1), torch.ones(5))


def test_fusion_errors() -> None:
    with pytest.raises(ConfigError, match="Did you mean 'product'"):
        PairFusion(4, ["prodcut"])
    with pytest.raises(ConfigError, match="twice"):
        PairFusion(4, ["l2", "l2"])


def test_siamese_shares_the_encoder_and_its_layer_map() -> None:
    torch.manual_seed(0)
    enc = ResNetBackbone((1,), (6,), in_channels=1)
    pair = SiameseBackbone(enc, ["absdiff", "cosine"]).eval()
    assert pair.out_dim == 7 and pair.block_names() == enc.block_names()
    check_layer_map(pair, pair.blocks())
    a, b = torch.randn(3, 1, 10, 10), torch.randn(3, 1, 10, 10)
    out = pair({"a": a, "b": b})
    with torch.no_grad():
        ea, eb = enc(a), enc(b)
    torch.testing.assert_close(out, torch.cat([(ea - eb).abs(), torch.cosine_similarity(ea, eb).unsqueeze(1)], 1))
    torch.testing.assert_close(out, pair({"a": b, "b": a}))  # symmetric fusion -> symmetric model
    with pytest.raises(ValueError, match=r"takes \{'a': \.\.\., 'b': \.\.\.\} inputs"):
        pair(a)
