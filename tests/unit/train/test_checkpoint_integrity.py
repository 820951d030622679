"""Damaged, foreign and hostile weights files are refused with one clear error; shared frozen weights survive
moving, copying and deleting the store.

Damage is always written as a NEW file (read, modify, unlink, write): a run's frozen.safetensors may be a
hard link into the weights store, and writing it in place would damage every run that shares it.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from conftest import tiny_run_config, write_text_csv
from headstart.cli.main import main
from headstart.config import load_config
from headstart.errors import CheckpointError
from headstart.experiments.fit import run_fit
from headstart.fileio import content_digest
from headstart.train.callbacks import AtomicCheckpointIO
from headstart.train.checkpoint import (
    FROZEN_WEIGHTS,
    read_state_dict,
    save_weights,
    sidecar_path,
    verify_file,
)

DAMAGES = ("flip", "zero", "truncate")


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HEADSTART_DEBUG", raising=False)


def _damage(path: Path, how: str, at: int | None = None) -> None:
    """One flipped byte, a zeroed block in the middle, or the first half only; written as a new file."""
    data = bytearray(path.read_bytes())
    n = len(data)
    if how == "flip":
        i = n // 2 if at is None else at
        data[i] ^= 0xFF
    elif how == "zero":
        data[n // 2 - 32:n // 2 + 32] = bytes(64)
    elif how == "truncate":
        data = data[:n // 2]
    else:
        raise ValueError(how)
    assert bytes(data) != path.read_bytes(), f"{how} changed nothing in {path.name}"
    path.unlink()
    path.write_bytes(bytes(data))


def _tensors(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"enc.weight": torch.randn(16, 16, generator=g), "enc.bias": torch.randn(16, generator=g),
            "head.weight": torch.randn(2, 16, generator=g)}


def _assert_damaged(err: pytest.ExceptionInfo, path: Path, how: str) -> str:
    text = str(err.value)
    assert f"'{path}' is damaged" in text, text
    assert f"digest recorded in '{sidecar_path(path).name}'" in text, text
    assert ("truncated or extended" in text) == (how == "truncate"), text
    assert ("same size" in text) == (how != "truncate"), text
    return text


def _cli_fails(capsys: pytest.CaptureFixture[str], argv: list, *facts: str) -> str:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert code == 2, f"exit code {code}; stderr: {err}"
    assert err.startswith("error:"), err
    assert "Traceback" not in out + err, err
    message = err.removeprefix("error:").strip()
    assert "\n\n" not in message, f"not one paragraph: {message}"
    missing = [f for f in facts if f not in message]
    assert not missing, f"{missing} not in message: {message}"
    return message


# ----- best (safetensors) without training -----------------------------------------------------------
@pytest.mark.parametrize("how", DAMAGES)
def test_damaged_safetensors_is_refused(tmp_path, how) -> None:
    path = tmp_path / "best.safetensors"
    save_weights(_tensors(), path, sidecar={"epoch": 1})
    _damage(path, how)
    with pytest.raises(CheckpointError) as err:
        read_state_dict(path)
    _assert_damaged(err, path, how)
    with pytest.raises(CheckpointError, match="is damaged"):
        verify_file(path)


def test_flipped_tensor_byte_would_load_silently_without_the_digest(tmp_path) -> None:
    """The case the digest exists for: a flipped byte in tensor data still parses as safetensors."""
    from safetensors.torch import load_file

    path = tmp_path / "best.safetensors"
    save_weights(_tensors(), path)
    _damage(path, "flip", at=path.stat().st_size - 1)  # the last byte of the last tensor's data
    loaded = load_file(str(path))  # safetensors itself does not notice
    assert loaded.keys() == _tensors().keys()
    assert any(not torch.equal(loaded[k], v) for k, v in _tensors().items())
    with pytest.raises(CheckpointError) as err:
        read_state_dict(path)
    _assert_damaged(err, path, "flip")


@pytest.mark.parametrize("how", DAMAGES)
def test_damaged_frozen_file_is_refused_through_the_linking_file(tmp_path, how) -> None:
    frozen, best = tmp_path / FROZEN_WEIGHTS, tmp_path / "best.safetensors"
    tensors = _tensors()
    save_weights({k: v for k, v in tensors.items() if k.startswith("enc.")}, frozen)
    save_weights({"head.weight": tensors["head.weight"]}, best, links=[FROZEN_WEIGHTS])
    assert read_state_dict(best).keys() == tensors.keys()  # merged back while intact
    _damage(frozen, how)
    with pytest.raises(CheckpointError) as err:
        read_state_dict(best)
    text = _assert_damaged(err, frozen, how)
    assert f"checkpoint '{best}': its frozen weights '{frozen}'" in text


def test_damaged_sidecar_cannot_vouch_for_the_file(tmp_path) -> None:
    path = tmp_path / "best.safetensors"
    save_weights(_tensors(), path)
    sidecar_path(path).write_text("{not json", encoding="utf-8")
    with pytest.raises(CheckpointError) as err:
        read_state_dict(path)
    assert f"'{path}': its sidecar 'best.json' is not readable JSON" in str(err.value)


# ----- a run's own files need their sidecar; foreign weights do not -------------------------------------
def _run_checkpoints(tmp_path: Path) -> Path:
    """The layout ``fit`` makes: config.yaml and labels.json beside checkpoints/."""
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text("{}", encoding="utf-8")
    (run / "labels.json").write_text("{}", encoding="utf-8")
    return run / "checkpoints"


def _assert_missing_sidecar(err: pytest.ExceptionInfo, path: Path) -> str:
    text = str(err.value)
    side = sidecar_path(path)
    facts = [f"'{path}' cannot be verified", f"its sidecar '{side.name}', which records the file's digest, is missing",
             f"looked for {side}", f"Restore '{side.name}' from where the run was copied", "rerun the fit"]
    missing = [f for f in facts if f not in text]
    assert not missing, f"{missing} not in message: {text}"
    return text


def test_missing_sidecar_of_a_run_checkpoint_is_refused(tmp_path) -> None:
    best = _run_checkpoints(tmp_path) / "best.safetensors"
    save_weights(_tensors(), best, sidecar={"epoch": 1})
    sidecar_path(best).unlink()
    with pytest.raises(CheckpointError) as err:
        read_state_dict(best)  # found by its place in a run directory
    text = _assert_missing_sidecar(err, best)
    assert "before digest sidecars" not in text  # best.json was always written: no older-version case
    with pytest.raises(CheckpointError):
        verify_file(best)
    with pytest.raises(CheckpointError):
        read_state_dict(best.parent.parent / "checkpoints")  # a directory resolves to the same file
    assert read_state_dict(best, require_sidecar=False).keys() == _tensors().keys()  # the caller's word wins
    top = best.parent / "top" / "epoch=002-val_loss=0.5000.safetensors"  # a top-k file
    save_weights(_tensors(), top, sidecar={"epoch": 2})
    sidecar_path(top).unlink()
    with pytest.raises(CheckpointError) as err:
        read_state_dict(top)
    _assert_missing_sidecar(err, top)


def test_require_sidecar_is_explicit_outside_a_run_directory(tmp_path) -> None:
    path = tmp_path / "best.safetensors"
    save_weights(_tensors(), path)
    sidecar_path(path).unlink()
    assert read_state_dict(path).keys() == _tensors().keys()  # not in a run directory: foreign weights
    with pytest.raises(CheckpointError) as err:
        read_state_dict(path, where="The run's best weights", require_sidecar=True)
    assert str(err.value).startswith(f"The run's best weights '{path}' cannot be verified")


def test_missing_frozen_sidecar_is_refused_through_the_linking_file(tmp_path) -> None:
    """frozen.safetensors is only ever a run's own file: its sidecar is required wherever it lies."""
    frozen, best = tmp_path / FROZEN_WEIGHTS, tmp_path / "best.safetensors"
    tensors = _tensors()
    save_weights({k: v for k, v in tensors.items() if k.startswith("enc.")}, frozen)
    save_weights({"head.weight": tensors["head.weight"]}, best, links=[FROZEN_WEIGHTS])
    sidecar_path(frozen).unlink()
    with pytest.raises(CheckpointError) as err:
        read_state_dict(best)
    text = _assert_missing_sidecar(err, frozen)
    assert f"checkpoint '{best}': its frozen weights '{frozen}'" in text and "'frozen.json'" in text
    assert "before digest sidecars wrote frozen.safetensors without one" in text


def test_missing_last_sidecar_is_refused_on_resume(tmp_path) -> None:
    last = _run_checkpoints(tmp_path) / "last.ckpt"
    _lightning_ckpt(last)
    sidecar_path(last).unlink()
    with pytest.raises(CheckpointError) as err:
        AtomicCheckpointIO().load_checkpoint(last)
    text = _assert_missing_sidecar(err, last)
    assert text.startswith("The training state being resumed (--resume)") and "'last.json'" in text


def test_runs_of_versions_before_digest_sidecars_still_load(tmp_path) -> None:
    """Before digest sidecars, best.json held no digest and frozen.safetensors / last.ckpt had no sidecar."""
    ckpts = _run_checkpoints(tmp_path)
    frozen, best, last = ckpts / FROZEN_WEIGHTS, ckpts / "best.safetensors", ckpts / "last.ckpt"
    tensors = _tensors()
    save_weights({k: v for k, v in tensors.items() if k.startswith("enc.")}, frozen)
    save_weights({"head.weight": tensors["head.weight"]}, best, links=[FROZEN_WEIGHTS])
    _lightning_ckpt(last)
    sidecar_path(frozen).unlink()
    sidecar_path(last).unlink()
    sidecar_path(best).write_text(json.dumps({"epoch": 1, "monitor": "val_loss"}), encoding="utf-8")  # old style
    assert read_state_dict(best).keys() == tensors.keys()
    assert AtomicCheckpointIO().load_checkpoint(last)["epoch"] == 1
    save_weights({"head.weight": tensors["head.weight"]}, best, links=[FROZEN_WEIGHTS])  # a digest: this version
    with pytest.raises(CheckpointError) as err:
        read_state_dict(best)
    _assert_missing_sidecar(err, frozen)


def test_foreign_weights_without_a_sidecar_still_load(tmp_path) -> None:
    from safetensors.torch import save_file

    from headstart.train.checkpoint import load_encoder_weights

    weights = tmp_path / "encoder.safetensors"
    save_file({k: v for k, v in _tensors().items() if k.startswith("enc.")}, str(weights))
    torch.save(_tensors(), tmp_path / "encoder.pt")
    assert read_state_dict(weights).keys() == {"enc.weight", "enc.bias"}
    assert read_state_dict(tmp_path / "encoder.pt").keys() == _tensors().keys()
    module = torch.nn.Module()
    module.enc = torch.nn.Linear(16, 16)
    report = load_encoder_weights(module, weights)
    assert sorted(report.matched) == ["enc.bias", "enc.weight"]
    assert torch.equal(module.enc.weight.detach(), _tensors()["enc.weight"])


# ----- last (Lightning checkpoint) without training ----------------------------------------------------
def _lightning_ckpt(path: Path) -> dict:
    checkpoint = {"state_dict": _tensors(), "epoch": 1, "global_step": 12, "optimizer_states": [],
                  "loops": {"fit_loop": {"epoch_progress": {"current": {"completed": 2}}}}}
    AtomicCheckpointIO().save_checkpoint(checkpoint, path)
    return checkpoint


def test_atomic_checkpoint_roundtrip_and_sidecar(tmp_path) -> None:
    path = tmp_path / "last.ckpt"
    written = _lightning_ckpt(path)
    side = json.loads(sidecar_path(path).read_text(encoding="utf-8"))
    assert side["epoch"] == 2 and side["global_step"] == 12 and side["content"] == content_digest(path)
    loaded = AtomicCheckpointIO().load_checkpoint(path)
    assert loaded["epoch"] == 1 and all(torch.equal(loaded["state_dict"][k], v)
                                        for k, v in written["state_dict"].items())


@pytest.mark.parametrize("how", DAMAGES)
def test_damaged_lightning_checkpoint_is_refused(tmp_path, how) -> None:
    path = tmp_path / "last.ckpt"
    _lightning_ckpt(path)
    _damage(path, how)
    with pytest.raises(CheckpointError) as err:
        AtomicCheckpointIO().load_checkpoint(path, weights_only=False)
    text = _assert_damaged(err, path, how)
    assert text.startswith("The training state being resumed (--resume)")


class Evil:
    """Unpickling this runs ``touch <marker>``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _pickle_payload(path: Path, marker: Path) -> None:
    """A last.ckpt that runs code when unpickled, with a sidecar digest that vouches for it."""
    side = json.loads(sidecar_path(path).read_text(encoding="utf-8")) if sidecar_path(path).exists() else {}
    path.unlink(missing_ok=True)
    torch.save({"state_dict": {}, "epoch": 1, "global_step": 1, "evil": Evil(marker)}, path)
    side["content"] = content_digest(path)
    side.pop("previous_content", None)
    sidecar_path(path).write_text(json.dumps(side), encoding="utf-8")
    verify_file(path)  # the digest matches: only weights_only stands between the file and the shell


def test_pickle_payload_checkpoint_is_not_executed(tmp_path) -> None:
    path, marker = tmp_path / "last.ckpt", tmp_path / "pwned"
    _lightning_ckpt(path)
    _pickle_payload(path, marker)
    for weights_only in (None, False, True):  # whatever Lightning asks for
        with pytest.raises(CheckpointError) as err:
            AtomicCheckpointIO().load_checkpoint(path, weights_only=weights_only)
        text = str(err.value)
        assert "pickled" in text and "torch.load(weights_only=True)" in text and "weights_only=False" not in text
        assert not marker.exists()
    # The payload is live: an unsafe load would have run it.
    live = tmp_path / "live"
    _pickle_payload(path, live)
    torch.load(path, weights_only=False)
    assert live.exists()


# ----- the crash window between the two renames --------------------------------------------------------
def test_sidecar_renamed_but_not_the_file_still_verifies(tmp_path, monkeypatch) -> None:
    """A crash after the new sidecar but before the new file leaves the old file; it must still load."""
    path = tmp_path / "best.safetensors"
    save_weights(_tensors(0), path)
    digest_a = content_digest(path)
    real_replace = os.replace

    def crash_on_the_weights(src, dst):
        if Path(dst) == path:
            raise OSError("power cut")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash_on_the_weights)
    with pytest.raises(OSError, match="power cut"):
        save_weights(_tensors(1), path)
    monkeypatch.undo()
    side = json.loads(sidecar_path(path).read_text(encoding="utf-8"))
    assert side["previous_content"] == digest_a and side["content"] != digest_a  # the new sidecar, old file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.json", "best.safetensors"]  # no temp left
    state = read_state_dict(path)
    assert all(torch.equal(state[k], v) for k, v in _tensors(0).items())


def test_crash_window_built_by_hand(tmp_path) -> None:
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    save_weights(_tensors(0), a)
    save_weights(_tensors(1), b)
    digest_a, digest_b = content_digest(a), content_digest(b)
    sidecar_path(a).write_text(json.dumps({"content": digest_b, "previous_content": digest_a}), encoding="utf-8")
    verify_file(a)  # old file, new sidecar: vouched for by previous_content
    shutil.copyfile(b, tmp_path / "b2.safetensors")
    sidecar_path(tmp_path / "b2.safetensors").write_text(sidecar_path(a).read_text(encoding="utf-8"))
    verify_file(tmp_path / "b2.safetensors")  # new file, new sidecar
    c = tmp_path / "c.safetensors"
    save_weights(_tensors(2), c)
    sidecar_path(c).write_text(sidecar_path(a).read_text(encoding="utf-8"))
    with pytest.raises(CheckpointError) as err:
        read_state_dict(c)
    assert f"'{c}' is damaged" in str(err.value)


# ----- a finished linear-probe run: best, frozen and last through the CLI -----------------------------
@pytest.fixture(scope="module")
def probe_run(tmp_path_factory: pytest.TempPathFactory, tiny_hf_dir: Path) -> tuple[dict, Path]:
    tmp = tmp_path_factory.mktemp("probe")
    raw = tiny_run_config(tmp, tiny_hf_dir, strategy={"name": "linear_probe"},
                          trainer={"epochs": 2, "limit_train_batches": 2})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HEADSTART_WEIGHTS_DIR", str(tmp / "weights"))
        result = run_fit(load_config(None, raw=raw), verbose=False, keep_last=True)
    assert result.summary["frozen_weights"] == "shared"
    assert (result.run_dir / "checkpoints" / "last.ckpt").exists()
    return raw, result.run_dir


def _copy(run: Path, tmp_path: Path) -> Path:
    """An independent copy (copytree copies bytes: the frozen file is no longer linked to the store)."""
    copy = Path(shutil.copytree(run, tmp_path / "run"))
    assert (copy / "checkpoints" / FROZEN_WEIGHTS).stat().st_nlink == 1
    return copy


@pytest.mark.parametrize("how", DAMAGES)
@pytest.mark.parametrize("which", ["best.safetensors", FROZEN_WEIGHTS])
def test_evaluate_refuses_damaged_run_weights(probe_run, tmp_path, capsys, which, how) -> None:
    run = _copy(probe_run[1], tmp_path)
    data = write_text_csv(tmp_path / "holdout.csv", 6)
    assert main(["evaluate", str(run), "--data", str(data)]) == 0
    capsys.readouterr()
    damaged = run / "checkpoints" / which
    _damage(damaged, how)
    message = _cli_fails(capsys, ["evaluate", run, "--data", data], f"'{damaged}' is damaged",
                         f"digest recorded in '{sidecar_path(damaged).name}'", "refuses")
    if which == FROZEN_WEIGHTS:
        assert "its frozen weights" in message and str(run / "checkpoints" / "best.safetensors") in message


def _resume_config(raw: dict, run: Path, tmp_path: Path) -> Path:
    cfg = tmp_path / "resume.yaml"
    cfg.write_text(yaml.safe_dump({**raw, "output_dir": str(run)}), encoding="utf-8")
    return cfg


@pytest.mark.parametrize("how", DAMAGES)
def test_resume_refuses_a_damaged_last_checkpoint(probe_run, tmp_path, capsys, how) -> None:
    raw, original = probe_run
    run = _copy(original, tmp_path)
    last = run / "checkpoints" / "last.ckpt"
    _damage(last, how)
    damaged = last.read_bytes()
    _cli_fails(capsys, ["fit", _resume_config(raw, run, tmp_path), "--resume", "--epochs", "3"],
               "The training state being resumed (--resume)", f"'{last}' is damaged", "last.json")
    assert last.read_bytes() == damaged  # a refused resume leaves the run as it was
    assert json.loads((run / "summary.json").read_text(encoding="utf-8"))["epochs_run"] == 2
    assert (run / ".headstart.lock").read_bytes() == b""


def test_resume_refuses_a_pickle_payload_and_runs_nothing(probe_run, tmp_path, capsys) -> None:
    raw, original = probe_run
    run = _copy(original, tmp_path)
    marker = tmp_path / "pwned"
    _pickle_payload(run / "checkpoints" / "last.ckpt", marker)
    message = _cli_fails(capsys, ["fit", _resume_config(raw, run, tmp_path), "--resume", "--epochs", "3"],
                         "The training state being resumed (--resume)", "cannot be loaded", "pickled",
                         "torch.load(weights_only=True)")
    assert "weights_only=False" not in message
    assert not marker.exists()


@pytest.mark.parametrize("which", ["best.safetensors", FROZEN_WEIGHTS])
def test_evaluate_refuses_run_weights_whose_sidecar_was_deleted(probe_run, tmp_path, capsys, which) -> None:
    run = _copy(probe_run[1], tmp_path)
    data = write_text_csv(tmp_path / "holdout.csv", 6)
    weights = run / "checkpoints" / which
    sidecar_path(weights).unlink()
    message = _cli_fails(capsys, ["evaluate", run, "--data", data], f"'{weights}' cannot be verified",
                         f"its sidecar '{sidecar_path(weights).name}', which records the file's digest, is missing",
                         "Restore", "rerun the fit")
    if which == FROZEN_WEIGHTS:
        assert "its frozen weights" in message and str(run / "checkpoints" / "best.safetensors") in message


def test_resume_refuses_a_last_checkpoint_whose_sidecar_was_deleted(probe_run, tmp_path, capsys) -> None:
    raw, original = probe_run
    run = _copy(original, tmp_path)
    last = run / "checkpoints" / "last.ckpt"
    sidecar_path(last).unlink()
    _cli_fails(capsys, ["fit", _resume_config(raw, run, tmp_path), "--resume", "--epochs", "3"],
               "The training state being resumed (--resume)", f"'{last}' cannot be verified",
               "its sidecar 'last.json', which records the file's digest, is missing")
    assert json.loads((run / "summary.json").read_text(encoding="utf-8"))["epochs_run"] == 2


def test_pretrain_weights_without_a_sidecar_still_load(probe_run, tmp_path, capsys) -> None:
    """A weights file from elsewhere (here: a run's best weights copied out alone) needs no sidecar."""
    from safetensors.torch import save_file

    raw, run = probe_run
    weights = tmp_path / "encoder.safetensors"
    save_file(read_state_dict(run / "checkpoints" / "best.safetensors"), str(weights))
    assert not sidecar_path(weights).exists()
    cfg = _resume_config(raw, tmp_path / "from_pretrain", tmp_path)
    assert main(["fit", str(cfg), "--pretrain", str(weights), "--epochs", "1"]) == 0, capsys.readouterr().err
    assert (tmp_path / "from_pretrain" / "summary.json").exists()


@pytest.mark.parametrize("content", ["garbage", "truncated_torch"])
def test_garbage_pretrain_file_is_a_clear_error(tmp_path, tiny_hf_dir, capsys, monkeypatch, content) -> None:
    raw = tiny_run_config(tmp_path, tiny_hf_dir)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(raw), encoding="utf-8")
    bad = tmp_path / "x.bin"
    if content == "garbage":
        bad.write_bytes(bytes(range(256)) * 8)
        reason = "the file is not a PyTorch checkpoint"
    else:
        torch.save(_tensors(), bad)
        bad.write_bytes(bad.read_bytes()[:300])
        reason = "the file is truncated or damaged"
    monkeypatch.chdir(tmp_path)  # --pretrain x.bin resolves from the working directory
    message = _cli_fails(capsys, ["fit", cfg, "--pretrain", "x.bin"], "pretrain", f"'{bad}'",
                         "could not be read with torch.load(weights_only=True)", reason,
                         "never unpickles arbitrary objects")
    assert "weights_only=False" not in message and "WeightsUnpickler" not in message
    assert not Path(raw["output_dir"], "summary.json").exists()


# ----- frozen weights shared through the store ---------------------------------------------------------
def test_write_safetensors_gives_the_same_bytes_for_the_same_state(tmp_path) -> None:
    """safetensors writes its metadata map in a random order; write_safetensors sorts the header."""
    from headstart.train.checkpoint import write_safetensors

    for links in ((), [FROZEN_WEIGHTS]):  # two and three metadata keys
        digests = set()
        for i in range(16):
            write_safetensors(_tensors(), tmp_path / f"{i}.safetensors", links)
            digests.add(content_digest(tmp_path / f"{i}.safetensors")["blake2b"])
        assert len(digests) == 1


_WRITE_IN_A_NEW_PROCESS = """
import sys, torch
from headstart.train.checkpoint import write_safetensors
g = torch.Generator().manual_seed(0)
state = {"enc.weight": torch.randn(16, 16, generator=g), "enc.bias": torch.randn(16, generator=g).half(),
         "head.w\u00e9ight \\"q\\"": torch.arange(6).reshape(2, 3)}
write_safetensors(state, sys.argv[1], links=sys.argv[2:])
"""


def test_write_safetensors_gives_the_same_bytes_across_processes(tmp_path) -> None:
    """Hash seeds differ per process (Python's and the Rust hash map's): the bytes must not."""
    import subprocess
    import sys

    from safetensors import safe_open

    files = []
    for seed, links in (("1", []), ("2", []), ("3", [FROZEN_WEIGHTS]), ("4", [FROZEN_WEIGHTS])):
        path = tmp_path / f"{seed}.safetensors"
        subprocess.run([sys.executable, "-c", _WRITE_IN_A_NEW_PROCESS, str(path), *links], check=True,
                       env={**os.environ, "PYTHONHASHSEED": seed}, timeout=120)
        files.append(path.read_bytes())
    assert files[0] == files[1] and files[2] == files[3] and files[0] != files[2]
    with safe_open(str(tmp_path / "3.safetensors"), framework="pt") as fh:
        assert fh.metadata() == {"format": "pt", "producer": "headstart", "headstart_links": '["frozen.safetensors"]'}
        assert torch.equal(fh.get_tensor("head.w\u00e9ight \"q\""), torch.arange(6).reshape(2, 3))


def test_frozen_weights_are_shared_and_survive_move_copy_and_store_deletion(tmp_path, tiny_hf_dir, capsys,
                                                                           monkeypatch) -> None:
    store = tmp_path / "store"
    monkeypatch.setenv("HEADSTART_WEIGHTS_DIR", str(store))  # read when the run starts, not at import
    raw = tiny_run_config(tmp_path, tiny_hf_dir, strategy={"name": "linear_probe"},
                          trainer={"epochs": 1, "limit_train_batches": 1})
    runs = []
    for name in ("a", "b"):
        cfg = tmp_path / f"{name}.yaml"
        cfg.write_text(yaml.safe_dump({**raw, "output_dir": str(tmp_path / name)}), encoding="utf-8")
        assert main(["fit", str(cfg)]) == 0
        runs.append(tmp_path / name)
    capsys.readouterr()
    files = [r / "checkpoints" / FROZEN_WEIGHTS for r in runs]
    inodes = [f.stat().st_ino for f in files]
    links = [f.stat().st_nlink for f in files]
    for run, frozen in zip(runs, files, strict=True):
        assert json.loads((run / "summary.json").read_text(encoding="utf-8"))["frozen_weights"] == "shared"
        record = json.loads((run / "checkpoints" / "frozen.json").read_text(encoding="utf-8"))
        entry = Path(record["store"])
        assert entry.parent == store and entry.name == f"{record['content']['blake2b']}.safetensors"
        assert entry.stat().st_ino == frozen.stat().st_ino  # a hard link into the store, not a copy
        assert record["content"] == content_digest(frozen)

    data = write_text_csv(tmp_path / "holdout.csv", 6)

    def evaluates(run: Path) -> dict:
        assert main(["evaluate", str(run), "--data", str(data)]) == 0, capsys.readouterr().err
        return json.loads(capsys.readouterr().out)

    before = evaluates(runs[0])
    (tmp_path / "elsewhere").mkdir()  # (without it shutil.move would copy, not rename)
    moved = Path(shutil.move(str(runs[0]), str(tmp_path / "elsewhere" / "a")))
    assert (moved / "checkpoints" / FROZEN_WEIGHTS).stat().st_ino == inodes[0]  # a move keeps the link
    assert evaluates(moved) == before

    shutil.rmtree(store)  # the runs keep their names of the data
    assert evaluates(moved) == before and evaluates(runs[1]) == before  # same config and seed: same model
    assert files[1].stat().st_nlink == links[1] - 1

    copy = Path(shutil.copytree(runs[1], tmp_path / "copy"))
    frozen_copy = copy / "checkpoints" / FROZEN_WEIGHTS
    assert frozen_copy.stat().st_ino != files[1].stat().st_ino and frozen_copy.stat().st_nlink == 1
    assert evaluates(copy) == before
    _damage(frozen_copy, "flip")  # the copy is independent: damaging it leaves the original intact
    assert main(["evaluate", str(copy), "--data", str(data)]) == 2
    assert "is damaged" in capsys.readouterr().err
    assert evaluates(runs[1]) == before

    # The two runs share ONE file (two runs + the store entry): the same state gave the same bytes.
    assert inodes[0] == inodes[1] and links == [3, 3]


def test_frozen_weights_fall_back_to_a_copy_when_the_store_is_unusable(tmp_path, tiny_hf_dir, monkeypatch) -> None:
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("a file where the store should be", encoding="utf-8")
    monkeypatch.setenv("HEADSTART_WEIGHTS_DIR", str(blocker / "store"))
    raw = tiny_run_config(tmp_path, tiny_hf_dir, strategy={"name": "linear_probe"},
                          trainer={"epochs": 1, "limit_train_batches": 1})
    result = run_fit(load_config(None, raw=raw), verbose=False)
    frozen = result.run_dir / "checkpoints" / FROZEN_WEIGHTS
    assert result.summary["frozen_weights"] == "copy" and frozen.stat().st_nlink == 1
    verify_file(frozen)
    assert result.summary["last_checkpoint"].startswith("dropped")
    assert not (result.run_dir / "checkpoints" / "last.ckpt").exists()
