"""Weights I/O: atomic safetensors writes, safe reads, prefix-aligned encoder loading with a key report."""

from __future__ import annotations

import json
import os

import pytest
import torch
from torch import nn

from conftest import TinyEncoder, quiet_trainer, tiny_loaders
from headstart import CheckpointError, FinetuneModule
from headstart.fileio import atomic_write_text, content_digest
from headstart.train.checkpoint import match_state_dict, read_state_dict, save_weights


def _tensors(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"a.weight": torch.randn(3, 4, generator=g), "a.bias": torch.randn(3, generator=g),
            "bn.num_batches_tracked": torch.tensor(7)}


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


# ----- save_weights -------------------------------------------------------------------------------
def test_save_weights_atomic_with_sidecar(tmp_path) -> None:
    path = tmp_path / "ckpt" / "best.safetensors"
    save_weights(_tensors(), path, sidecar={"epoch": 3, "classes": ["neg", "pos"]})
    assert sorted(p.name for p in path.parent.iterdir()) == ["best.json", "best.safetensors"]
    side = json.loads((path.parent / "best.json").read_text())
    assert side["content"] == content_digest(path)  # the digest every read verifies
    assert {k: v for k, v in side.items() if k != "content"} == {"epoch": 3, "classes": ["neg", "pos"]}
    _assert_same(read_state_dict(path), _tensors())
    # Overwrite in place: still no temp file left behind.
    save_weights(_tensors(1), path)
    assert sorted(p.name for p in path.parent.iterdir()) == ["best.json", "best.safetensors"]
    _assert_same(read_state_dict(path), _tensors(1))
    umask = os.umask(0)
    os.umask(umask)
    for written in (path, path.with_suffix(".json")):  # what a plain open() gives, not mkstemp's 0600
        assert written.stat().st_mode & 0o777 == 0o666 & ~umask, written.name


def test_save_weights_failure_keeps_the_old_file(tmp_path, monkeypatch) -> None:
    import safetensors.torch

    path = tmp_path / "last.safetensors"
    save_weights(_tensors(), path)
    before = path.read_bytes()

    def crash(tensors, filename, metadata=None):
        with open(filename, "wb") as fh:
            fh.write(b"half-written")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", crash)
    with pytest.raises(OSError, match="disk full"):
        save_weights(_tensors(1), path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.json", "last.safetensors"]
    _assert_same(read_state_dict(path), _tensors())  # the old pair still verifies


def test_save_weights_shared_storage(tmp_path) -> None:
    # Tied weights and views into one buffer (at different offsets) are stored as separate copies.
    flat = torch.arange(12.0)
    emb = torch.randn(5, 4)
    state = {"emb.weight": emb, "decoder.weight": emb, "w": flat[:6].view(2, 3), "b": flat[6:]}
    save_weights(state, tmp_path / "tied.safetensors")
    _assert_same(read_state_dict(tmp_path / "tied.safetensors"), {k: v.clone() for k, v in state.items()})


def test_atomic_write_text(tmp_path) -> None:
    atomic_write_text(tmp_path / "sub" / "x.json", "{}")
    atomic_write_text(tmp_path / "sub" / "x.json", '{"a": 1}')
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["x.json"]
    assert (tmp_path / "sub" / "x.json").read_text() == '{"a": 1}'


# ----- read_state_dict ----------------------------------------------------------------------------
def test_read_state_dict_formats(tmp_path) -> None:
    state = _tensors()
    save_weights(state, tmp_path / "w.safetensors")
    torch.save(state, tmp_path / "plain.pt")
    torch.save({"state_dict": state, "epoch": 4, "global_step": 10, "hyper_parameters": {"lr": 0.1}},
               tmp_path / "lightning.ckpt")
    for name in ("w.safetensors", "plain.pt", "lightning.ckpt"):
        _assert_same(read_state_dict(tmp_path / name), state)
    # A run directory / folder with model.safetensors.
    (tmp_path / "run").mkdir()
    save_weights(state, tmp_path / "run" / "model.safetensors")
    _assert_same(read_state_dict(tmp_path / "run"), state)


def test_read_real_lightning_checkpoint(tmp_path) -> None:
    from pytorch_lightning.callbacks import ModelCheckpoint

    torch.manual_seed(0)
    model = FinetuneModule(TinyEncoder(), 2)
    train, val = tiny_loaders(n_train=16, n_val=8)
    quiet_trainer(1, [ModelCheckpoint(dirpath=tmp_path, filename="model_a")], enable_checkpointing=True,
                  limit_train_batches=1).fit(model, train, val)
    state = read_state_dict(tmp_path / "model_a.ckpt")
    assert set(state) == set(model.state_dict())
    _assert_same(state, dict(model.state_dict()))


class Pickled:
    def __init__(self) -> None:
        self.weight = torch.ones(2)


def test_read_refuses_pickled_objects(tmp_path) -> None:
    torch.save(Pickled(), tmp_path / "obj.pt")
    with pytest.raises(CheckpointError) as err:
        read_state_dict(tmp_path / "obj.pt")
    msg = str(err.value)
    assert "weights_only=True" in msg and "Pickled" in msg
    assert "never unpickles arbitrary objects" in msg and "torch.save(model.state_dict(), path)" in msg
    torch.save({"w": torch.ones(1), "step": 3}, tmp_path / "mixed.pt")
    with pytest.raises(CheckpointError, match="non-tensor values under 'step'"):
        read_state_dict(tmp_path / "mixed.pt")


def test_read_errors(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        read_state_dict(tmp_path / "nope.ckpt")
    (tmp_path / "bad.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        read_state_dict(tmp_path / "bad.safetensors")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(CheckpointError, match=r"directory without model\.safetensors"):
        read_state_dict(tmp_path / "empty_dir")


# ----- match_state_dict ---------------------------------------------------------------------------
def test_match_strips_source_prefix_and_adds_target_prefix() -> None:
    w, b = torch.randn(4, 3), torch.randn(4)
    source = {"seq_encoder.x.weight": w, "seq_encoder.x.bias": b, "seq_encoder.y.weight": torch.randn(5, 4),
              "head.fc.weight": torch.randn(2, 4)}
    target = {"module.x.weight": torch.zeros(4, 3), "module.x.bias": torch.zeros(4),
              "module.y.weight": torch.zeros(2, 4), "module.z.weight": torch.zeros(1)}
    report, mapped = match_state_dict(target, source)
    assert (report.source_prefix, report.target_prefix) == ("seq_encoder.", "module.")
    assert sorted(report.matched) == ["module.x.bias", "module.x.weight"]
    assert report.shape_mismatched == [("module.y.weight", (5, 4), (2, 4))]
    assert report.missing == ["module.z.weight"]
    assert report.unexpected == ["head.fc.weight"]
    assert mapped.keys() == {"module.x.weight", "module.x.bias"}
    assert mapped["module.x.weight"] is w
    text = report.format()
    assert "2 matched, 1 missing, 1 unexpected, 1 shape-mismatched" in text
    assert "'seq_encoder.' (checkpoint) -> 'module.' (model)" in text
    assert "module.y.weight ckpt[5, 4] vs model[2, 4]" in text


@pytest.mark.parametrize(("src", "tgt"), [("model.", ""), ("", "model.")])
def test_match_one_side_prefix(src: str, tgt: str) -> None:
    keys = ["encoder.layer.0.weight", "encoder.layer.1.weight", "encoder.norm.bias"]
    source = {src + k: torch.full((2,), float(i)) for i, k in enumerate(keys)}
    target = {tgt + k: torch.zeros(2) for k in keys}
    report, mapped = match_state_dict(target, source)
    assert (report.source_prefix, report.target_prefix) == (src, tgt)
    assert sorted(report.matched) == sorted(tgt + k for k in keys)
    assert report.missing == [] and report.unexpected == [] and report.shape_mismatched == []
    assert torch.equal(mapped[tgt + "encoder.norm.bias"], torch.full((2,), 2.0))


def test_match_identical_keys_need_no_prefix() -> None:
    state = _tensors()
    report, _ = match_state_dict({k: torch.zeros_like(v) for k, v in state.items()}, state)
    assert (report.source_prefix, report.target_prefix) == ("", "")
    assert sorted(report.matched) == sorted(state) and not report.missing and not report.unexpected


def test_match_never_aligns_unrelated_leaf_names() -> None:
    # Stripping a module path down to "weight" and re-prefixing it with another path must not count.
    target = {"module.stem.weight": torch.zeros(8), "module.norm.weight": torch.zeros(8),
              "module.norm.bias": torch.zeros(8)}
    source = {"unrelated_model.final_gate.weight": torch.ones(8)}
    report, mapped = match_state_dict(target, source)
    assert report.matched == [] and mapped == {}
    assert report.unexpected == ["unrelated_model.final_gate.weight"]


@pytest.mark.parametrize("src", ["", "model."])
def test_match_single_module_behind_a_wrapper(src: str) -> None:
    # A checkpoint of a bare GRU (keys are leaf names) still loads into TorchBackbone(GRU): "module." + leaf.
    gru = nn.GRU(3, 4)
    source = {src + k: v for k, v in gru.state_dict().items()}
    target = {"module." + k: torch.zeros_like(v) for k, v in gru.state_dict().items()}
    report, _ = match_state_dict(target, source)
    assert sorted(report.matched) == sorted(target) and not report.missing and not report.unexpected


# ----- FinetuneModule.load_pretrained_encoder -----------------------------------------------------
def _module(seed: int) -> FinetuneModule:
    torch.manual_seed(seed)
    return FinetuneModule(TinyEncoder(), 2, head_hidden_dims=[4])


def test_load_pretrained_encoder_from_headstart_weights(tmp_path, capsys) -> None:
    a, b = _module(0), _module(1)
    save_weights(a.weights_state(), tmp_path / "model_a.safetensors")
    head_before = {k: v.clone() for k, v in b.head.state_dict().items()}
    report = b.load_pretrained_encoder(tmp_path / "model_a.safetensors", strict=False)
    out = capsys.readouterr().out
    assert "Encoder key report: 10 matched, 0 missing" in out
    assert "'backbone.' (checkpoint) -> '' (model)" in out
    assert "unexpected (ignored): head." in out
    assert len(report.matched) == 10 and not report.missing
    _assert_same(dict(b.backbone.state_dict()), dict(a.backbone.state_dict()))
    _assert_same(dict(b.head.state_dict()), head_before)  # the head is not touched


def test_load_pretrained_encoder_ptls_style_prefix(tmp_path, capsys) -> None:
    # A ptls pretraining module keeps its encoder under `_seq_encoder.` next to its own head.
    a, b = _module(0), _module(1)
    enc = a.backbone.module.state_dict()
    ckpt = {f"_seq_encoder.{k}": v for k, v in enc.items() if not k.startswith("norm.")}
    ckpt["_head.linear.weight"] = torch.randn(3, 8)
    torch.save({"state_dict": ckpt, "epoch": 9}, tmp_path / "coles.ckpt")
    norm_before = b.backbone.module.norm.weight.detach().clone()
    report = b.load_pretrained_encoder(tmp_path / "coles.ckpt", strict=False)
    out = capsys.readouterr().out
    assert "8 matched, 2 missing, 1 unexpected, 0 shape-mismatched" in out
    assert "missing (kept as initialised): module.norm.weight, module.norm.bias" in out
    assert report.unexpected == ["_head.linear.weight"]
    for k in ckpt:
        if k.startswith("_seq_encoder."):
            assert torch.equal(b.backbone.state_dict()["module." + k[len("_seq_encoder."):]], ckpt[k])
    assert torch.equal(b.backbone.module.norm.weight, norm_before)

    with pytest.raises(CheckpointError) as err:
        b.load_pretrained_encoder(tmp_path / "coles.ckpt", strict=True)
    msg = str(err.value)
    assert "strict loading" in msg and "module.norm.weight" in msg and "strict=False" in msg


def test_load_pretrained_encoder_shape_mismatch(tmp_path, capsys) -> None:
    a = _module(0)
    save_weights(a.weights_state(), tmp_path / "a.safetensors")
    torch.manual_seed(1)
    other_input = FinetuneModule(TinyEncoder(in_dim=5), 2)
    stem_before = other_input.backbone.module.stem.weight.detach().clone()
    report = other_input.load_pretrained_encoder(tmp_path / "a.safetensors", strict=False, verbose=False)
    assert capsys.readouterr().out == ""
    assert report.shape_mismatched == [("module.stem.weight", (8, 6), (8, 5))]
    assert len(report.matched) == 9 and report.missing == []
    assert torch.equal(other_input.backbone.module.stem.weight, stem_before)
    assert torch.equal(other_input.backbone.module.norm.weight, a.backbone.module.norm.weight)
    with pytest.raises(CheckpointError, match="1 shape-mismatched"):
        other_input.load_pretrained_encoder(tmp_path / "a.safetensors", strict=True)

    # Every key aligns by name but no shape fits: say so, rather than "no key matches".
    torch.manual_seed(1)
    wide = FinetuneModule(TinyEncoder(width=12), 2)
    with pytest.raises(CheckpointError) as err:
        wide.load_pretrained_encoder(tmp_path / "a.safetensors")
    msg = str(err.value)
    assert "align by name but every shape differs" in msg
    assert "module.blocks.0.0.weight ckpt[8, 8] vs model[12, 12]" in msg


def test_load_pretrained_encoder_nothing_matches(tmp_path) -> None:
    b = _module(0)
    torch.save({"foo.weight": torch.ones(2), "bar.bias": torch.ones(3)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError) as err:
        b.load_pretrained_encoder(tmp_path / "other.pt")
    msg = str(err.value)
    assert "No key of the checkpoint" in msg and "even after aligning prefixes" in msg
    assert "'foo.weight'" in msg and "'module.stem.weight'" in msg


def test_load_pretrained_encoder_into_unrelated_module_reports(tmp_path) -> None:
    # Loading by module (no FinetuneModule): the same function the CLI --pretrain uses.
    from headstart.train.checkpoint import load_encoder_weights

    src = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 2))
    torch.save({"model." + k: v for k, v in src.state_dict().items()}, tmp_path / "seq.pt")
    dst = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 2))
    report = load_encoder_weights(dst, tmp_path / "seq.pt", strict=True)
    assert sorted(report.matched) == ["0.bias", "0.weight", "1.bias", "1.weight"]
    _assert_same(dict(dst.state_dict()), dict(src.state_dict()))


# ----- Lightning checkpoints ------------------------------------------------------------------------
def test_lightning_checkpoint_is_streamed_to_disk_atomically(tmp_path, monkeypatch) -> None:
    import io

    from headstart.train.callbacks import AtomicCheckpointIO

    checkpoint = {"state_dict": _tensors(), "epoch": 2}
    path = tmp_path / "ckpts" / "last.ckpt"
    targets: list[type] = []
    real_save = torch.save

    def spy(obj, f, *args, **kwargs):
        targets.append(type(f))
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", spy)
    AtomicCheckpointIO().save_checkpoint(checkpoint, path)
    assert targets and not any(issubclass(t, io.BytesIO) for t in targets)  # never the whole file in memory
    loaded = torch.load(path, weights_only=True)
    _assert_same(loaded["state_dict"], _tensors())
    assert loaded["epoch"] == 2

    def broken(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken)
    with pytest.raises(OSError, match="disk full"):
        AtomicCheckpointIO().save_checkpoint({"epoch": 3}, path)
    assert torch.load(path, weights_only=True)["epoch"] == 2  # the previous checkpoint is intact
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt", "last.json"]
    assert AtomicCheckpointIO().load_checkpoint(path)["epoch"] == 2  # and still verifies
