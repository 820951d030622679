"""Weights no step can change are written once per run (frozen.safetensors) and merged back on every read."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open

from conftest import tiny_run_config
from headstart.config import load_config
from headstart.errors import CheckpointError
from headstart.experiments.fit import run_fit
from headstart.experiments.inference import load_run
from headstart.train.checkpoint import FROZEN_WEIGHTS, read_state_dict


def _stored_keys(path) -> set[str]:
    with safe_open(str(path), framework="pt") as fh:
        return set(fh.keys())


@pytest.fixture(scope="module")
def partial_run(tmp_path_factory, tiny_hf_dir):
    tmp = tmp_path_factory.mktemp("frozen")
    raw = tiny_run_config(tmp, tiny_hf_dir, strategy={"name": "partial", "train_last": 1},
                          trainer={"epochs": 2, "save_top_k": 2, "monitor": "val_loss", "monitor_mode": "min"},
                          cache={"enabled": False})
    return raw, run_fit(load_config(None, raw=raw), verbose=False, keep_last=True)


def test_checkpoints_hold_only_what_the_run_changes(partial_run, tiny_hf_dir) -> None:
    _, result = partial_run
    ckpts = result.run_dir / "checkpoints"
    model = load_run(result.run_dir, verbose=False).model
    static = set(model.static_weight_names())
    assert static and not any(k.startswith("head.") for k in static)
    assert any(".layer.0." in k for k in static) and not any(".layer.1." in k for k in static)
    assert _stored_keys(ckpts / FROZEN_WEIGHTS) == static
    whole = set(model.weights_state())
    for path in [ckpts / "best.safetensors", *sorted((ckpts / "top").glob("*.safetensors"))]:
        stored = _stored_keys(path)
        assert not stored & static, path.name
        assert any(k.startswith("head.") for k in stored)
        assert set(read_state_dict(path)) == whole, path.name  # top/ files link to ../frozen.safetensors
    last = torch.load(ckpts / "last.ckpt", map_location="cpu", weights_only=True)
    assert not set(last["state_dict"]) & static
    assert last["headstart"]["frozen_weights"].endswith(FROZEN_WEIGHTS)
    # The frozen prefix is the pretrained encoder, untouched.
    pretrained = read_state_dict(tiny_hf_dir)
    frozen = read_state_dict(ckpts / FROZEN_WEIGHTS)
    for key, value in frozen.items():
        source = [v for k, v in pretrained.items() if key.endswith("." + k)]
        assert len(source) == 1 and torch.equal(value, source[0]), key
    assert result.summary["roundtrip_max_abs_diff"] == 0.0


def test_resume_merges_the_frozen_weights_back(partial_run) -> None:
    raw, first = partial_run
    before = read_state_dict(first.run_dir / "checkpoints" / FROZEN_WEIGHTS)
    raw = {**raw, "trainer": {**raw["trainer"], "epochs": 3}}
    result = run_fit(load_config(None, raw=raw), resume=True, verbose=False)
    assert result.summary["resumed"] is True and result.summary["roundtrip_max_abs_diff"] == 0.0
    assert result.summary["frozen_weights"] == first.summary["frozen_weights"]  # the interrupted run's file
    state = load_run(result.run_dir, verbose=False).model.weights_state()
    for key, value in before.items():
        assert torch.equal(state[key], value), key


def test_missing_frozen_file_is_an_actionable_error(partial_run, tmp_path) -> None:
    _, result = partial_run
    copy = tmp_path / "best.safetensors"
    copy.write_bytes((result.run_dir / "checkpoints" / "best.safetensors").read_bytes())
    with pytest.raises(CheckpointError) as err:
        read_state_dict(copy)
    text = str(err.value)
    assert "frozen.safetensors" in text and "missing" in text and "Copy the whole checkpoints/ folder" in text


@pytest.mark.parametrize(("strategy", "expect_file"), [({"name": "lora", "lora": {"r": 2}}, True),
                                                       ({"name": "full"}, False)])
def test_lora_stores_adapters_only_and_full_stores_everything(tmp_path, tiny_hf_dir, strategy, expect_file) -> None:
    raw = tiny_run_config(tmp_path, tiny_hf_dir, strategy=strategy, trainer={"epochs": 1})
    result = run_fit(load_config(None, raw=raw), verbose=False)
    ckpts = result.run_dir / "checkpoints"
    assert (ckpts / FROZEN_WEIGHTS).exists() is expect_file
    stored = _stored_keys(ckpts / "best.safetensors")
    model = load_run(result.run_dir, verbose=False).model
    static = set(model.static_weight_names())
    if expect_file:  # the base weights once, the adapters (and head) per checkpoint
        assert _stored_keys(ckpts / FROZEN_WEIGHTS) == static and not any("lora_" in k for k in static)
        assert not stored & static and any("lora_" in k for k in stored)
    else:
        assert not static and stored == set(model.weights_state())
