"""A real `headstart fit` process is killed (SIGKILL) or interrupted (SIGINT) during epoch 2, then resumed:
metrics.csv rows, best weights and test metrics must equal those of a run that was never stopped."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from conftest import tiny_run_config, write_text_csv
from headstart.train.checkpoint import read_state_dict

EPOCHS = 3
VOLATILE = {"epoch_time_s"}  # wall time differs run to run; every other column must match


def _config(tmp: Path, model_dir: Path, name: str) -> Path:
    raw = tiny_run_config(tmp, model_dir, trainer={"epochs": EPOCHS, "seed": 0, "progress_bar": False, "threads": 1})
    # Long enough epochs (300 steps) that a signal sent right after epoch 1's checkpoint lands inside epoch 2.
    raw["data"]["train"] = str(write_text_csv(tmp / "data" / "train_big.csv", 1200, seed=1))
    raw["data"]["batch_size"] = 4
    raw["output_dir"] = name  # relative: resolves from the config's folder
    path = tmp / "cfg.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "headstart.cli.main", *args]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(_cli(*args), capture_output=True, text=True, timeout=600)


def _wait_for_epoch(run: Path, proc: subprocess.Popen, epoch: int) -> None:
    side = run / "checkpoints" / "last.json"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"fit ended before epoch {epoch} was saved: {proc.communicate()}")
        try:
            if json.loads(side.read_text()).get("epoch") == epoch:
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.01)
    raise AssertionError(f"epoch {epoch} was never saved")


def _rows(run: Path) -> list[dict[str, str]]:
    with (run / "metrics.csv").open(newline="") as fh:
        return [{k: v for k, v in row.items() if k not in VOLATILE} for row in csv.DictReader(fh)]


def _assert_same_run(a: Path, b: Path) -> None:
    assert _rows(a) == _rows(b)
    wa, wb = read_state_dict(a / "checkpoints" / "best.safetensors"), read_state_dict(b / "checkpoints" / "best.safetensors")
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key
    sa, sb = (json.loads((r / "summary.json").read_text()) for r in (a, b))
    assert sa["test"] == sb["test"] and sa["val"] == sb["val"] and sa["best_epoch"] == sb["best_epoch"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_hf_dir) -> Path:
    tmp = tmp_path_factory.mktemp("uninterrupted")
    cfg = _config(tmp, tiny_hf_dir, "run")
    done = _run("fit", str(cfg))
    assert done.returncode == 0, done.stderr[-3000:]
    (tmp / "stdout.txt").write_text(done.stdout)
    return tmp / "run"


def test_fit_prints_one_plain_line_per_epoch_and_keeps_the_lr_of_every_step(reference) -> None:
    lines = [line for line in (reference.parent / "stdout.txt").read_text().splitlines() if line.startswith("epoch ")]
    assert [line.split()[1] for line in lines] == ["1/3", "2/3", "3/3"]
    for line in lines:
        assert "train_loss" in line and "val_loss" in line and "val_acc" in line and " lr " in line
        assert line.endswith(" s") and "\r" not in line
    with (reference / "lr_steps.csv").open(newline="") as fh:
        steps = list(csv.DictReader(fh))
    assert [int(r["step"]) for r in steps] == list(range(1, 3 * 300 + 1))  # 1200 rows, batch 4, 3 epochs
    assert {int(r["epoch"]) for r in steps} == {1, 2, 3}
    assert (reference / "plots" / "curves.png").stat().st_size > 0


def test_sigkill_in_epoch_2_then_resume_equals_uninterrupted(tmp_path, tiny_hf_dir, reference) -> None:
    cfg = _config(tmp_path, tiny_hf_dir, "run")
    run = tmp_path / "run"
    proc = subprocess.Popen(_cli("fit", str(cfg)), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _wait_for_epoch(run, proc, 1)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert json.loads((run / "checkpoints" / "last.json").read_text())["epoch"] == 1  # killed inside epoch 2
    assert not (run / "summary.json").exists()

    rerun = _run("fit", str(cfg))  # a plain rerun offers --resume and says how far the run got
    assert rerun.returncode == 2 and "Traceback" not in rerun.stderr
    assert "interrupted run: 1 epoch(s) done" in rerun.stderr and "--resume" in rerun.stderr

    resumed = _run("fit", str(cfg), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((run / "summary.json").read_text())["resumed"] is True
    _assert_same_run(run, reference)


def test_sigint_in_epoch_2_saves_says_how_to_resume_and_resumes_exactly(tmp_path, tiny_hf_dir, reference) -> None:
    cfg = _config(tmp_path, tiny_hf_dir, "run")
    run = tmp_path / "run"
    proc = subprocess.Popen(_cli("fit", str(cfg)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_epoch(run, proc, 1)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err + out
    # the safe point is the next batch boundary of epoch 2, or its start when the signal lands right after
    # epoch 1's checkpoint (a loaded machine)
    assert re.search(r"SIGINT during (the start of )?epoch 2/3", err), err[-3000:]
    assert "--resume" in err and "Epoch 1 is saved" in err
    assert json.loads((run / "checkpoints" / "last.json").read_text())["epoch"] == 1
    assert not (run / ".headstart.lock").read_text()  # the lock was released

    resumed = _run("fit", str(cfg), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _assert_same_run(run, reference)


def test_sigterm_exits_with_its_own_status(tmp_path, tiny_hf_dir) -> None:
    cfg = _config(tmp_path, tiny_hf_dir, "run")
    proc = subprocess.Popen(_cli("fit", str(cfg)), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _wait_for_epoch(tmp_path / "run", proc, 1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-3000:]
    assert "SIGTERM" in err and "--resume" in err and "Traceback" not in err
    assert os.path.exists(tmp_path / "run" / "checkpoints" / "last.ckpt")


# ----- a compare grid killed mid-run ------------------------------------------------------------------------
GRID = ("--strategies", "linear_probe,full", "--seeds", "0")


def _compare(cfg: Path, out: Path, *extra: str) -> list[str]:
    return _cli("compare", str(cfg), *GRID, "--output-dir", str(out), *extra)


def _grid_rows(out: Path) -> dict[str, dict[str, str]]:
    timing = {"wall_time_s", "train_time_s", "peak_rss_mb", "peak_rss_train_mb", "cache_used", "run_dir"}
    with (out / "results.csv").open(newline="") as fh:
        return {r["run"]: {k: v for k, v in r.items() if k not in timing} for r in csv.DictReader(fh)}


@pytest.fixture(scope="module")
def reference_grid(tmp_path_factory, tiny_hf_dir) -> Path:
    tmp = tmp_path_factory.mktemp("grid")
    done = subprocess.run(_compare(_config(tmp, tiny_hf_dir, "unused"), tmp / "cmp", "--workers", "0"),
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return tmp / "cmp"


def _assert_same_grid(out: Path, reference: Path) -> None:
    assert _grid_rows(out) == _grid_rows(reference)
    for name in ("linear_probe_s0", "full_s0"):
        _assert_same_run(out / "runs" / name, reference / "runs" / name)


def _wait_unlocked(lock: Path, timeout: float = 120) -> None:
    """Until no process holds ``lock`` (an orphaned worker stops at its next batch boundary, then exits)."""
    import fcntl

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        fd = os.open(lock, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            time.sleep(0.1)
        finally:
            os.close(fd)
    raise AssertionError(f"{lock} is still held {timeout:.0f} s after the parent died")


@pytest.mark.parametrize(("signum", "workers"), [(signal.SIGKILL, "0"), (signal.SIGINT, "1"), (signal.SIGKILL, "1")],
                         ids=["sigkill-in-process", "sigint-worker-process", "sigkill-parent-of-worker"])
def test_compare_grid_stopped_mid_run_resumes_to_the_uninterrupted_grid(tmp_path, tiny_hf_dir, reference_grid,
                                                                        signum, workers) -> None:
    cfg, out = _config(tmp_path, tiny_hf_dir, "unused"), tmp_path / "cmp"
    proc = subprocess.Popen(_compare(cfg, out, "--workers", workers), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    _wait_for_epoch(out / "runs" / "full_s0", proc, 1)  # the second cell, inside its epoch 2
    probe = out / "runs" / "linear_probe_s0" / "checkpoints" / "best.safetensors"
    stamp = probe.stat().st_mtime_ns
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=300)
    if signum == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL
        # an orphaned worker (Linux: SIGTERM when its parent dies) stops, keeps epoch 1 and frees its run
        _wait_unlocked(out / "runs" / "full_s0" / ".headstart.lock")
    else:  # the parent forwards the stop to its worker, which keeps epoch 1 and exits; then the parent
        assert proc.returncode == 130, err[-3000:]
        assert "Traceback" not in err
        assert "1 of 2 runs are finished, 1 stopped mid-run" in err and "run the same command again" in err
    assert json.loads((out / "runs" / "full_s0" / "checkpoints" / "last.json").read_text())["epoch"] == 1
    assert not (out / "runs" / "full_s0" / "summary.json").exists()

    again = subprocess.run(_compare(cfg, out, "--workers", "0"), capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "1 finished before, 1 to run" in again.stdout
    assert probe.stat().st_mtime_ns == stamp  # the finished cell was not retrained
    assert json.loads((out / "runs" / "full_s0" / "summary.json").read_text())["resumed"] is True
    _assert_same_grid(out, reference_grid)
