"""`fit` on images end to end with a tiny ResNet: margin head, Fisher ratio, augmentation, mixing, reload."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
import yaml

from conftest import tiny_image_config, write_quadrant_npz
from headstart import FinetuneModule
from headstart.backbones.resnet import ResNetBackbone
from headstart.config import load_config
from headstart.experiments.fit import run_fit
from headstart.experiments.inference import load_run


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("img")
    raw = tiny_image_config(tmp, data={"mix": {"path": str(write_quadrant_npz(tmp / "a.npz", 64, 1)), "ratio": 0.5}})
    return run_fit(load_config(None, raw=raw), verbose=False)


def test_image_run_learns_and_records_everything(image_run) -> None:
    run, summary = image_run.run_dir, image_run.summary
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["task"] == "image_classification" and cfg["backbone"]["in_channels"] == 1
    assert len(cfg["data"]["mean"]) == 1 and 0.0 < cfg["data"]["mean"][0] < 1.0  # training-split statistics
    assert summary["n_train"] == 72 + 36 and summary["n_train_mixed_in"] == 36 and summary["n_val"] == 24
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    fishers = [float(r["val_fisher"]) for r in rows]
    assert all(np.isfinite(fishers)) and fishers[-1] > fishers[0]
    assert float(rows[0]["lr_margin"]) > float(rows[0]["lr_head"])  # margin_lr 2e-2 vs lr 5e-3
    assert summary["val"]["acc"] >= 0.75  # four bright quadrants: separable after 8 epochs (BN statistics need some steps)
    assert summary["roundtrip_max_abs_diff"] == 0.0
    assert "data.augment draws new training images" in summary["cache"]["reason"]


def test_reloaded_image_run_predicts_like_the_summary(image_run) -> None:
    loaded = load_run(image_run.run_dir, verbose=False)
    assert loaded.tokenizer is None and isinstance(loaded.model.backbone, ResNetBackbone)
    assert json.loads((image_run.run_dir / "labels.json").read_text())["classes"] == [0, 1, 2, 3]


def test_evaluate_predict_embed_on_new_images(image_run, tmp_path) -> None:
    from headstart.cli.main import main
    from headstart.errors import DataError
    from headstart.experiments.inference import embed_file, evaluate_file, predict_file

    new = write_quadrant_npz(tmp_path / "new.npz", 40, 7, shift=40)
    metrics = evaluate_file(image_run.run_dir, new)
    predictions = predict_file(image_run.run_dir, new)
    assert metrics["acc"] == pytest.approx((predictions["prediction"] == predictions["label"]).mean())
    assert predictions["row"].tolist() == list(range(40)) and predictions.filter(like="proba_").shape == (40, 4)
    assert metrics["acc"] >= 0.75
    emb = embed_file(image_run.run_dir, new)
    assert len(emb) == 40 and len(emb["embedding"].iloc[0]) == 8  # the head's input: the last ResNet stage
    unlabelled = tmp_path / "unlabelled.npz"
    np.savez(unlabelled, x=np.load(new)["x"])
    assert "label" not in predict_file(image_run.run_dir, unlabelled)
    with pytest.raises(DataError, match="has no labels, so it cannot be scored"):
        evaluate_file(image_run.run_dir, unlabelled)
    pairs = tmp_path / "pairs.npz"
    np.savez(pairs, xa=np.load(new)["x"], xb=np.load(new)["x"], y=np.load(new)["y"])
    with pytest.raises(DataError, match=r"holds image pairs \(xa, xb\) with 1 channel\(s\), but the run was "
                                         r"trained on single images"):
        predict_file(image_run.run_dir, pairs)
    assert main(["evaluate", str(image_run.run_dir), "--data", str(new)]) == 0


def test_image_linear_probe_without_augmentation_is_cached_exactly(tmp_path) -> None:
    raw = tiny_image_config(tmp_path, data={"augment": None}, strategy={"name": "linear_probe"},
                            trainer={"epochs": 2})
    cached = run_fit(load_config(None, raw=raw), verbose=False).summary
    raw["output_dir"], raw["cache"] = str(tmp_path / "uncached"), {"enabled": False}
    plain = run_fit(load_config(None, raw=raw), verbose=False).summary
    assert cached["cache"]["used"] and cached["cache"]["kind"] == "pooled"
    assert {e["rows"] for e in cached["cache"]["entries"].values()} == {72, 24}
    assert cached["val"]["loss"] == pytest.approx(plain["val"]["loss"], rel=1e-5)
    raw["output_dir"], raw["cache"], raw["strategy"] = str(tmp_path / "partial"), {"enabled": True}, {
        "name": "partial", "train_last": 1}
    partial = run_fit(load_config(None, raw=raw), verbose=False).summary
    assert not partial["cache"]["used"] and "only fully frozen encoders" in partial["cache"]["reason"]


def test_margin_classifier_has_its_own_lr_group() -> None:
    model = FinetuneModule(ResNetBackbone((1,), (4,)), 3, head_type="arcface", head_hidden_dims=[6], lr=1e-3,
                           margin_lr=5e-2)
    groups, schedule = model.build_schedule(total_steps=10, steps_per_epoch=10)
    by_name = {g["name"]: schedule.base_lr(info) for g, info in zip(groups, schedule.infos, strict=True)}
    assert by_name["margin"] == 5e-2 and by_name["head"] == 1e-3
    margin_params = next(g for g in groups if g["name"] == "margin")["params"]
    assert margin_params == [model.head.classifier.weight]


def test_training_step_applies_the_margin_only_there() -> None:
    torch.manual_seed(0)
    model = FinetuneModule(ResNetBackbone((1,), (4,)), 3, head_type="cosface", margin=0.3, margin_scale=10.0,
                           dropout=0.0)
    x, y = torch.randn(5, 1, 6, 6), torch.tensor([0, 1, 2, 0, 1])
    model.eval()
    plain = model({"pixel_values": x}, y)
    model.train()
    model.backbone.eval()  # same BN behaviour on both sides; only the head's mode differs
    margin = model({"pixel_values": x}, y)
    rows = torch.arange(5)
    torch.testing.assert_close(margin[rows, y], plain[rows, y] - 3.0)
