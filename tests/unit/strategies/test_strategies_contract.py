"""Every strategy x backbone: frozen parameters stay bitwise equal, trainable ones move (DESIGN rules 1, 6)."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from conftest import TinyEncoder, quiet_trainer, tiny_loaders
from headstart import FinetuneModule, LayerMapError, LoraSpec, Strategy
from headstart.backbones import HFBackbone
from headstart.config import StrategyConfig
from headstart.errors import ConfigError
from headstart.strategies import parse_block_range, parse_strategy_spec

STRATEGIES = {
    "full": Strategy("full"),
    "linear_probe": Strategy("linear_probe"),
    "partial_range": Strategy("partial", freeze="0-1"),
    "partial_last": Strategy("partial", train_last=1),
    "gradual": Strategy("gradual", freeze_epochs=1),
    "gradual_every": Strategy("gradual", freeze_epochs=1, unfreeze_every=1),
    "lora": Strategy("lora", lora=LoraSpec(r=2, alpha=4, dropout=0.0)),
}


class Snapshots(pl.Callback):
    """Parameter copies at the start and after every epoch, plus each block's mode during training."""

    def __init__(self) -> None:
        self.after: list[dict[str, torch.Tensor]] = []
        self.start: dict[str, torch.Tensor] = {}
        self.modes: list[list[bool]] = []

    def on_train_start(self, trainer, pl_module) -> None:
        self.start = {k: v.detach().clone() for k, v in pl_module.named_parameters()}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == 0:
            self.modes.append([block.training for _, block in pl_module._blocks])

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.after.append({k: v.detach().clone() for k, v in pl_module.named_parameters()})


def _block_of(model: FinetuneModule, name: str) -> int | None:
    for i, (_, block) in enumerate(model._blocks):
        ids = {id(p) for p in block.parameters()}
        if id(dict(model.named_parameters())[name]) in ids:
            return i
    return None


def _text_loaders(model_dir) -> tuple[DataLoader, DataLoader]:
    import pandas as pd
    from transformers import AutoTokenizer

    from headstart.data import TextClassificationDataset, TextCollator

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    texts = [f"item {i} was {'great' if i % 2 else 'awful'}" for i in range(32)]
    frame = pd.DataFrame({"text": texts, "label": [i % 2 for i in range(32)], "row": range(32)})
    ds = TextClassificationDataset(frame, tok, 16)
    coll = TextCollator(tok.pad_token_id)
    return DataLoader(ds, batch_size=8, shuffle=True, collate_fn=coll), DataLoader(ds, batch_size=16, collate_fn=coll)


def _backbone(kind: str, tiny_hf_dir):
    torch.manual_seed(0)
    if kind == "torch":
        return TinyEncoder(), tiny_loaders(n_train=32, batch_size=8)
    return HFBackbone(str(tiny_hf_dir)), _text_loaders(tiny_hf_dir)


@pytest.mark.parametrize("kind", ["torch", "hf"])
@pytest.mark.parametrize("name", list(STRATEGIES))
def test_frozen_stay_equal_trainable_move(name: str, kind: str, tiny_hf_dir) -> None:
    strategy = STRATEGIES[name]
    encoder, (train, val) = _backbone(kind, tiny_hf_dir)
    model = FinetuneModule(encoder, 2, strategy=strategy, lr=5e-2, encoder_lr_ratio=1.0, scheduler_type="none",
                           dropout=0.0)
    snaps = Snapshots()
    epochs = 2
    quiet_trainer(epochs, [snaps]).fit(model, train, val)
    n = len(model._blocks)
    for epoch in range(epochs):
        before = snaps.start if epoch == 0 else snaps.after[epoch - 1]
        after = snaps.after[epoch]
        trainable = strategy.trainable(epoch, n)
        # Modes: trainable blocks in train mode, the others in eval mode.
        assert snaps.modes[epoch] == [i in trainable for i in range(n)], (name, epoch)
        for pname, value in after.items():
            block = _block_of(model, pname)
            moved = not torch.equal(value, before[pname])
            if block is None:  # head
                assert moved or not pname.startswith("head."), pname
                continue
            should_move = block in trainable and (strategy.name != "lora" or "lora_B" in pname)
            if strategy.name == "lora" and "lora_A" in pname:
                continue  # lora_A moves only once lora_B is non-zero (B starts at 0)
            if should_move:
                assert moved, f"{name}/{kind}: trainable {pname} did not move in epoch {epoch}"
            else:
                assert not moved, f"{name}/{kind}: frozen {pname} changed in epoch {epoch}"


def test_gradual_unfreezes_top_block_first() -> None:
    s = Strategy("gradual", freeze_epochs=2, unfreeze_every=2)
    assert [sorted(s.trainable(e, 4)) for e in range(8)] == [
        [], [], [3], [3], [2, 3], [2, 3], [1, 2, 3], [1, 2, 3]
    ]
    assert sorted(Strategy("gradual", freeze_epochs=1).trainable(1, 4)) == [0, 1, 2, 3]


def test_partial_and_probe_sets() -> None:
    assert Strategy("partial", freeze="0-2").static_frozen(6) == {0, 1, 2}
    assert Strategy("partial", train_last=2).static_frozen(6) == {0, 1, 2, 3}
    assert Strategy("linear_probe").static_frozen(3) == {0, 1, 2}
    assert Strategy("full").trainable(0, 3) == {0, 1, 2}
    assert parse_block_range("0-1,4", 6) == {0, 1, 4}


def test_block_range_out_of_bounds_lists_valid_blocks() -> None:
    with pytest.raises(LayerMapError) as err:
        Strategy("partial", freeze="0-7").static_frozen(3, ["embeddings", "encoder.layer.0", "encoder.layer.1"])
    msg = str(err.value)
    assert "0-7" in msg and "3 blocks" in msg and "0=embeddings" in msg and "2=encoder.layer.1" in msg


def test_strategy_spec_parsing() -> None:
    assert parse_strategy_spec("partial:2") == {"name": "partial", "train_last": 2}
    assert parse_strategy_spec("partial:0-3") == {"name": "partial", "freeze": "0-3"}
    assert parse_strategy_spec("gradual:2:1") == {"name": "gradual", "freeze_epochs": 2, "unfreeze_every": 1}
    assert parse_strategy_spec("linear-probe") == {"name": "linear_probe"}


def test_bare_gradual_is_ulmfit_and_explicit_fields_win() -> None:
    bare = StrategyConfig(**parse_strategy_spec("gradual"))
    assert (bare.freeze_epochs, bare.unfreeze_every) == (1, 1)  # one head-only epoch, then a block per epoch
    s = Strategy("gradual", freeze_epochs=bare.freeze_epochs, unfreeze_every=bare.unfreeze_every)
    assert [sorted(s.trainable(e, 3)) for e in range(4)] == [[], [2], [1, 2], [0, 1, 2]]
    two = StrategyConfig(**parse_strategy_spec("gradual:2"))
    assert (two.freeze_epochs, two.unfreeze_every) == (2, None)  # all blocks at once after 2 epochs
    assert StrategyConfig(name="full").freeze_epochs == 0
    with pytest.raises(ConfigError, match=r"'gradual' needs strategy\.freeze_epochs >= 1 \(got 0\)"):
        Strategy("gradual", freeze_epochs=0)
    with pytest.raises(ValueError, match=r"'gradual' needs strategy\.freeze_epochs >= 1 \(got 0\)"):
        StrategyConfig(name="gradual", freeze_epochs=0)  # the config refuses it at load time too


def test_static_frozen_blocks_have_no_grad_and_no_group_while_gradual_keeps_every_group() -> None:
    model = FinetuneModule(TinyEncoder(), 2, strategy=Strategy("partial", train_last=1))
    frozen = [p.requires_grad for i, (_, b) in enumerate(model._blocks) for p in b.parameters() if i < 4]
    assert not any(frozen)
    partial, _ = model.build_schedule(10, 5)
    full, _ = FinetuneModule(TinyEncoder(), 2, strategy=Strategy("full")).build_schedule(10, 5)
    names = [g["name"] for g in full]
    # Frozen for the whole run: out of the optimizer. Frozen for now (gradual): a group with LR 0, so the
    # group list never changes during a run.
    assert [g["name"] for g in partial] == [n for n in names if n.startswith(("4:", "head"))]
    gradual, _ = FinetuneModule(TinyEncoder(), 2, strategy=Strategy("gradual", freeze_epochs=1,
                                                                       unfreeze_every=1)).build_schedule(10, 5)
    assert [g["name"] for g in gradual] == names
    in_optimizer = {id(p) for g in partial for p in g["params"]}
    assert all(id(p) not in in_optimizer for i, (_, b) in enumerate(model._blocks) if i < 4 for p in b.parameters())
