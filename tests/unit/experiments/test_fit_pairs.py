"""Pair tasks through `fit`: text cross-encoder vs Siamese, image pairs from npz, and the errors around them."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from conftest import tiny_image_config, tiny_run_config, write_quadrant_npz
from headstart.backbones import HFBackbone, SiameseBackbone
from headstart.backbones.resnet import ResNetBackbone
from headstart.config import load_config
from headstart.data import TextClassificationDataset, TextCollator
from headstart.errors import ConfigError
from headstart.experiments.fit import run_fit
from headstart.experiments.inference import evaluate_file, load_run, predict_file

GOOD = ["great", "lovely", "excellent", "superb", "fine"]
BAD = ["awful", "terrible", "poor", "broken", "boring"]


def write_pair_csv(path: Path, n: int, seed: int) -> Path:
    """``same`` when both texts have the same polarity: learnable only by comparing the two sides."""
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["first", "second", "label"])
        for i in range(n):
            pa, pb = i % 2, (i // 2) % 2
            a = f"the item was {rng.choice(GOOD if pa else BAD)}"
            b = f"i found it {rng.choice(GOOD if pb else BAD)} and {rng.choice(GOOD if pb else BAD)} overall"
            w.writerow([a, b, "same" if pa == pb else "different"])
    return path


def pair_config(tmp_path: Path, model_dir: Path, **backbone: object) -> dict:
    data = {name: str(write_pair_csv(tmp_path / "pairs" / f"{name}.csv", n, seed))
            for name, n, seed in (("train", 48, 1), ("val", 16, 2), ("test", 16, 3))}
    raw = tiny_run_config(tmp_path, model_dir, data={**data, "text_column": "first", "text_pair_column": "second"},
                          backbone=backbone)
    raw["output_dir"] = str(tmp_path / f"run_{backbone.get('pair', 'auto')}")
    return raw


@pytest.fixture(scope="module")
def tokenizer(tiny_hf_dir):
    return HFBackbone(str(tiny_hf_dir)).load_tokenizer()


def _pairs_frame() -> pd.DataFrame:
    return pd.DataFrame({"text": ["a short one", "a much longer first text than the other"],
                         "text_pair": ["the second side is longer here", "tiny"], "label": [0, 1]})


def test_siamese_dataset_tokenizes_each_side_alone(tokenizer) -> None:
    frame = _pairs_frame()
    cross = TextClassificationDataset(frame, tokenizer, 32)
    siamese = TextClassificationDataset(frame, tokenizer, 32, siamese=True)
    item = siamese[0]
    assert set(item) == {"a", "b", "labels"}
    assert item["a"]["input_ids"] == tokenizer("a short one")["input_ids"]
    assert item["b"]["input_ids"] == tokenizer("the second side is longer here")["input_ids"]
    assert cross[0]["input_ids"] == tokenizer("a short one", "the second side is longer here")["input_ids"]
    assert siamese.lengths.tolist() == [max(len(siamese[i]["a"]["input_ids"]), len(siamese[i]["b"]["input_ids"]))
                                        for i in range(2)]
    assert siamese.fingerprint() != cross.fingerprint() and siamese.preprocessing["siamese"] is True
    batch = TextCollator(tokenizer.pad_token_id)([siamese[0], siamese[1]])
    assert batch["labels"].tolist() == [0, 1]
    for side in ("a", "b"):  # each side padded to its own longest text
        widths = [len(siamese[i][side]["input_ids"]) for i in range(2)]
        assert batch[side]["input_ids"].shape == (2, max(widths))
        assert batch[side]["attention_mask"].sum(1).tolist() == widths


def test_siamese_without_a_pair_column_is_a_clear_error(tokenizer) -> None:
    with pytest.raises(Exception, match=r"Siamese text model needs pairs.*data.text_pair_column"):
        TextClassificationDataset(_pairs_frame().drop(columns="text_pair"), tokenizer, 32, siamese=True)


def test_one_pass_over_both_sides_equals_two_passes(tiny_hf_dir, tokenizer) -> None:
    model = SiameseBackbone(HFBackbone(str(tiny_hf_dir)), ["concat", "cosine"]).eval()
    siamese = TextClassificationDataset(_pairs_frame(), tokenizer, 32, siamese=True)
    batch = TextCollator(tokenizer.pad_token_id)([siamese[0], siamese[1]])
    with torch.no_grad():
        a, b = model.embed_pair(batch)
        ref_a, ref_b = model.encoder(batch["a"]), model.encoder(batch["b"])
        fused = model(batch)
    torch.testing.assert_close(a, ref_a, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(b, ref_b, atol=1e-5, rtol=1e-5)
    assert fused.shape == (2, 2 * model.encoder.out_dim + 1)


@pytest.mark.parametrize("pair", ["cross", "siamese"])
def test_fit_text_pairs_and_reload(tmp_path, tiny_hf_dir, pair) -> None:
    raw = pair_config(tmp_path, tiny_hf_dir, **({"pair": pair, "fusion": ["absdiff", "cosine"]} if pair == "siamese"
                                                else {}))
    result = run_fit(load_config(None, raw=raw), verbose=False)
    saved = yaml.safe_load((result.run_dir / "config.yaml").read_text())
    assert saved["backbone"]["pair"] == pair  # auto resolved to cross for text pairs
    assert result.summary["roundtrip_max_abs_diff"] == 0.0
    loaded = load_run(result.run_dir, verbose=False)
    assert isinstance(loaded.model.backbone, SiameseBackbone) == (pair == "siamese")
    test_file = raw["data"]["test"]
    metrics = evaluate_file(result.run_dir, test_file)
    assert metrics["acc"] == pytest.approx(result.summary["test"]["acc"])
    assert len(predict_file(result.run_dir, test_file)) == 16


def test_siamese_linear_probe_caches_the_fused_features(tmp_path, tiny_hf_dir) -> None:
    raw = pair_config(tmp_path, tiny_hf_dir, pair="siamese")
    raw["strategy"] = {"name": "linear_probe"}
    cached = run_fit(load_config(None, raw=raw), verbose=False).summary
    raw["output_dir"], raw["cache"] = str(tmp_path / "uncached"), {"enabled": False}
    plain = run_fit(load_config(None, raw=raw), verbose=False).summary
    assert cached["cache"]["used"] and cached["cache"]["kind"] == "pooled"
    assert cached["val"]["loss"] == pytest.approx(plain["val"]["loss"], rel=1e-5)


def test_pair_settings_that_cannot_work_fail_before_training(tmp_path, tiny_hf_dir) -> None:
    raw = tiny_run_config(tmp_path, tiny_hf_dir, backbone={"pair": "siamese"})
    with pytest.raises(ConfigError, match=r"backbone.pair is .siamese. but data.train holds single inputs"):
        run_fit(load_config(None, raw=raw), verbose=False)
    assert not Path(raw["output_dir"]).exists()  # failed before the run directory was made
    raw = tiny_image_config(tmp_path, data={"train": str(write_pair_npz(tmp_path / "p.npz", 32, 0))},
                            backbone={"pair": "cross"})
    with pytest.raises(ConfigError, match=r"image pairs need backbone\.pair: siamese"):
        run_fit(load_config(None, raw=raw), verbose=False)


def write_pair_npz(path: Path, n: int, seed: int) -> Path:
    """Quadrant images in pairs; the label says whether both show the same quadrant."""
    single = np.load(write_quadrant_npz(path.with_suffix(".single.npz"), 2 * n, seed))
    x, y = single["x"], single["y"]
    rng = np.random.default_rng(seed)
    partner = np.where(np.arange(n) % 2 == 0, rng.permutation(n) + n, np.arange(n) + n)
    same = (y[:n] == y[partner]).astype(np.int64)
    np.savez(path, xa=x[:n], xb=x[partner], y=same)
    return path


def test_fit_image_pairs_from_npz(tmp_path) -> None:
    raw = tiny_image_config(tmp_path, data={"train": str(write_pair_npz(tmp_path / "pairs.npz", 96, 0)),
                                            "augment": None},
                            backbone={"fusion": ["absdiff", "l2"]},
                            head={"type": "mlp", "hidden_dims": [8]}, trainer={"epochs": 3})
    result = run_fit(load_config(None, raw=raw), verbose=False)
    saved = yaml.safe_load((result.run_dir / "config.yaml").read_text())
    assert saved["backbone"]["pair"] == "siamese" and saved["backbone"]["fusion"] == ["absdiff", "l2"]
    model = load_run(result.run_dir, verbose=False).model
    assert isinstance(model.backbone, SiameseBackbone) and isinstance(model.backbone.encoder, ResNetBackbone)
    assert model.backbone.out_dim == model.backbone.encoder.out_dim + 1
    assert np.isfinite(result.summary["val"]["loss"])
    new_pairs = write_pair_npz(tmp_path / "new_pairs.npz", 24, 5)
    metrics = evaluate_file(result.run_dir, new_pairs)
    assert {"acc", "f1", "f1_pos", "auc"} <= set(metrics) and len(predict_file(result.run_dir, new_pairs)) == 24
