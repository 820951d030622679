"""``headstart tune``: strategy-aware hyper-parameter search on Optuna (space, study, trials, report)."""

from __future__ import annotations

from headstart.tune.run import TuneResult, run_tune
from headstart.tune.space import ParamSpec, SearchSpace, load_space

__all__ = ["ParamSpec", "SearchSpace", "TuneResult", "load_space", "run_tune"]
