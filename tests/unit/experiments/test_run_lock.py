"""One writer per run directory: a second `headstart fit` on a directory in use is refused and names the
holder; a lock left by a dead process is taken over; a released lock leaves an empty, unlocked file.

The refusal test pauses the first (real) `fit` process with SIGSTOP once it holds the lock, so the
second attempts meet a held lock whatever the machine's speed; SIGCONT then lets it finish.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import tiny_run_config, write_text_csv
from headstart.cli.main import main
from headstart.errors import RunDirError
from headstart.experiments.rundir import LOCK_FILE, RunLock, prepare_run_dir


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HEADSTART_DEBUG", raising=False)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "headstart.cli.main", *args]


def _config(tmp: Path, model_dir: Path, rows: int = 48, **sections: dict) -> Path:
    raw = tiny_run_config(tmp, model_dir, **sections)
    if rows != 48:
        raw["data"]["train"] = str(write_text_csv(tmp / "data" / "train_big.csv", rows, seed=1))
        raw["data"]["batch_size"] = 4
    path = tmp / "cfg.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def _wait_for_lock(lock: Path, proc: subprocess.Popen) -> dict:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"fit ended before its lock was seen: {proc.communicate()}")
        try:
            text = lock.read_text(encoding="utf-8")
        except OSError:
            text = ""
        if text.strip():
            try:
                return json.loads(text)
            except ValueError:  # caught between the truncate and the write
                pass
        time.sleep(0.005)
    raise AssertionError("the first fit never wrote its lock record")


def _is_locked(path: Path) -> bool:
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing the description drops a lock taken here
    return False


# ----- a second process is refused --------------------------------------------------------------------
def test_second_fit_on_a_directory_in_use_is_refused_and_names_the_holder(tmp_path, tiny_hf_dir, capsys) -> None:
    cfg = _config(tmp_path, tiny_hf_dir, rows=96)
    run = tmp_path / "run"
    first = subprocess.Popen(_cli("fit", str(cfg)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stopped = False
    try:
        record = _wait_for_lock(run / LOCK_FILE, first)
        first.send_signal(signal.SIGSTOP)  # it keeps its flock while paused
        stopped = True
        assert record["pid"] == first.pid and record["host"] == socket.gethostname()
        assert "fit" in record["command"] and str(cfg) in record["command"]

        # A second process; then this (third) process with --overwrite and --resume, which skips their imports.
        second = subprocess.run(_cli("fit", str(cfg)), capture_output=True, text=True, timeout=300)
        results = {(): (second.returncode, second.stdout, second.stderr)}
        for flags in (("--overwrite",), ("--resume",)):
            code = main(["fit", str(cfg), *flags])
            results[flags] = (code, *capsys.readouterr())
        for flags, (code, out, err) in results.items():
            assert code == 2, (flags, err[-3000:])
            assert err.startswith("error:") and "Traceback" not in out + err, (flags, err)
            assert f"'{run}' is in use by PID {first.pid} on host {socket.gethostname()}" in err, (flags, err)
            assert "only one headstart process may write a run directory at a time" in err, (flags, err)
            assert "released automatically when that process ends" in err, (flags, err)
        assert _is_locked(run / LOCK_FILE)  # the refused attempts did not disturb the holder's lock

        first.send_signal(signal.SIGCONT)
        stopped = False
        out, err = first.communicate(timeout=600)
        assert first.returncode == 0, err[-3000:]
    finally:
        if first.poll() is None:  # the test failed: stop the process it started
            if stopped:
                first.send_signal(signal.SIGCONT)
            first.terminate()
            first.wait(timeout=60)
    summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    assert summary["epochs_run"] == 2 and summary["n_train"] == 96
    assert (run / "checkpoints" / "best.safetensors").exists() and (run / "config.yaml").exists()
    assert (run / LOCK_FILE).read_bytes() == b"" and not _is_locked(run / LOCK_FILE)


# ----- stale locks ------------------------------------------------------------------------------------
_STALE = {"pid": 999999, "host": "gone-host", "started": "2001-02-03 04:05:06", "command": "headstart fit old.yaml"}


def test_stale_lock_in_a_new_directory_is_taken_over(tmp_path, tiny_hf_dir, capsys) -> None:
    cfg = _config(tmp_path, tiny_hf_dir, trainer={"epochs": 1, "limit_train_batches": 1})
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK_FILE).write_text(json.dumps(_STALE), encoding="utf-8")
    assert main(["fit", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert (f"Took over the lock of '{run}' left by PID 999999 on host gone-host (started 2001-02-03 04:05:06), "
            f"which is no longer running.") in out
    assert (run / "summary.json").exists()
    assert (run / LOCK_FILE).read_bytes() == b""


def test_stale_lock_on_a_finished_run_is_taken_over_by_overwrite(tmp_path, tiny_hf_dir, capsys) -> None:
    cfg = _config(tmp_path, tiny_hf_dir, trainer={"epochs": 1, "limit_train_batches": 1})
    run = tmp_path / "run"
    assert main(["fit", str(cfg)]) == 0
    assert "Took over" not in capsys.readouterr().out  # an empty lock file is no stale lock
    (run / "summary.json").unlink()  # marks the second run's summary as new
    (run / LOCK_FILE).write_text(json.dumps(_STALE), encoding="utf-8")
    assert main(["fit", str(cfg), "--overwrite"]) == 0
    out = capsys.readouterr().out
    assert f"Took over the lock of '{run}' left by PID 999999 on host gone-host" in out
    assert (run / "summary.json").exists() and (run / LOCK_FILE).read_bytes() == b""


def test_lock_of_a_killed_process_is_taken_over(tmp_path) -> None:
    run = tmp_path / "run"
    code = (f"from headstart.experiments.rundir import RunLock; RunLock({str(run)!r}).acquire(); "
            f"print('locked', flush=True); import time; time.sleep(600)")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunDirError) as err:
            RunLock(run).acquire()
        assert f"in use by PID {holder.pid} on host {socket.gethostname()}" in str(err.value)
    finally:
        holder.kill()
        holder.wait(timeout=60)
    lock = RunLock(run).acquire()  # the kernel released the dead holder's flock; its record is still there
    try:
        assert lock.taken_over is not None and lock.taken_over["pid"] == holder.pid
        assert f"left by PID {holder.pid} on host {socket.gethostname()}" in lock.note()
        assert "no longer running" in lock.note()
        assert json.loads((run / LOCK_FILE).read_text(encoding="utf-8"))["pid"] == os.getpid()
    finally:
        lock.release()


# ----- in-process semantics ---------------------------------------------------------------------------
def test_second_lock_in_the_same_process_is_refused(tmp_path) -> None:
    """flock belongs to the open file description, so two RunLocks of one process exclude each other too."""
    first = RunLock(tmp_path / "run").acquire()
    try:
        with pytest.raises(RunDirError) as err:
            RunLock(tmp_path / "run").acquire()
        text = str(err.value)
        assert f"The run directory '{tmp_path / 'run'}' is in use by PID {os.getpid()} on host" in text
        assert socket.gethostname() in text and "choose another --output-dir" in text
        with pytest.raises(RunDirError, match="is in use by PID"):
            prepare_run_dir(tmp_path / "run", overwrite=True)
        assert first.note() is None  # a fresh lock took nothing over
    finally:
        first.release()


def test_release_leaves_an_empty_unlocked_file(tmp_path) -> None:
    run = tmp_path / "run"
    lock = RunLock(run, what="comparison directory").acquire()
    record = json.loads((run / LOCK_FILE).read_text(encoding="utf-8"))
    assert record["pid"] == os.getpid() and record["host"] == socket.gethostname()
    assert set(record) == {"pid", "host", "started", "command"}
    assert _is_locked(run / LOCK_FILE)
    lock.release()
    lock.release()  # idempotent
    assert (run / LOCK_FILE).exists() and (run / LOCK_FILE).read_bytes() == b""
    assert not _is_locked(run / LOCK_FILE)
    with RunLock(run) as again:  # an empty file is a free lock, not a stale one
        assert again.taken_over is None and again.note() is None
    assert (run / LOCK_FILE).read_bytes() == b""


def test_lock_message_uses_the_directory_kind(tmp_path) -> None:
    with RunLock(tmp_path / "cmp", what="comparison directory"), pytest.raises(RunDirError) as err:
        RunLock(tmp_path / "cmp", what="comparison directory").acquire()
    assert str(err.value).startswith(f"The comparison directory '{tmp_path / 'cmp'}' is in use by PID")


def test_refused_writer_deletes_nothing(tmp_path, tiny_hf_dir, capsys) -> None:
    """--overwrite on a locked run is refused before anything in it is removed."""
    cfg = _config(tmp_path, tiny_hf_dir)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("name: x\n", encoding="utf-8")
    (run / "notes.txt").write_text("keep me", encoding="utf-8")
    with RunLock(run):
        assert main(["fit", str(cfg), "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and f"is in use by PID {os.getpid()}" in err and "Traceback" not in err
    assert (run / "notes.txt").read_text(encoding="utf-8") == "keep me"
    assert (run / "config.yaml").read_text(encoding="utf-8") == "name: x\n"


@pytest.mark.parametrize("command", ["compare", "stack"])
def test_second_compare_or_stack_on_a_directory_in_use_is_refused(tmp_path, tiny_hf_dir, capsys, command) -> None:
    cfg = _config(tmp_path, tiny_hf_dir)
    out = tmp_path / "grid"
    args = (["compare", str(cfg), "--strategies", "full", "--seeds", "0"] if command == "compare"
            else ["stack", str(cfg), str(cfg), "--folds", "2"])
    with RunLock(out, what=f"{command} directory"):
        assert main([*args, "--output-dir", str(out), "--workers", "0"]) == 2
    err = capsys.readouterr().err
    assert f"The {command} directory '{out}' is in use by PID {os.getpid()}" in err and "Traceback" not in err
    assert not (out / "runs").exists()  # refused before any run started
