"""Losses: balanced weights match scikit-learn, focal loss reduces to cross-entropy at gamma=0."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.utils.class_weight import compute_class_weight

from conftest import TinyEncoder, quiet_trainer, tiny_loaders
from headstart import ConfigError, DataError, FinetuneModule
from headstart.losses import FocalLoss, build_loss, resolve_class_weights


def test_balanced_weights_match_sklearn() -> None:
    y = np.array([0, 0, 0, 1, 2, 2, 0, 1, 0])
    ours = resolve_class_weights("balanced", 3, y).numpy()
    ref = compute_class_weight("balanced", classes=np.arange(3), y=y)
    np.testing.assert_allclose(ours, ref, rtol=1e-6)


def test_class_weight_errors() -> None:
    with pytest.raises(DataError, match="no training rows"):
        resolve_class_weights("balanced", 3, np.array([0, 1, 1]))
    with pytest.raises(ConfigError, match="3 values but there are 2 classes"):
        resolve_class_weights([1.0, 2.0, 3.0], 2)
    with pytest.raises(ConfigError, match="'balanced'"):
        resolve_class_weights("balancd", 2, np.array([0, 1]))


def test_focal_gamma_zero_is_cross_entropy_and_down_weights_easy_examples() -> None:
    torch.manual_seed(0)
    logits, target = torch.randn(32, 4), torch.randint(0, 4, (32,))
    w = torch.tensor([1.0, 2.0, 0.5, 1.5])
    ce = F.cross_entropy(logits, target, weight=w, reduction="none").mean()
    assert FocalLoss(gamma=0.0, weight=w)(logits, target) == pytest.approx(float(ce), rel=1e-5)
    assert FocalLoss(gamma=2.0)(logits, target) < F.cross_entropy(logits, target)


def test_label_smoothing_matches_torch() -> None:
    torch.manual_seed(1)
    logits, target = torch.randn(16, 3), torch.randint(0, 3, (16,))
    loss = build_loss("ce", 3, label_smoothing=0.1)
    assert float(loss(logits, target)) == pytest.approx(float(F.cross_entropy(logits, target, label_smoothing=0.1)))


def test_balanced_weights_from_the_train_dataloader_in_the_python_api() -> None:
    train, val = tiny_loaders(n_train=64)
    model = FinetuneModule(TinyEncoder(), 2, class_weights="balanced", lr=1e-2)
    quiet_trainer(1).fit(model, train, val)
    labels = train.dataset.tensors[1].numpy()
    ref = compute_class_weight("balanced", classes=np.arange(2), y=labels)
    np.testing.assert_allclose(model.criterion.weight.numpy(), ref, rtol=1e-6)
