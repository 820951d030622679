"""Uni-Mol encoder (unimol-tools) from local files: no downloads, the layer map, every strategy, conformer cache,
save / reload. The weights are a random-init checkpoint of the real shape (15 layers x 512, ~47M parameters)."""

from __future__ import annotations

import copy
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from unimol_weights import MOL_DICT_TOKENS, write_random_unimol

from headstart import FinetuneModule, LoraSpec, Strategy
from headstart.backbones import check_layer_map
from headstart.backbones.unimol import UniMolEncoder, build_unimol_encoder, unimol_dataset
from headstart.config import UniMolConfig
from headstart.data import conformers
from headstart.data.conformers import (
    UniMolDataset,
    collate_unimol,
    conformer_key,
    generate_conformers,
    load_unimol_dictionary,
)
from headstart.errors import CheckpointError, ConfigError, DataError
from headstart.optim import build_optimizer

SMILES = ["CCO", "c1ccccc1", "CC(=O)O"]
BLOCKS = ["stem", *(f"layers.{i}" for i in range(15)), "neck"]


@pytest.fixture(autouse=True, scope="module")
def _no_downloads():
    """Any unimol-tools download path fails the test (the machine is offline anyway: fail fast and loudly)."""
    import unimol_tools.data.conformer as unimol_conformer
    import unimol_tools.models.unimol as unimol_model
    import unimol_tools.weights.weighthub as hub

    def refuse(*args, **kwargs):
        pytest.fail(f"unimol-tools tried to download weights: {args} {kwargs}")

    with pytest.MonkeyPatch.context() as mp:
        for module, name in [(hub, "weight_download"), (hub, "weight_download_v2"), (hub, "snapshot_download"),
                             (hub, "_snapshot_download_with_fallback"), (unimol_model, "weight_download"),
                             (unimol_conformer, "weight_download")]:
            mp.setattr(module, name, refuse)
        yield


@pytest.fixture(scope="module")
def unimol_files(tmp_path_factory):
    return write_random_unimol(tmp_path_factory.mktemp("unimol"))


@pytest.fixture(scope="module")
def base_encoder(unimol_files) -> UniMolEncoder:
    return UniMolEncoder(unimol_files[0])  # dictionary: dict.txt beside the weights


@pytest.fixture
def encoder(base_encoder) -> UniMolEncoder:
    return copy.deepcopy(base_encoder)


@pytest.fixture(scope="module")
def batch(base_encoder, tmp_path_factory):
    ds = UniMolDataset(SMILES, np.array([0, 1, 0]), dictionary=base_encoder.dictionary,
                       cache_dir=tmp_path_factory.mktemp("conformers"))
    return collate_unimol([ds[i] for i in range(len(ds))], ds.pad_idx)


# ----- local files only --------------------------------------------------------------------------------
def test_missing_files_are_config_errors_that_say_where_to_get_them(tmp_path, unimol_files) -> None:
    absent = tmp_path / "weights" / "mol_pre_no_h_220816.pt"
    with pytest.raises(ConfigError) as err:
        build_unimol_encoder(UniMolConfig(weights=str(absent)))
    text = str(err.value)
    assert str(absent.resolve()) in text and "never downloads" in text
    assert "https://huggingface.co/dptech/Uni-Mol-Models" in text and "mol.dict.txt" in text
    assert "backbone.unimol.weights" in text and "backbone.unimol.dictionary" in text
    # weights present, dict.txt beside them missing
    lone = tmp_path / "lone" / "mol_pre_no_h_220816.pt"
    lone.parent.mkdir()
    lone.write_bytes(b"not read")
    with pytest.raises(ConfigError, match="token dictionary not found") as err:
        UniMolEncoder(lone)
    assert str(lone.parent / "dict.txt") in str(err.value)
    with pytest.raises(ConfigError, match=r"no_such_dict\.txt"):
        UniMolEncoder(unimol_files[0], tmp_path / "no_such_dict.txt")


def test_a_checkpoint_that_is_not_uni_mol_is_refused_and_a_hydrogen_mismatch_is_said(tmp_path, unimol_files,
                                                                                     caplog) -> None:
    other = tmp_path / "other.pt"
    torch.save({"model": {"backbone.weight": torch.zeros(2)}}, other)
    with pytest.raises(CheckpointError, match=r"lacks \d+ of the encoder's"):
        UniMolEncoder(other, unimol_files[1])
    UniMolEncoder(unimol_files[0], remove_hs=False)  # no_h weights fed with hydrogens: allowed, but said
    assert "look like no-hydrogen weights but remove_hs is False" in caplog.text


def test_dictionary_in_file_order_as_the_checkpoints_were_trained(unimol_files, base_encoder, tmp_path) -> None:
    # Uni-Core's numbering (pre-training); unimol-tools 0.1.6's Dictionary.load gives [CLS] 0, [PAD] 2 instead
    d = load_unimol_dictionary(unimol_files[1])
    assert (d.pad(), d.bos(), d.eos(), d.unk(), d.index("C"), d.index("[MASK]")) == (0, 1, 2, 3, 4, 30)
    assert len(d) == len(MOL_DICT_TOKENS) + 1
    shuffled = tmp_path / "dict.txt"
    shuffled.write_text("[CLS]\n[PAD]\n[SEP]\n[UNK]\nC\n")
    with pytest.raises(ConfigError, match=r"\[PAD\] at line 2, not first"):
        load_unimol_dictionary(shuffled)
    m = base_encoder.model
    assert m.padding_idx == 0 and m.embed_tokens.padding_idx == 0 and m.dictionary is base_encoder.dictionary
    assert base_encoder.load_report["missing"] == 0 and "lm_head.dense.weight" in base_encoder.load_report[
        "unexpected_keys"]


# ----- layer map and forward --------------------------------------------------------------------------
def test_layer_map_17_blocks_and_freeze_0_13_trains_the_last_two_layers_and_neck(encoder) -> None:
    blocks = encoder.blocks()
    assert [n for n, _ in blocks] == BLOCKS
    check_layer_map(encoder, blocks)
    assert not any(k.startswith("model.classification_head") for k in encoder.state_dict())
    assert 46e6 < sum(p.numel() for p in encoder.parameters()) < 49e6
    assert encoder.out_dim == 512 and encoder.describe()["blocks"] == BLOCKS
    model = FinetuneModule(encoder, 2, strategy=Strategy("partial", freeze="0-13"))
    trainable = [name for name, block in model._blocks if all(p.requires_grad for p in block.parameters())]
    frozen = [name for name, block in model._blocks if not any(p.requires_grad for p in block.parameters())]
    assert trainable == ["layers.13", "layers.14", "neck"] and frozen == BLOCKS[:14]
    assert Strategy("partial", train_last=3).static_frozen(17) == Strategy("partial", freeze="0-13").static_frozen(17)


def test_forward_is_unimol_tools_cls_repr_and_a_frozen_encoder_has_no_dropout(encoder, batch) -> None:
    inputs, _ = batch
    encoder.eval()
    with torch.no_grad():
        ours = encoder(inputs)
        theirs = encoder.model(**inputs, return_repr=True)
    assert ours.shape == (3, 512) and bool(inputs["src_tokens"].eq(0).any())  # the batch has padding
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)
    # Linear probe in train mode: every block in eval mode, embedding dropout included (unimol-tools ties it to
    # the whole encoder's mode, which stays in train mode here)
    probe = FinetuneModule(encoder, 2, strategy=Strategy("linear_probe")).train()
    assert probe.backbone.model.encoder.training
    with torch.no_grad():
        torch.testing.assert_close(probe.features(inputs), probe.features(inputs), rtol=0, atol=0)


# ----- strategies ------------------------------------------------------------------------------------
STRATEGIES = {
    "full": Strategy("full"),
    "linear_probe": Strategy("linear_probe"),
    "partial_0_13": Strategy("partial", freeze="0-13"),
    "gradual": Strategy("gradual", freeze_epochs=1, unfreeze_every=1),
    "lora": Strategy("lora", lora=LoraSpec(r=2, alpha=4, dropout=0.0)),
}


def _block_index(model: FinetuneModule) -> dict[str, int]:
    out: dict[str, int] = {}
    for i, (_, block) in enumerate(model._blocks):
        ids = {id(t) for t in block.parameters()}
        for key, value in model.state_dict(keep_vars=True).items():
            if id(value) in ids:
                out[key] = i
    return out


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_one_step_moves_exactly_the_trainable_weights(name: str, encoder, batch) -> None:
    strategy = STRATEGIES[name]
    torch.manual_seed(0)
    model = FinetuneModule(backbone=encoder, n_classes=2, strategy=strategy, lr=1e-2, weight_decay=0.0,
                           scheduler_type="none", dropout=0.0)
    n = len(model._blocks)
    groups, schedule = model.build_schedule(total_steps=2, steps_per_epoch=1)
    optimizer = build_optimizer(groups, "adamw")
    where = _block_index(model)
    inputs, labels = batch
    epochs = [0, 1] if strategy.name == "gradual" else [0]  # gradual: head only, then the neck (top block)
    for epoch in epochs:
        model.trainable_blocks = frozenset(strategy.trainable(epoch, n, model.block_names))
        model._apply_requires_grad()
        model.train()
        trainable = set(model.trainable_blocks)
        assert [block.training for _, block in model._blocks] == [i in trainable for i in range(n)]
        schedule.apply(optimizer, epoch, model.trainable_blocks)
        before = {k: v.detach().clone() for k, v in model.state_dict().items()}
        optimizer.zero_grad()
        model._loss(model(inputs, labels), labels).backward()
        optimizer.step()
        for key, value in model.state_dict().items():
            moved = not torch.equal(value, before[key])
            if key.startswith("head."):
                assert moved, key
                continue
            block = where.get(key)
            if block is None or "lora_A" in key:  # lora_A moves once lora_B is non-zero (B starts at 0)
                continue
            if block not in trainable:
                assert not moved, f"{name} epoch {epoch}: frozen {key} changed"
            elif strategy.uses_lora:
                assert moved is ("lora_B" in key), f"lora: {key} {'moved' if moved else 'did not move'}"
            else:
                assert moved, f"{name} epoch {epoch}: trainable {key} did not move"
    if name == "gradual":
        assert trainable == {n - 1}  # epoch 1 trains the neck only
    if strategy.uses_lora:  # headstart's generic targets: every Linear (attention in/out, FFN, distance head)
        adapted = {k.split(".lora_")[0].rsplit(".", 1)[-1] for k in model.state_dict() if "lora_B" in k}
        assert adapted == {"in_proj", "out_proj", "fc1", "fc2", "linear1", "linear2"}
        assert sum("lora_B" in k for k in model.state_dict()) == 15 * 4 + 2


def test_linear_probe_uses_the_pooled_feature_cache_and_partial_cannot(encoder, tmp_path, batch) -> None:
    from headstart.cache.features import cached_features, plan_cache
    from headstart.cache.store import FeatureCache

    probe = FinetuneModule(encoder, 2, strategy=Strategy("linear_probe"))
    plan, _ = plan_cache(probe, epochs=3)
    assert plan is not None and plan.kind == "pooled" and plan.cut == 17
    ds = UniMolDataset(SMILES, np.array([0, 1, 0]), dictionary=encoder.dictionary, cache_dir=tmp_path / "conf")
    entry, info = cached_features(FeatureCache(tmp_path / "features"), encoder, ds, ds.collator(), plan,
                                  batch_size=2)
    assert not info["hit"] and entry.n_rows == 3
    encoder.eval()
    with torch.no_grad():
        live = encoder(batch[0])
    torch.testing.assert_close(torch.from_numpy(np.asarray(entry.values)), live, rtol=1e-4, atol=1e-5)
    partial = FinetuneModule(copy.deepcopy(encoder), 2, strategy=Strategy("partial", freeze="0-13"))
    plan, why = plan_cache(partial, epochs=3)
    assert plan is None and "only fully frozen encoders" in why


# ----- save / reload ----------------------------------------------------------------------------------
def test_state_dict_roundtrip_gives_identical_outputs(encoder, batch, unimol_files, tmp_path) -> None:
    inputs, _ = batch
    with torch.no_grad():
        encoder.model.encoder.layers[14].fc2.bias.add_(0.5)  # not the pretrained weights any more
    path = tmp_path / "encoder.pt"
    torch.save(encoder.state_dict(), path)
    fresh = UniMolEncoder(None, unimol_files[1])  # random init, same dictionary
    fresh.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    encoder.eval()
    fresh.eval()
    with torch.no_grad():
        assert torch.equal(encoder(inputs), fresh(inputs))
    assert fresh.architecture() == encoder.architecture()


# ----- conformers and data ----------------------------------------------------------------------------
def test_conformer_cache_hit_runs_no_rdkit(tmp_path, monkeypatch, base_encoder) -> None:
    from unimol_tools.data import conformer as unimol_conformer

    calls: list[str] = []
    real = unimol_conformer.inner_smi2coords

    def counting(smi, *args, **kwargs):
        calls.append(smi)
        return real(smi, *args, **kwargs)

    monkeypatch.setattr(unimol_conformer, "inner_smi2coords", counting)
    first = UniMolDataset([*SMILES, "CCO"], dictionary=base_encoder.dictionary, cache_dir=tmp_path)
    assert sorted(calls) == sorted(SMILES)  # duplicates embedded once
    assert (first.conformer_stats.computed, first.conformer_stats.cached) == (3, 0)
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    keys = sorted(conformer_key(s, 42, True, "fast") for s in SMILES)
    assert files == [f"{k[:2]}/{k}.npz" for k in keys]

    def no_rdkit(*args, **kwargs):
        raise AssertionError("a cached conformer was embedded again")

    monkeypatch.setattr(conformers, "_embed", no_rdkit)
    calls.clear()
    second = UniMolDataset([*SMILES, "CCO"], dictionary=base_encoder.dictionary, cache_dir=tmp_path)
    assert not calls and (second.conformer_stats.computed, second.conformer_stats.cached) == (0, 3)
    for i in range(len(first)):
        a, b = first[i][0], second[i][0]
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert first.fingerprint() == second.fingerprint()


def test_failed_3d_embedding_falls_back_to_2d_and_is_counted(tmp_path, monkeypatch) -> None:
    from rdkit.Chem import AllChem

    monkeypatch.setattr(AllChem, "EmbedMolecule", lambda *args, **kwargs: -1)
    confs, stats = generate_conformers(["CCO", "c1ccccc1"], cache_dir=tmp_path)
    assert [c.status for c in confs] == ["2d", "2d"] and stats.fallback_2d == 2 and stats.failed == 0
    assert all(not c.coordinates[:, 2].any() and c.coordinates[:, :2].any() for c in confs)
    monkeypatch.undo()
    _, again = generate_conformers(["CCO"], cache_dir=tmp_path)  # the fallback is cached with its status
    assert (again.cached, again.fallback_2d) == (1, 1)


def test_unwritable_cache_warns_and_keeps_going(tmp_path, caplog) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    confs, stats = generate_conformers(["CCO"], cache_dir=blocker)
    assert stats.computed == 1 and confs[0].status == "3d" and "Cannot write the conformer cache" in caplog.text


def test_unreadable_smiles_is_a_data_error(tmp_path) -> None:
    with pytest.raises(DataError, match=r"1: 'not a smiles'"):
        generate_conformers(["CCO", "not a smiles"], cache_dir=tmp_path)


def test_dataset_labels_subset_fingerprint_crop_and_collate(tmp_path, base_encoder) -> None:
    d = base_encoder.dictionary
    targets = np.array([[0.5, np.nan], [1.0, 2.0], [np.nan, 3.0]], dtype=np.float32)
    ds = UniMolDataset(SMILES, targets, rows=[10, 11, 12], dictionary=d, cache_dir=tmp_path)
    assert ds.lengths.tolist() == [3, 6, 4] and ds.pad_idx == 0
    unlabelled = UniMolDataset(SMILES, dictionary=d, cache_dir=tmp_path)
    assert unlabelled.fingerprint() == ds.fingerprint()  # labels are not part of it
    assert UniMolDataset(SMILES[::-1], dictionary=d, cache_dir=tmp_path).fingerprint() != ds.fingerprint()
    sub = ds.subset([2, 0])
    assert sub.smiles == ["CC(=O)O", "CCO"] and sub.rows.tolist() == [12, 10]
    assert np.array_equal(sub[0][0]["src_distance"], ds[2][0]["src_distance"])
    inputs, labels = collate_unimol([ds[0], ds[1]], ds.pad_idx)
    assert labels.dtype == torch.float32 and labels.shape == (2, 2) and torch.isnan(labels[0, 1])
    tokens = inputs["src_tokens"]
    assert tokens.shape == (2, 8) and tokens[0, 5:].eq(0).all() and tokens[:, 0].eq(d.bos()).all()
    assert tokens[0, 4] == d.eos() and inputs["src_distance"][0, 5:].eq(0).all()
    assert inputs["src_edge_type"][0, 0, 1] == d.bos() * len(d) + d.index("C")
    assert collate_unimol([unlabelled[0]])[1] is None
    # molecules above max_atoms: a seeded random subset of atoms, the same every time
    small = UniMolDataset(["c1ccccc1O"], dictionary=d, cache_dir=tmp_path, max_atoms=4)
    again = UniMolDataset(["c1ccccc1O"], dictionary=d, cache_dir=tmp_path, max_atoms=4)
    assert small.lengths.tolist() == [4] and len(small[0][0]["src_tokens"]) == 6
    assert np.array_equal(small[0][0]["src_coord"], again[0][0]["src_coord"])
    assert small.preprocessing["max_atoms"] == 4 and small.fingerprint() != UniMolDataset(
        ["c1ccccc1O"], dictionary=d, cache_dir=tmp_path).fingerprint()


def test_unimol_dataset_follows_the_config(unimol_files, tmp_path) -> None:
    cfg = UniMolConfig(weights=str(unimol_files[0]), max_atoms=8, conformer_seed=7)
    ds = unimol_dataset(cfg, ["CCO", "c1ccccc1O"], np.array([0, 1]), cache_dir=tmp_path)
    assert ds.preprocessing["max_atoms"] == 8 and ds.preprocessing["conformer"]["seed"] == 7
    assert ds.dictionary.symbols == load_unimol_dictionary(unimol_files[1]).symbols
    assert len(list((tmp_path / "conformers").rglob("*.npz"))) == 2  # beside the feature cache, not in it


def test_parallel_conformers_equal_serial(tmp_path) -> None:
    serial, _ = generate_conformers(SMILES, cache_dir=tmp_path / "a", workers=1)
    parallel, stats = generate_conformers(SMILES, cache_dir=tmp_path / "b", workers=2)
    assert stats.computed == 3
    for a, b in zip(serial, parallel, strict=True):
        assert a.status == b.status and np.array_equal(a.atoms, b.atoms)
        assert np.array_equal(a.coordinates, b.coordinates)


def test_importing_unimol_tools_leaves_the_process_as_it_was(tmp_path) -> None:
    """unimol-tools' import ignores all warnings, sets the root logger to NOTSET, silences RDKit, adds handlers
    and creates ./logs: import_unimol_tools undoes each (checked in a fresh interpreter)."""
    script = textwrap.dedent("""
        import logging, warnings
        from pathlib import Path
        from rdkit import rdBase
        from headstart.data.conformers import import_unimol_tools
        before = (logging.root.level, list(warnings.filters), rdBase.LogStatus())
        import_unimol_tools()
        assert (logging.root.level, list(warnings.filters), rdBase.LogStatus()) == before
        assert not logging.getLogger("Uni-Mol Tools").handlers
        assert not Path("logs").exists()
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
