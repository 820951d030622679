"""Model A -> dataset B: `headstart pretrain` exports, `fit --pretrain` loads with explanations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from conftest import tiny_image_config, write_quadrant_npz
from headstart import FinetuneModule
from headstart.backbones.resnet import ResNetBackbone
from headstart.cli.main import main
from headstart.config import load_config
from headstart.errors import CheckpointError
from headstart.train.checkpoint import read_state_dict
from headstart.train.pretrained import PRETRAINED_META, PRETRAINED_WEIGHTS, load_pretrained


@pytest.fixture(scope="module")
def pretrained_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pre")
    raw = tiny_image_config(tmp, trainer={"epochs": 1})
    raw["data"]["train"] = str(write_quadrant_npz(tmp / "a.npz", 64, 3))
    path = tmp / "a.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["pretrain", str(path)]) == 0
    return Path(raw["output_dir"])


def _model(widths=(4, 8), n_classes=4, se=False, hidden=(8,), classes=None) -> FinetuneModule:
    return FinetuneModule(ResNetBackbone((1, 1), widths, se=se), n_classes, class_names=classes, head_type="cosface",
                          margin=0.2, margin_scale=16.0, head_hidden_dims=hidden, dropout=0.0)


def test_pretrain_exports_weights_and_architecture(pretrained_run, capsys) -> None:
    assert (pretrained_run / PRETRAINED_WEIGHTS).exists()
    meta = json.loads((pretrained_run / PRETRAINED_META).read_text())
    assert meta["architecture"]["widths"] == [4, 8] and meta["n_classes"] == 4
    assert len(meta["normalization"]["mean"]) == 1


def test_same_classes_load_backbone_and_head(pretrained_run) -> None:
    model = _model()
    report = load_pretrained(model, pretrained_run, verbose=False)
    assert report.head_loaded and not report.backbone.missing
    from headstart.train.checkpoint import read_state_dict

    saved = read_state_dict(pretrained_run / PRETRAINED_WEIGHTS)
    for key, value in model.weights_state().items():
        assert torch.equal(value, saved[key]), key


def test_other_class_count_reinitialises_the_head_with_a_note(pretrained_run) -> None:
    model = _model(n_classes=3)
    fresh_head = {k: v.clone() for k, v in model.head.state_dict().items()}
    report = load_pretrained(model, pretrained_run / PRETRAINED_WEIGHTS, verbose=False)
    assert not report.head_loaded
    assert any("head re-initialised" in n and "4 classes and this task has 3" in n for n in report.notes)
    assert all(torch.equal(v, model.head.state_dict()[k]) for k, v in fresh_head.items())


def test_other_class_names_reinitialise_the_head_unless_kept(pretrained_run) -> None:
    letters = ["a", "b", "c", "d"]  # same count as the checkpoint's 0..3, other meaning
    model = _model(classes=letters)
    fresh_head = {k: v.clone() for k, v in model.head.state_dict().items()}
    report = load_pretrained(model, pretrained_run, verbose=False)
    assert not report.head_loaded and "classes [0, 1, 2, 3] are not this task's [a, b, c, d]" in report.notes[0]
    assert all(torch.equal(v, model.head.state_dict()[k]) for k, v in fresh_head.items())
    kept = _model(classes=letters)
    assert load_pretrained(kept, pretrained_run, verbose=False, head="keep").head_loaded
    assert not all(torch.equal(v, kept.head.state_dict()[k]) for k, v in fresh_head.items())


def test_reset_policy_and_keep_that_cannot_load(pretrained_run) -> None:
    model = _model()
    fresh_head = {k: v.clone() for k, v in model.head.state_dict().items()}
    report = load_pretrained(model, pretrained_run, verbose=False, head="reset")
    assert not report.head_loaded and "pretrain_head: reset" in report.notes[0] and not report.backbone.missing
    assert all(torch.equal(v, model.head.state_dict()[k]) for k, v in fresh_head.items())
    with pytest.raises(CheckpointError, match=r"pretrain_head is 'keep' but .*4 classes and this task has 3"):
        load_pretrained(_model(n_classes=3), pretrained_run, verbose=False, head="keep")


def test_single_image_checkpoint_loads_into_a_siamese_encoder(pretrained_run) -> None:
    from headstart.backbones import SiameseBackbone

    model = FinetuneModule(SiameseBackbone(ResNetBackbone((1, 1), (4, 8)), ["absdiff", "cosine"]), 2,
                           head_hidden_dims=[8], dropout=0.0)
    report = load_pretrained(model, pretrained_run, verbose=False)
    assert not report.backbone.missing and not report.backbone.shape_mismatched and not report.head_loaded
    saved = read_state_dict(pretrained_run / PRETRAINED_WEIGHTS)
    for key, value in model.backbone.encoder.state_dict().items():
        assert torch.equal(value, saved[f"backbone.{key}"]), key
    with pytest.raises(CheckpointError, match=r"backbone.widths: checkpoint \[4, 8\], this config \[6, 8\]"):
        load_pretrained(FinetuneModule(SiameseBackbone(ResNetBackbone((1, 1), (6, 8))), 2), pretrained_run,
                        verbose=False)


@pytest.mark.parametrize(("kwargs", "fragment"), [
    ({"widths": (6, 8)}, "backbone.widths: checkpoint [4, 8], this config [6, 8]"),
    ({"se": True}, "backbone.se: checkpoint False, this config True"),
])
def test_architecture_mismatch_names_the_config_values(pretrained_run, kwargs, fragment) -> None:
    with pytest.raises(CheckpointError) as err:
        load_pretrained(_model(**kwargs), pretrained_run, verbose=False)
    text = str(err.value)
    assert "different architecture" in text and fragment in text and "Set these config values" in text


def test_fit_with_pretrain_records_what_was_loaded(pretrained_run, tmp_path) -> None:
    from headstart.experiments.fit import run_fit

    raw = tiny_image_config(tmp_path, trainer={"epochs": 1})
    raw["pretrain"] = str(pretrained_run)
    summary = run_fit(load_config(None, raw=raw), verbose=False).summary
    assert summary["pretrain"]["head_loaded"] is True and summary["pretrain"]["backbone_keys_missing"] == 0
