"""One real optimizer step with ``optimizer_type`` adam / adamw: the schedule's LRs are in the param groups
(DESIGN rule 2), frozen parameters stay put, and weight decay is L2 for Adam, decoupled for AdamW."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch

from conftest import TinyEncoder, quiet_trainer, tiny_loaders
from headstart import FinetuneModule, Strategy

LR, RATIO, DECAY, WD, WARMUP = 1e-2, 0.5, 0.8, 0.5, 2
BETAS, EPS = (0.9, 0.999), 1e-8


class FirstStep(pl.Callback):
    """Parameters and gradients just before the first optimizer step; parameters and groups just after."""

    def __init__(self) -> None:
        self.before: dict[str, torch.Tensor] = {}
        self.grads: dict[str, torch.Tensor | None] = {}
        self.after: dict[str, torch.Tensor] = {}
        self.groups: list[dict] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if trainer.global_step == 0:
            for name, p in pl_module.named_parameters():
                self.before[name] = p.detach().clone()
                self.grads[name] = None if p.grad is None else p.grad.detach().clone()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == 1:
            self.after = {name: p.detach().clone() for name, p in pl_module.named_parameters()}
            self.groups = [{k: v for k, v in g.items() if k != "params"} | {"ids": {id(p) for p in g["params"]}}
                           for g in trainer.optimizers[0].param_groups]


def first_step_reference(p: torch.Tensor, g: torch.Tensor, lr: float, wd: float, kind: str) -> torch.Tensor:
    """Adam's first update, written out: m_hat = g, sqrt(v_hat) = |g|. Adam adds ``wd * p`` to the gradient
    (L2, rescaled by the adaptive denominator); AdamW shrinks ``p`` by ``lr * wd`` beside the update."""
    if kind == "adam":
        g = g + wd * p
        return p - lr * g / (g.abs() + EPS)
    return p * (1 - lr * wd) - lr * g / (g.abs() + EPS)


def reference_lr(block: int, n_blocks: int, is_head: bool, trainable: bool) -> float:
    """DESIGN rule 2 at optimizer step 0 of a warmup of WARMUP steps."""
    base = LR if is_head else LR * RATIO * DECAY ** (n_blocks - 1 - block)
    return base * (1 / WARMUP) * (1.0 if is_head or trainable else 0.0)


@pytest.mark.parametrize("kind", ["adam", "adamw"])
@pytest.mark.parametrize("strategy", [Strategy("partial", freeze="0-1"), Strategy("gradual", freeze_epochs=1)],
                         ids=["partial", "gradual"])
def test_one_step(kind: str, strategy: Strategy) -> None:
    torch.manual_seed(0)
    model = FinetuneModule(TinyEncoder(), 2, strategy=strategy, optimizer_type=kind, lr=LR, encoder_lr_ratio=RATIO,
                           layer_decay=DECAY, weight_decay=WD, scheduler_type="cosine", warmup_steps=WARMUP,
                           head_hidden_dims=[4], dropout=0.0)
    train, val = tiny_loaders(n_train=64, batch_size=16)
    rec = FirstStep()
    trainer = quiet_trainer(1, [rec], limit_train_batches=2)
    trainer.fit(model, train, val)
    optimizer = trainer.optimizers[0]
    assert type(optimizer) is (torch.optim.Adam if kind == "adam" else torch.optim.AdamW)

    n = len(model.block_names)
    trainable_blocks = strategy.trainable(0, n)
    names = {id(p): name for name, p in model.named_parameters()}
    in_groups: dict[str, dict] = {}
    for group in rec.groups:
        want_lr = reference_lr(group["block"], n, group["is_head"], group["block"] in trainable_blocks)
        assert group["lr"] == pytest.approx(want_lr, rel=1e-12, abs=0.0), group["name"]
        assert group["weight_decay"] == (0.0 if group["name"].endswith("/no_decay") else WD), group["name"]
        in_groups.update({names[i]: group for i in group["ids"]})

    changed = {name for name in rec.before if not torch.equal(rec.before[name], rec.after[name])}
    moving = {name for name, g in in_groups.items() if g["lr"] > 0 and rec.grads[name] is not None}
    assert changed == moving, "exactly the parameters of groups with LR > 0 move"
    assert any(name.startswith("head.") for name in moving)
    assert any(name.startswith("backbone.") for name in moving) == (strategy.name == "partial")
    for name in set(rec.before) - moving:  # static-frozen (no group) and frozen-for-now (LR 0) parameters
        assert torch.equal(rec.before[name], rec.after[name]), name

    decayed = 0
    for name in moving:
        group = in_groups[name]
        p, g = rec.before[name], rec.grads[name]
        want = first_step_reference(p, g, group["lr"], group["weight_decay"], kind)
        torch.testing.assert_close(rec.after[name], want, rtol=1e-5, atol=1e-6, msg=name)
        if group["weight_decay"] > 0:  # the decay term is visible: the other rule, or none, would not match
            other = first_step_reference(p, g, group["lr"], group["weight_decay"], "adamw" if kind == "adam" else "adam")
            none = first_step_reference(p, g, group["lr"], 0.0, kind)
            assert not torch.allclose(rec.after[name], other, rtol=1e-5, atol=1e-6), name
            assert not torch.allclose(rec.after[name], none, rtol=1e-5, atol=1e-6), name
            decayed += 1
    assert decayed > 0


def test_unknown_optimizer_lists_the_choices() -> None:
    from headstart.errors import ConfigError
    from headstart.optim import build_optimizer

    with pytest.raises(ConfigError, match=r"'adma' is unknown.*adam"):
        build_optimizer([{"params": [torch.nn.Parameter(torch.zeros(2))]}], "adma")
