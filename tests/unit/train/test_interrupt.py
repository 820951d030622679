"""Signal handling of a run: the first SIGINT / SIGTERM asks for a stop at the next batch boundary, a second
Ctrl-C aborts at once, and a stop asked for before training began is not lost."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from headstart.errors import RunInterrupted
from headstart.train.interrupt import GracefulStop, StopRequest, exit_code_for, stop_requested


class _Trainer:
    current_epoch, max_epochs, num_training_batches, sanity_checking, world_size = 1, 3, 10, False, 1


def test_first_signal_stops_at_the_next_batch_with_its_exit_code(capsys) -> None:
    stop = GracefulStop(lambda trainer: "Resume: run the same command with --resume.").install()
    try:
        os.kill(os.getpid(), signal.SIGTERM)  # handled at once, in this (main) thread
        assert stop.signum == signal.SIGTERM
        with pytest.raises(RunInterrupted) as err:
            stop.on_train_batch_end(_Trainer(), None, None, None, 4)
    finally:
        stop.uninstall()
    assert err.value.exit_code == 143
    assert str(err.value) == "SIGTERM during epoch 2/3 (batch 5 of 10). Resume: run the same command with --resume."
    assert "stopping after the current batch" in capsys.readouterr().err


def test_second_ctrl_c_aborts_at_once() -> None:
    stop = GracefulStop().install()
    try:
        os.kill(os.getpid(), signal.SIGINT)
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    finally:
        stop.uninstall()


def test_sigterm_then_sigint_from_the_terminal_still_stops_cleanly() -> None:
    """A compare parent forwards SIGTERM and the terminal sends SIGINT to the whole group: no abort."""
    stop = GracefulStop().install()
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.signum == signal.SIGTERM and stop.exit_code == 143
    finally:
        stop.uninstall()


def test_a_stop_asked_for_before_training_is_kept_until_the_fit_starts() -> None:
    request = StopRequest().install()
    try:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop_requested() == signal.SIGINT and exit_code_for(stop_requested()) == 130
        stop = GracefulStop().install()  # the fit starts after the signal
        try:
            with pytest.raises(RunInterrupted, match="SIGINT during the start of epoch 2/3"):
                stop.on_train_epoch_start(_Trainer(), None)
        finally:
            stop.uninstall()
    finally:
        request.uninstall()
    assert stop_requested() is None  # forgotten once the batch of runs is over


def test_outside_the_main_thread_handlers_are_left_alone() -> None:
    before = signal.getsignal(signal.SIGINT)
    done = []
    thread = threading.Thread(target=lambda: done.append(GracefulStop().install()))
    thread.start()
    thread.join()
    assert done and signal.getsignal(signal.SIGINT) is before
