"""The worker's side of a tune trial: report the metric after every epoch, stop when the pruner says so.

A trial runs in a worker process (or in the tune process with ``--workers 0``) as an ordinary ``run_fit``;
``TrialLink`` is the plain data that finds its Optuna trial again there (storage URL, study, trial id), and
``attach`` adds the reporting callback and the trial's heartbeat around the run.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytorch_lightning as pl

from headstart.tune.study import PrunerSpec, heartbeat, import_optuna, make_pruner, open_storage

__all__ = ["PRUNED_AT", "ReportToTrial", "TrialLink"]

PRUNED_AT = "pruned_at_epoch"  # user attr of a pruned trial: the last epoch it ran


class ReportToTrial(pl.Callback):
    """After each epoch's validation: ``trial.report(metric, epoch)``; stop training when it should be pruned.

    A stopped run still ends like any run (best epoch so far evaluated, summary written), so a pruned trial
    keeps its metrics; the tune drops its weights afterwards unless asked to keep them."""

    def __init__(self, trial: Any, metric: str) -> None:
        self.trial, self.metric = trial, metric
        self.pruned_at: int | None = None

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        value = trainer.callback_metrics.get(self.metric)
        if value is None or trainer.sanity_checking:
            return
        epoch = trainer.current_epoch + 1
        value = float(value)
        self.trial.report(value if math.isfinite(value) else float("nan"), epoch)
        if epoch < trainer.max_epochs and self.trial.should_prune():
            self.pruned_at = epoch
            self.trial.set_user_attr(PRUNED_AT, epoch)
            trainer.should_stop = True


@dataclass(frozen=True)
class TrialLink:
    """Where a trial lives (picklable: it travels to the worker process that runs the trial)."""

    storage: str
    study_name: str
    trial_id: int
    number: int
    metric: str
    pruner: PrunerSpec

    @contextmanager
    def attach(self) -> Iterator[list[pl.Callback]]:
        """The run's extra callbacks, with the trial's heartbeat beating while the run lasts."""
        optuna = import_optuna()
        storage = open_storage(self.storage)
        study = optuna.load_study(study_name=self.study_name, storage=storage, pruner=make_pruner(self.pruner))
        trial = optuna.Trial(study, self.trial_id)
        with heartbeat(storage, self.trial_id):
            yield [ReportToTrial(trial, self.metric)]
