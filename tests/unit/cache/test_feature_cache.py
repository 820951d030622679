"""Feature cache: cached runs train exactly like uncached ones, keys follow content, corruption is caught."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import pytorch_lightning as pl
import torch

from conftest import TinyEncoder, tiny_run_config
from headstart.backbones import as_backbone
from headstart.backbones.hf import HFBackbone
from headstart.cache import (
    CachedCollator,
    CachedFeatureDataset,
    CachePlan,
    FeatureCache,
    cache_key,
    cached_features,
    plan_cache,
    prefix_components,
)
from headstart.config import load_config
from headstart.data import TextClassificationDataset, TextCollator
from headstart.experiments.fit import run_fit
from headstart.strategies import Strategy
from headstart.train.module import FinetuneModule


class StepLosses(pl.Callback):
    """Every training step's loss, and the val loss of each epoch."""

    def __init__(self) -> None:
        self.train: list[float] = []
        self.val: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.train.append(float(outputs["loss"]))

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if "val_loss" in trainer.callback_metrics:
            self.val.append(float(trainer.callback_metrics["val_loss"]))


def _fit(tmp_path: Path, model_dir: Path, name: str, strategy: dict, cache: bool) -> tuple[StepLosses, dict]:
    raw = tiny_run_config(tmp_path / name, model_dir, strategy=strategy,
                          cache={"enabled": cache, "dir": str(tmp_path / "cache")})
    raw["trainer"]["epochs"] = 3
    cfg = load_config(None, raw=raw)
    losses = StepLosses()
    result = run_fit(cfg, verbose=False, callbacks=[losses])
    return losses, result.summary


def _assert_close(a: list[float], b: list[float]) -> None:
    assert len(a) == len(b) and len(a) > 0
    rel = np.abs(np.array(a) - np.array(b)) / np.maximum(np.abs(np.array(b)), 1e-12)
    assert rel.max() < 1e-5, f"max relative difference {rel.max():.3g}"


@pytest.mark.parametrize(
    ("strategy", "kind"),
    [({"name": "linear_probe"}, "pooled"), ({"name": "partial", "train_last": 1}, "tokens")],
)
def test_cached_run_matches_uncached_losses(tmp_path: Path, tiny_hf_dir: Path, strategy: dict, kind: str) -> None:
    plain, plain_summary = _fit(tmp_path, tiny_hf_dir, "plain", strategy, cache=False)
    cached, cached_summary = _fit(tmp_path, tiny_hf_dir, "cached", strategy, cache=True)
    assert plain_summary["cache"]["used"] is False
    assert cached_summary["cache"]["used"] is True and cached_summary["cache"]["kind"] == kind
    assert all(not e["hit"] for e in cached_summary["cache"]["entries"].values())
    _assert_close(cached.train, plain.train)  # every step, dropout in the trainable part included
    _assert_close(cached.val, plain.val)
    assert cached_summary["test"]["acc"] == pytest.approx(plain_summary["test"]["acc"])
    # A second run finds every entry by its key and trains identically.
    again, again_summary = _fit(tmp_path, tiny_hf_dir, "again", strategy, cache=True)
    assert all(e["hit"] for e in again_summary["cache"]["entries"].values())
    assert again.train == cached.train


def test_full_and_lora_runs_do_not_cache(tmp_path: Path, tiny_hf_dir: Path) -> None:
    _, summary = _fit(tmp_path, tiny_hf_dir, "full", {"name": "full"}, cache=True)
    assert summary["cache"]["used"] is False
    assert "block 0 (embeddings) trains" in summary["cache"]["reason"]


# ----- planning ---------------------------------------------------------------------------------
def _module(backbone, strategy: Strategy) -> FinetuneModule:
    return FinetuneModule(backbone, 2, strategy=strategy)


def test_plan_follows_the_strategy_over_the_whole_run(tiny_hf_dir: Path) -> None:
    backbone = HFBackbone(str(tiny_hf_dir))  # blocks: embeddings, layer.0, layer.1
    plan, _ = plan_cache(_module(backbone, Strategy("linear_probe")), epochs=3)
    assert plan == CachePlan(3, 3, ("embeddings", "encoder.layer.0", "encoder.layer.1"))
    plan, _ = plan_cache(_module(backbone, Strategy("partial", train_last=1)), epochs=3)
    assert plan is not None and plan.cut == 2 and plan.kind == "tokens"
    # gradual: frozen for 2 epochs, then one block per epoch -> only layer.1 trains within 3 epochs
    gradual = _module(backbone, Strategy("gradual", freeze_epochs=2, unfreeze_every=1))
    assert plan_cache(gradual, epochs=2)[0].cut == 3
    assert plan_cache(gradual, epochs=3)[0].cut == 2
    assert plan_cache(gradual, epochs=5)[0] is None
    plan, why = plan_cache(_module(backbone, Strategy("partial", freeze="1-2")), epochs=3)
    assert plan is None and "block 0 (embeddings) trains" in why
    plan, why = plan_cache(_module(HFBackbone(str(tiny_hf_dir)), Strategy("lora")), epochs=1)
    assert plan is None and "LoRA" in why


def test_plain_torch_encoder_caches_only_a_full_freeze() -> None:
    torch.manual_seed(0)
    plan, _ = plan_cache(_module(as_backbone(TinyEncoder()), Strategy("linear_probe")), epochs=2)
    assert plan is not None and plan.kind == "pooled"
    plan, why = plan_cache(_module(as_backbone(TinyEncoder()), Strategy("partial", train_last=1)), epochs=2)
    assert plan is None and "cannot resume from block" in why and "linear probes" in why


def test_hf_split_forward_reproduces_the_whole_forward(tiny_hf_dir: Path) -> None:
    backbone = HFBackbone(str(tiny_hf_dir)).eval()
    ids = torch.tensor([[101, 2204, 3185, 102, 0, 0], [101, 2919, 2003, 6659, 2135, 102]])
    inputs = {"input_ids": ids, "attention_mask": (ids != 0).long()}
    with torch.no_grad():
        whole = backbone(inputs)
        for k in (1, 2):
            assert backbone.can_split(k)
            split = backbone.forward_suffix(backbone.forward_prefix(inputs, k), k)
            torch.testing.assert_close(split, whole, rtol=0, atol=1e-6)
    assert not backbone.can_split(0) and not backbone.can_split(3)


# ----- keys -------------------------------------------------------------------------------------
def _dataset(tiny_hf_dir: Path, texts: list[str], max_length: int = 16) -> TextClassificationDataset:
    tokenizer = HFBackbone(str(tiny_hf_dir)).load_tokenizer()
    frame = pd.DataFrame({"text": texts, "label": np.arange(len(texts)) % 2})
    return TextClassificationDataset(frame, tokenizer, max_length)


TEXTS = ["a rather long sentence about a film that goes on and on for many words", "short", "ok then"]


def _key(backbone, dataset, k: int, dtype: str = "float32") -> str:
    return cache_key(prefix_components(backbone, k, preprocessing=dataset.preprocessing,
                                       data_fingerprint=dataset.fingerprint(), precision="32-true/cpu",
                                       dtype=dtype))


def test_key_changes_with_checkpoint_tokenizer_data_block_and_dtype(tiny_hf_dir: Path) -> None:
    backbone = HFBackbone(str(tiny_hf_dir))
    data = _dataset(tiny_hf_dir, TEXTS)
    base = _key(backbone, data, 2)
    assert _key(HFBackbone(str(tiny_hf_dir)), _dataset(tiny_hf_dir, TEXTS), 2) == base  # same content, same key
    assert _key(backbone, data, 1) != base  # block index
    assert _key(backbone, data, 3) != base
    assert _key(backbone, data, 2, dtype="float16") != base
    assert _key(backbone, _dataset(tiny_hf_dir, TEXTS, max_length=8), 2) != base  # tokenizer max length
    assert _key(backbone, _dataset(tiny_hf_dir, [*TEXTS[:2], "ok than"]), 2) != base  # data
    changed = HFBackbone(str(tiny_hf_dir))
    with torch.no_grad():
        changed.model.embeddings.word_embeddings.weight[5, 0] += 1e-3  # checkpoint content
    assert _key(changed, data, 2) != base
    # weights after the cut do not change a token-level entry, but do change the pooled one
    later = HFBackbone(str(tiny_hf_dir))
    with torch.no_grad():
        later.model.encoder.layer[1].output.dense.bias += 1e-3
    assert _key(later, data, 2) == base
    assert _key(later, data, 3) != _key(backbone, data, 3)


# ----- store: corruption, atomicity, listing ------------------------------------------------------
def _entry(tmp_path: Path, tiny_hf_dir: Path, cut: int = 2):
    backbone = HFBackbone(str(tiny_hf_dir))
    data = _dataset(tiny_hf_dir, TEXTS)
    collate = TextCollator(pad_token_id=0)
    plan = CachePlan(cut, 3, tuple(backbone.block_names()))
    cache = FeatureCache(tmp_path / "cache")
    return cache, lambda: cached_features(cache, backbone, data, collate, plan, batch_size=2), data, plan


def test_entry_holds_only_real_tokens_and_round_trips(tmp_path: Path, tiny_hf_dir: Path) -> None:
    _cache, get, data, plan = _entry(tmp_path, tiny_hf_dir)
    entry, info = get()
    assert not info["hit"] and entry.kind == "tokens"
    assert entry.values.shape == (int(data.lengths.sum()), 16)
    assert [entry.row(i).shape[0] for i in range(3)] == data.lengths.tolist()
    batch = CachedCollator(plan)([CachedFeatureDataset(entry, data.labels)[i] for i in range(3)])
    assert batch["cached_hidden"].shape == (3, int(data.lengths.max()), 16)
    assert batch["attention_mask"].sum(1).tolist() == data.lengths.tolist()
    _, info = get()
    assert info["hit"]


@pytest.mark.parametrize("cut", [2, 3])  # token rows, pooled rows (one fancy-indexed read per batch)
def test_batch_fetch_equals_row_by_row(tmp_path: Path, tiny_hf_dir: Path, cut: int) -> None:
    _cache, get, data, _plan = _entry(tmp_path, tiny_hf_dir, cut)
    ds = CachedFeatureDataset(get()[0], data.labels)
    assert ds.entry.kind == ("pooled" if cut == 3 else "tokens")
    order = [2, 0, 1, 2]
    batched, single = ds.__getitems__(order), [ds[i] for i in order]
    assert [b["labels"] for b in batched] == [s["labels"] for s in single]
    for b, s in zip(batched, single, strict=True):
        np.testing.assert_array_equal(b["features"], s["features"])


@pytest.mark.parametrize("damage", ["flip", "truncate", "manifest"])
def test_corrupted_entry_is_detected_and_rebuilt(tmp_path: Path, tiny_hf_dir: Path, damage: str) -> None:
    _cache, get, _, _ = _entry(tmp_path, tiny_hf_dir)
    entry, _ = get()
    original = np.array(entry.values)
    path = entry.path / "values.npy"
    del entry
    if damage == "flip":
        raw = bytearray(path.read_bytes())
        raw[-7] ^= 0xFF
        path.write_bytes(bytes(raw))
    elif damage == "truncate":
        path.write_bytes(path.read_bytes()[:-64])
    else:
        (path.parent / "manifest.json").write_text("{not json")
    with pytest.warns(UserWarning, match="is corrupted"):
        rebuilt, info = get()
    assert not info["hit"]
    np.testing.assert_array_equal(np.array(rebuilt.values), original)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert get()[1]["hit"]


def test_interrupted_build_leaves_no_entry(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path / "cache")

    def fail(writer) -> None:
        writer.write_rows(np.array([0]), np.ones((1, 4)))
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cache.build("k1", {"kind": "pooled"}, rows=2, dim=4, dtype="float32", lengths=None, fill=fail)
    assert cache.open("k1") is None
    assert list((tmp_path / "cache").iterdir()) == []


def test_ls_and_clear(tmp_path: Path, tiny_hf_dir: Path) -> None:
    cache, get, _, _ = _entry(tmp_path, tiny_hf_dir)
    entry, _ = get()
    listed = list(cache.entries())
    assert [e["key"] for e in listed] == [entry.key]
    assert listed[0]["kind"] == "tokens" and listed[0]["rows"] == 3 and listed[0]["bytes"] > entry.nbytes
    manifest = json.loads((entry.path / "manifest.json").read_text())
    assert manifest["components"]["cut"] == 2
    with pytest.raises(Exception, match="No feature cache entry nope"):
        cache.clear(["nope"])
    removed, freed = cache.clear()
    assert removed == 1 and freed == listed[0]["bytes"]
    assert list(cache.entries()) == []
