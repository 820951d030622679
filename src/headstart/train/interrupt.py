"""SIGINT / SIGTERM during training: stop at a safe point, keep the last finished epoch, say how to resume.

Python's default SIGINT handler raises ``KeyboardInterrupt`` wherever the main thread happens to be, and
Lightning answers it with ``sys.exit(1)``: no message, no checkpoint, an exit status that looks like any
failure. Instead the first signal only sets a flag; the training loop checks it after each batch (train or
validation), and the run stops there with :class:`~headstart.errors.RunInterrupted` (exit status 130 for
SIGINT, 143 for SIGTERM). The safe point to resume from is the end of the last finished epoch:
``checkpoints/last.ckpt`` is written after every epoch, so resuming repeats exactly the interrupted epoch
and gives the same numbers as a run that was never stopped. A second SIGINT aborts at once.
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType
from typing import Any

import pytorch_lightning as pl

from headstart.errors import RunInterrupted

__all__ = ["GracefulStop", "StopRequest", "exit_code_for", "stop_requested"]

_EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}
_REQUESTED: list[int] = []  # a signal that arrived outside training (compare / stack, worker processes)


def exit_code_for(signum: int | None) -> int:
    """The exit status of a run stopped by ``signum``: 130 for SIGINT (and unknown), 143 for SIGTERM."""
    return _EXIT_CODES.get(signum, 130)  # type: ignore[arg-type]


def stop_requested() -> int | None:
    """The signal that asked this process to stop while no training loop was listening, if any."""
    return _REQUESTED[0] if _REQUESTED else None


class _Handlers:
    """SIGINT / SIGTERM routed to ``_handle`` while installed; the previous handlers come back on uninstall.
    Handlers can only be set from the main thread: elsewhere the caller's stay."""

    _previous: dict[int, Any]

    def _set_handlers(self) -> None:
        self._previous = {}
        if threading.current_thread() is threading.main_thread():
            for signum in _EXIT_CODES:
                self._previous[signum] = signal.getsignal(signum)
                signal.signal(signum, self._handle)

    def _restore_handlers(self) -> None:
        for signum, handler in getattr(self, "_previous", {}).items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        raise NotImplementedError


class StopRequest(_Handlers):
    """Signal handlers for a process that runs many fits (compare, stack, their workers): the first SIGINT /
    SIGTERM is remembered, so the fit in progress stops at its next batch boundary (``GracefulStop`` picks
    it up) and no further fit starts. ``on_signal`` runs too (the parent forwards the stop to its workers)."""

    def __init__(self, on_signal: Any = None) -> None:
        self._on_signal = on_signal

    def install(self) -> StopRequest:
        self._set_handlers()
        return self

    def uninstall(self) -> None:
        """Restore the previous handlers and forget the request (the next command starts afresh)."""
        self._restore_handlers()
        _REQUESTED.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if _REQUESTED and _REQUESTED[0] == signal.SIGINT and signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            raise KeyboardInterrupt  # second Ctrl-C: abort at once
        if not _REQUESTED:
            _REQUESTED.append(signum)
            print(f"\n{signal.Signals(signum).name} received: the runs in progress stop after their current "
                  f"batch and keep their last finished epoch; no new run starts (Ctrl-C again aborts at once).",
                  file=sys.stderr, flush=True)
        if self._on_signal is not None:
            self._on_signal(signum)

    @property
    def signum(self) -> int | None:
        return stop_requested()

    @property
    def exit_code(self) -> int:
        return exit_code_for(stop_requested())


class GracefulStop(_Handlers, pl.Callback):
    """Catch SIGINT / SIGTERM while installed; raise ``RunInterrupted`` at the next batch boundary."""

    def __init__(self, describe: Any = None) -> None:
        self.signum: int | None = None
        self._describe = describe  # callable(trainer) -> what is saved and how to resume
        self.position = ""

    # ----- signal handlers -------------------------------------------------------------------
    def install(self) -> GracefulStop:
        if self.signum is None:
            self.signum = stop_requested()  # asked to stop before training began: stop at the first check
        self._set_handlers()
        return self

    def uninstall(self) -> None:
        self._restore_handlers()

    def fit(self, trainer: pl.Trainer, module: pl.LightningModule, train: Any, val: Any, ckpt_path: str | None,
            what: str) -> None:
        """``trainer.fit`` with the handlers installed. Lightning's own SIGTERM handling can raise first: that
        is the same safe point and becomes the same ``RunInterrupted`` (``what``: "training", "pretraining")."""
        self.install()
        try:
            trainer.fit(module, train, val, ckpt_path=ckpt_path)
        except BaseException as exc:
            if self.signum is None or isinstance(exc, RunInterrupted):
                raise
            detail = self._describe(trainer) if self._describe else ""
            raise RunInterrupted(f"{signal.Signals(self.signum).name} during {what}. {detail}".strip(),
                                 exit_code=self.exit_code) from None
        finally:
            self.uninstall()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        # Only a second SIGINT aborts: a SIGTERM forwarded by a compare parent plus the terminal's SIGINT to
        # the whole process group must still stop cleanly.
        if self.signum == signal.SIGINT and signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            raise KeyboardInterrupt  # second Ctrl-C: the user does not want to wait
        if self.signum is not None:
            return
        self.signum = signum
        name = signal.Signals(signum).name
        print(f"\n{name} received: stopping after the current batch (press Ctrl-C again to abort at once).",
              file=sys.stderr, flush=True)

    @property
    def exit_code(self) -> int:
        return exit_code_for(self.signum)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Lightning registers its SIGTERM handler as training starts, in front of ours; in a multi-process run
        # it broadcasts from inside the handler, a collective the other ranks are not in (the run hangs). Take
        # SIGTERM back: the ranks agree on stopping at the next batch boundary instead (``_check``). Lightning's
        # teardown restores the handlers it found (ours), and ``uninstall`` the ones before those.
        if trainer.world_size > 1 and threading.current_thread() is threading.main_thread():
            for signum in _EXIT_CODES:
                signal.signal(signum, self._handle)

    # ----- the safe points --------------------------------------------------------------------
    def _check(self, trainer: pl.Trainer, where: str) -> None:
        if trainer.world_size > 1:
            # All ranks stop at the same batch, or the others would wait for it in the next collective. A rank
            # that got no signal itself stops as if SIGTERM came (a launcher's forwarded stop).
            if not trainer.strategy.reduce_boolean_decision(self.signum is not None, all=False):
                return
            if self.signum is None:
                self.signum = signal.SIGTERM
        if self.signum is None:
            return
        self.position = where
        name = signal.Signals(self.signum).name
        detail = self._describe(trainer) if self._describe else ""
        raise RunInterrupted(f"{name} during {where}. {detail}".strip(), exit_code=self.exit_code)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._check(trainer, f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs} (batch {batch_idx + 1} of "
                             f"{trainer.num_training_batches})")

    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                                batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        if not trainer.sanity_checking:
            self._check(trainer, f"the validation of epoch {trainer.current_epoch + 1}/{trainer.max_epochs}")

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._check(trainer, f"the start of epoch {trainer.current_epoch + 1}/{trainer.max_epochs}")
