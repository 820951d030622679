"""Regression targets are learnt standardised and decoded back; missing targets add nothing to the loss."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from headstart.data.labels import LabelMap
from headstart.data.targets import RegressionTargets, TaskTargets, read_label_map, target_values
from headstart.errors import DataError
from headstart.losses import MaskedBCE, MaskedRegressionLoss
from headstart.train.module import FinetuneModule
from headstart.train.targets import RegressionTarget, make_target


def test_standardisation_round_trip_and_saved_map(tmp_path) -> None:
    y = np.array([[-3.0, 10.0], [-1.0, np.nan], [1.0, 30.0], [5.0, 20.0]], dtype=np.float32)
    targets = RegressionTargets.from_values(["logS", "mp"], y)
    assert targets.mean == pytest.approx([0.5, 20.0])
    assert targets.std == pytest.approx([np.std([-3, -1, 1, 5]), np.std([10, 30, 20])])
    target = make_target(targets.spec(), 2)
    assert isinstance(target, RegressionTarget)
    z = target.prepare(torch.tensor(y))
    assert torch.nanmean(z, dim=0).abs().max() < 1e-6
    assert torch.allclose(target.decode(z)[~torch.isnan(z)], torch.tensor(y)[~torch.isnan(z)], atol=1e-5)
    targets.to_json(tmp_path / "labels.json")
    again = read_label_map(tmp_path / "labels.json")
    assert again == targets and again.kind == "regression"
    off = RegressionTargets.from_values(["logS"], y[:, :1], standardize=False)
    assert off.spec()["mean"] == [0.0] and off.spec()["std"] == [1.0]


def test_label_maps_read_back_by_kind(tmp_path) -> None:
    TaskTargets(["FDA_APPROVED", "CT_TOX"]).to_json(tmp_path / "tasks.json")
    LabelMap([0, 1]).to_json(tmp_path / "classes.json")
    assert read_label_map(tmp_path / "tasks.json").classes == ["FDA_APPROVED", "CT_TOX"]
    assert isinstance(read_label_map(tmp_path / "classes.json"), LabelMap)
    (tmp_path / "bad.json").write_text(json.dumps({"kind": "regression", "targets": ["a"]}))
    with pytest.raises(DataError, match="incomplete"):
        read_label_map(tmp_path / "bad.json")


def test_target_values_reject_text_and_non_binary_tasks() -> None:
    frame = pd.DataFrame({"a": ["1.5", "", "x"], "b": [0, 1, 2]})
    with pytest.raises(DataError, match=r"column 'a' has 1 value.*row 3: 'x'"):
        target_values(frame, ["a"], "data.train")
    assert np.isnan(target_values(frame.iloc[:2], ["a"], "data.train")[1, 0])
    with pytest.raises(DataError, match="not 0 or 1"):
        target_values(frame, ["b"], "data.train", binary=True)
    with pytest.raises(DataError, match="single class"):
        TaskTargets.from_values(["b"], np.array([[1.0], [1.0], [np.nan]]))


def test_masked_losses_ignore_missing_targets() -> None:
    pred = torch.tensor([[0.5, 2.0], [1.0, -1.0]], requires_grad=True)
    target = torch.tensor([[1.0, float("nan")], [0.0, -1.0]])
    loss = MaskedRegressionLoss("mse")(pred, target)
    assert loss.item() == pytest.approx((0.25 + 1.0 + 0.0) / 3)
    loss.backward()
    assert pred.grad[0, 1] == 0  # the missing cell gets no gradient
    huber = MaskedRegressionLoss("huber", delta=0.5)(pred.detach(), target)
    assert huber.item() == pytest.approx((0.5 * 0.25 + 0.5 * (1.0 - 0.25) + 0.0) / 3)
    logits = torch.tensor([[2.0, 0.0], [-1.0, 3.0]])
    labels = torch.tensor([[1.0, float("nan")], [0.0, 1.0]])
    bce = MaskedBCE()(logits, labels)
    keep = ~torch.isnan(labels)
    expected = nn.functional.binary_cross_entropy_with_logits(logits[keep], labels[keep])
    assert bce.item() == pytest.approx(expected.item())


def test_regression_module_trains_on_standardised_targets_and_decodes() -> None:
    torch.manual_seed(0)
    x = torch.randn(64, 4)
    y = (x @ torch.tensor([1.0, -2.0, 0.5, 0.0]) * 10 + 100).unsqueeze(1)
    targets = RegressionTargets.from_values(["y"], y.numpy())
    model = FinetuneModule(nn.Linear(4, 8), 1, out_dim=8, dropout=0.0, loss="mse", target=targets.spec(), lr=0.05)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(300):
        opt.zero_grad()
        loss = model._loss(model(x), y)
        loss.backward()
        opt.step()
    model.eval()
    pred = model.decode(model(x))
    metrics = model.target.metrics(y.numpy(), pred.detach().numpy(), prefix="val_")
    assert metrics["val_r2"] > 0.95
    assert abs(float(pred.mean()) - 100) < 3  # the decoded outputs are in the data's unit, not standardised
